"""Dataset ranking: hand-computed scores, tie-breaking, n, merge, surface forms, table output."""

import pytest

from llm2labels.scoring.rank import DatasetRanker, RankedLabel, occ, occ_prob, prob, to_frame

# Scores are multiples of 1/4 so every sum and mean below is exact in floating point.
IMAGES = [
    {"cat": 0.75, "dog": 0.5, "sky": 0.25, "ant": 1.0},
    {"cat": 0.25, "sky": 1.0},
    {"dog": 0.5},
]
# n = 3.  cat: 2 images, prob (0.75+0.25)/2 = 0.5;  dog: 2, (0.5+0.5)/2 = 0.5;
#         sky: 2, (0.25+1)/2 = 0.625;               ant: 1, 1.0


def ranker(images: list[dict[str, float]]) -> DatasetRanker:
    r = DatasetRanker()
    for kept in images:
        r.add_image(kept)
    return r


def summary(ranked: list[RankedLabel]) -> list[tuple[int, str, float, int]]:
    return [(r.rank, r.label, r.score, r.images) for r in ranked]


def test_occ_prob_hand_example() -> None:
    # sky 2/3*0.625 = 5/12; cat, dog 2/3*0.5 = 1/3 (2 images); ant 1/3*1.0 = 1/3 (1 image):
    # the three-way tie goes to the image count (cat, dog before ant, although "ant" sorts first), then text
    out = ranker(IMAGES).rank()
    assert [r.label for r in out] == ["sky", "cat", "dog", "ant"]
    assert [r.rank for r in out] == [1, 2, 3, 4]
    assert [r.score for r in out] == pytest.approx([5 / 12, 1 / 3, 1 / 3, 1 / 3])
    sky = out[0]
    assert (sky.occ, sky.prob, sky.images) == (pytest.approx(2 / 3), 0.625, 2)
    assert out[3].occ == pytest.approx(1 / 3) and out[3].prob == 1.0


def test_occ_scorer_hand_example() -> None:
    # cat, dog, sky all 2/3 with 2 images -> alphabetical; ant 1/3
    out = ranker(IMAGES).rank(occ)
    assert summary(out) == [
        (1, "cat", pytest.approx(2 / 3), 2),
        (2, "dog", pytest.approx(2 / 3), 2),
        (3, "sky", pytest.approx(2 / 3), 2),
        (4, "ant", pytest.approx(1 / 3), 1),
    ]


def test_prob_scorer_hand_example() -> None:
    # ant 1.0, sky 0.625, then cat and dog tied at 0.5 with 2 images each -> alphabetical
    out = ranker(IMAGES).rank(prob)
    assert summary(out) == [(1, "ant", 1.0, 1), (2, "sky", 0.625, 2), (3, "cat", 0.5, 2), (4, "dog", 0.5, 2)]


def test_scorers_are_plain_functions() -> None:
    assert occ_prob(0.5, 0.25) == 0.125 and occ(0.5, 0.25) == 0.5 and prob(0.5, 0.25) == 0.25


def test_empty_images_count_in_n() -> None:
    r = ranker(IMAGES + [{}])  # a fourth image where nothing survived
    assert r.n_images == 4
    sky = r.rank()[0]
    assert (sky.label, sky.occ, sky.score) == ("sky", 0.5, 0.3125)  # 2/4, 2/4*0.625


def test_empty_ranker() -> None:
    assert DatasetRanker().rank() == []
    r = ranker([{}, {}])
    assert r.rank() == [] and r.n_images == 2


def test_nan_score_is_rejected_without_counting_the_image() -> None:
    r = DatasetRanker()
    with pytest.raises(ValueError, match="NaN"):
        r.add_image({"a": float("nan")})
    assert r.n_images == 0 and r.rank() == []


def test_surface_forms_most_frequent_first_ties_alphabetical() -> None:
    r = DatasetRanker()
    r.add_image({"cat": 0.5}, surface={"cat": ["cats", "Cat", "cats"], "dog": ["dogs"]})  # dog not kept
    r.add_image({"cat": 0.5, "dog": 0.5}, surface={"cat": ["Cat", "CAT"]})
    out = {x.label: x.surface_forms for x in r.rank()}
    # counts: cats 2, Cat 2, CAT 1; "Cat" < "cats" (uppercase sorts first); dog's form came from an image
    # where it was filtered out, so it is not kept
    assert out == {"cat": ["Cat", "cats", "CAT"], "dog": []}


def test_to_frame() -> None:
    r = DatasetRanker()
    r.add_image({"cat": 0.5, "dog": 0.25}, surface={"cat": ["cats", "cat", "cats"]})
    r.add_image({})
    df = to_frame(r.rank())
    assert list(df.columns) == ["rank", "label", "score", "occ", "prob", "images", "surface_forms"]
    assert df.to_dict("records") == [
        {
            "rank": 1,
            "label": "cat",
            "score": 0.25,
            "occ": 0.5,
            "prob": 0.5,
            "images": 1,
            "surface_forms": "cats|cat",
        },
        {
            "rank": 2,
            "label": "dog",
            "score": 0.125,
            "occ": 0.5,
            "prob": 0.25,
            "images": 1,
            "surface_forms": "",
        },
    ]
    assert list(to_frame([]).columns) == list(df.columns)
