from llm2labels.grouping.none import NoGrouper
from llm2labels.grouping.vocabulary import build_vocabulary, enforce_coverage
from llm2labels.scoring.rank import RankedLabel


def _ranked(*labels):
    return [RankedLabel(i + 1, lab, 1.0 / (i + 1), 0.5, 0.5, 10 - i, [lab]) for i, lab in enumerate(labels)]


def test_coverage_drops_invented_and_returns_dropped_as_singletons():
    synsets, dropped, invented = enforce_coverage(
        ["motorbike", "motorcycle", "tree", "sky"],
        [("motorcycle", ["motorbike", "motorcycle", "scooter"]), ("plant", ["tree", "motorbike"]), ("x", ["zzz"])])
    assert synsets == [("motorcycle", ["motorbike", "motorcycle"]), ("tree", ["tree"]), ("sky", ["sky"])]
    assert dropped == ["sky"] and invented == ["scooter", "zzz"]


def test_vocabulary_orders_synsets_by_best_member_and_counts():
    ranked = _ranked("sky", "tree", "motorbike", "motorcycle")
    vocab = build_vocabulary(ranked, [("motorcycle", ["motorcycle", "motorbike"]), ("sky", ["sky"])],
                             grouper={"name": "test"})
    assert [s["name"] for s in vocab["synsets"]] == ["sky", "tree", "motorcycle"]
    moto = vocab["synsets"][2]
    assert moto["members"] == ["motorbike", "motorcycle"] and moto["score"] == 1 / 3 and moto["images"] == 8
    assert vocab["dropped"] == ["tree"] and vocab["grouper"] == {"name": "test", "dropped": 1, "invented": 0}


def test_no_grouper_is_one_synset_per_label():
    vocab = NoGrouper()(_ranked("a", "b"))
    assert [(s["name"], s["members"]) for s in vocab["synsets"]] == [("a", ["a"]), ("b", ["b"])]
    assert vocab["dropped"] == [] and vocab["hierarchy"] == []
