"""The grouping benchmark's scores, checked by hand and against scikit-learn."""

from __future__ import annotations

import json

import pytest
from sklearn.metrics import adjusted_rand_score

from experiments import grouping_benchmark as gb
from llm2labels.grouping.none import NoGrouper


def test_pair_counts_and_classes_merged_by_hand() -> None:
    # predicted {a,b,c} {d}; true {a,b} {c,d}: pairs ab, ac, bc predicted, ab and cd true -> tp 1
    assigned, truth = [0, 0, 0, 1], [0, 0, 1, 1]
    assert gb.pair_counts(assigned, truth) == (1, 3, 2)
    assert gb.prf(1, 3, 2) == pytest.approx((1 / 3, 1 / 2, 0.4))
    assert gb.classes_merged(assigned, truth) == 2  # both classes share the synset {a, b, c}
    assert gb.classes_merged([0, 1, 2, 3], truth) == 0


class TableGrouper:
    """Groups by a fixed table, whatever the order it is given the labels in."""

    def __init__(self, groups: list[list[str]]) -> None:
        self.groups = groups

    def __call__(self, ranked):
        from llm2labels.grouping.vocabulary import build_vocabulary

        return build_vocabulary(ranked, [(g[0], g) for g in self.groups])


def test_score_matches_scikit_learn_whatever_the_shuffle() -> None:
    strings, truth = ["car", "auto", "truck", "sky", "heaven"], [0, 0, 1, 2, 2]
    grouper = TableGrouper([["car", "auto", "truck"], ["sky"], ["heaven"]])
    for seed in (0, 1):
        row = gb.score(grouper, strings, truth, seed)
        assert row["ARI"] == pytest.approx(adjusted_rand_score(truth, [0, 0, 0, 1, 2]))
        assert (row["P"], row["R"], row["classes_merged"], row["synsets"]) == (pytest.approx(1 / 3), 0.5, 2, 3)
    assert gb.score(NoGrouper(), strings, truth, 0)["ARI"] == pytest.approx(0.0)


def test_ground_truth_drops_strings_of_several_classes() -> None:
    strings, truth = gb.ground_truth("ade20k_150")
    assert len(strings) == 331 and len(set(truth)) == 148
    assert "stair" not in strings  # in both "stairs, steps" and "step, stair"
    names, ids = gb.primary_names("ade20k_150")
    assert len(names) == 150 and names[:3] == ["wall", "building", "sky"] and ids[:3] == [0, 1, 2]


def test_cli_prints_a_table_and_json(capsys) -> None:
    assert gb.main(["--grouper", "none", "--lists", "cityscapes"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| list | strings | classes | synsets | ARI |")
    result = json.loads(out[-1])
    assert [r["list"] for r in result["rows"]] == ["cityscapes", gb.NAMES_ROW]
    assert result["rows"][0]["strings"] == 45 and result["rows"][0]["synsets"] == 45
