import pytest

from llm2labels.errors import ConfigError
from llm2labels.grid import Grid, pixel_box, sample_seed


def test_paper_modes_generation_counts():
    assert sum(c.samples for c in Grid("base", whole=8, tile=0).crops()) == 8
    assert sum(c.samples for c in Grid("sg", whole=0, rows=2, cols=2, tile=2).crops()) == 8
    assert sum(c.samples for c in Grid("sgc", whole=1, rows=2, cols=2, tile=1).crops()) == 5


def test_tiles_cover_every_pixel_once_on_odd_sizes():
    crops = Grid("sg", whole=0, rows=2, cols=2, tile=2).crops()
    w, h = 101, 77
    covered = [[0] * w for _ in range(h)]
    for c in crops:
        left, top, right, bottom = pixel_box(c.box, w, h)
        for y in range(top, bottom):
            for x in range(left, right):
                covered[y][x] += 1
    assert all(v == 1 for row in covered for v in row)
    assert [pixel_box(c.box, w, h) for c in crops] == [(0, 0, 50, 38), (50, 0, 101, 38), (0, 38, 50, 77), (50, 38, 101, 77)]


def test_crops_are_named_by_geometry_so_modes_share_samples():
    sg = {c.key for c in Grid("sg", whole=0, tile=2).crops()}
    sgc = {c.key for c in Grid("sgc", whole=1, tile=1).crops()}
    assert sgc - sg == {"full"}
    assert "full" in {c.key for c in Grid("base").crops()}


@pytest.mark.parametrize("kwargs", [{"whole": -1}, {"rows": 0, "tile": 1}, {"whole": 0, "tile": 0}, {"cols": 2.5}])
def test_invalid_grid_fails_with_one_line(kwargs):
    with pytest.raises(ConfigError) as err:
        Grid("x", **kwargs)
    assert "\n" not in str(err.value) and "grid" in str(err.value)


def test_sample_seed_is_a_pure_function_of_its_inputs():
    a = sample_seed(0, "img", "full", 3)
    assert a == sample_seed(0, "img", "full", 3)
    others = {sample_seed(1, "img", "full", 3), sample_seed(0, "img2", "full", 3),
              sample_seed(0, "img", "2x2:0,0", 3), sample_seed(0, "img", "full", 4)}
    assert a not in others and len(others) == 4
    assert 0 <= a < 2**63
