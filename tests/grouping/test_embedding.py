import importlib.util
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from llm2labels.errors import ConfigError
from llm2labels.grouping.embedding import EmbeddingGrouper, cluster_embeddings
from llm2labels.grouping.hierarchy import parents, roots, suffix_hierarchy, suffix_parent
from llm2labels.scoring.rank import RankedLabel

# Labels a VLM gives for street and park photos, in rank order.
SCENE = ["sky", "tree", "building", "road", "car", "person", "motorbike", "motorcycle", "palm tree", "grass",
         "bench", "wooden bench", "house", "window", "cloud", "street", "skyscraper", "bus", "truck", "bicycle",
         "traffic light", "light", "fence", "dog", "man", "woman", "lamp post", "wall", "door"]


def _ranked(labels):
    return [RankedLabel(i + 1, lab, 1.0 / (i + 1), 0.5, 0.4, 100 - i, [lab]) for i, lab in enumerate(labels)]


def _node(name, *children):
    return {"name": name, "children": list(children)}


@pytest.fixture(scope="module")
def grouper():
    return EmbeddingGrouper()  # the model loads on first use, once for the module


@pytest.fixture(scope="module")
def scene_vocab(grouper):
    return grouper(_ranked(SCENE))


def _synset_of(vocab):
    return {m: s["name"] for s in vocab["synsets"] for m in s["members"]}


def test_synonyms_merge_and_distinct_classes_stay_apart(scene_vocab):
    of = _synset_of(scene_vocab)
    assert of["motorbike"] == of["motorcycle"] == "motorbike"  # canonical name = the best-ranked member
    assert len({of["tree"], of["sky"], of["building"]}) == 3
    for a, b in [("car", "truck"), ("bicycle", "motorcycle"), ("building", "skyscraper"), ("tree", "palm tree")]:
        assert of[a] != of[b]  # distinct classes in ade20k_150 / coco_panoptic
    assert {s["name"]: s["members"] for s in scene_vocab["synsets"] if len(s["members"]) > 1} == {
        "road": ["road", "street"], "motorbike": ["motorbike", "motorcycle"], "bench": ["bench", "wooden bench"]}


def test_canonical_name_follows_rank(grouper):
    vocab = grouper(_ranked(["sky", "motorcycle", "motorbike"]))
    moto = vocab["synsets"][1]
    assert (moto["name"], moto["members"], moto["score"], moto["images"]) == (
        "motorcycle", ["motorcycle", "motorbike"], 0.5, 99)


def test_every_label_in_exactly_one_synset_and_grouper_info(scene_vocab):
    members = Counter(m for s in scene_vocab["synsets"] for m in s["members"])
    assert members == Counter(SCENE)
    assert scene_vocab["dropped"] == [] and scene_vocab["invented"] == []
    assert scene_vocab["grouper"] == {"name": "embedding", "model": "all-MiniLM-L6-v2", "threshold": 0.7,
                                      "linkage": "average", "max_labels": 5000, "synsets": len(SCENE) - 3,
                                      "dropped": 0, "invented": 0}


def test_hierarchy_over_canonical_names(grouper, scene_vocab):
    # at the default threshold "wooden bench" (cosine 0.78) is a synonym of "bench"; "palm tree" (0.67) is not
    assert scene_vocab["hierarchy"] == [_node("tree", _node("palm tree")), _node("light", _node("traffic light"))]
    strict = EmbeddingGrouper(threshold=0.8)
    strict._encoder = grouper.encoder()  # share the loaded model
    vocab = strict(_ranked(SCENE))
    assert vocab["hierarchy"] == [_node("tree", _node("palm tree")), _node("bench", _node("wooden bench")),
                                  _node("light", _node("traffic light"))]


def test_zero_and_one_label(grouper):
    assert grouper([])["synsets"] == [] and grouper([])["grouper"]["synsets"] == 0
    vocab = grouper(_ranked(["sky"]))
    assert [(s["name"], s["members"]) for s in vocab["synsets"]] == [("sky", ["sky"])]
    assert vocab["hierarchy"] == []


def test_labels_beyond_max_labels_stay_singletons(grouper):
    capped = EmbeddingGrouper(max_labels=3)
    capped._encoder = grouper.encoder()
    vocab = capped(_ranked(["sky", "tree", "motorbike", "motorcycle"]))
    assert [s["members"] for s in vocab["synsets"]] == [["sky"], ["tree"], ["motorbike"], ["motorcycle"]]


def test_cluster_embeddings_by_hand():
    angles = np.radians([0.0, 10.0, 90.0, 95.0])  # cos 10 deg = 0.985, cos 80 deg = 0.17
    vectors = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    assert cluster_embeddings(vectors, 0.9) == [[0, 1], [2, 3]]
    assert cluster_embeddings(vectors, 0.999) == [[0], [1], [2], [3]]
    assert cluster_embeddings(vectors, 0.0) == [[0, 1, 2, 3]]  # average cosine between the pairs ~0.09 > 0
    assert cluster_embeddings(vectors[:1], 0.5) == [[0]]


def test_cheap_to_build_and_picklable(grouper):
    fresh = EmbeddingGrouper()
    assert fresh._encoder is None
    grouper.encoder()
    copy = pickle.loads(pickle.dumps(grouper))
    assert copy._encoder is None and copy.threshold == 0.7 and len(pickle.dumps(grouper)) < 1000


@pytest.mark.parametrize("kwargs", [{"threshold": 1.5}, {"threshold": True}, {"linkage": "ward"},
                                    {"batch_size": 0}, {"max_labels": 0}, {"model": ""}, {"device": ""}])
def test_bad_settings_are_one_line_config_errors(kwargs):
    with pytest.raises(ConfigError) as err:
        EmbeddingGrouper(**kwargs)
    assert str(err.value).startswith("grouper=embedding: ") and "\n" not in str(err.value)


def test_suffix_rule():
    names = ["tree", "sky", "palm tree", "skyscraper", "bench", "wooden bench", "old wooden bench", "bus",
             "red double-decker bus", "double-decker bus", "t-shirt", "shirt"]
    assert suffix_parent("old wooden bench", frozenset(names)) == "wooden bench"  # the longest parent
    assert suffix_parent("skyscraper", frozenset(names)) is None and suffix_parent("t-shirt", set(names)) is None
    assert suffix_hierarchy(names) == [
        _node("tree", _node("palm tree")),
        _node("bench", _node("wooden bench", _node("old wooden bench"))),
        _node("bus", _node("double-decker bus", _node("red double-decker bus"))),
    ]


def test_hierarchy_lookups_take_the_first_occurrence():
    forest = [_node("bus", _node("double-decker bus", _node("red double-decker bus"))),
              _node("tree", _node("palm tree"), _node("bus")), {"children": []}]
    assert parents(forest) == {"double-decker bus": "bus", "red double-decker bus": "double-decker bus",
                               "palm tree": "tree"}
    assert roots(forest) == {"bus": "bus", "double-decker bus": "bus", "red double-decker bus": "bus",
                             "tree": "tree", "palm tree": "tree"}


def test_config_default_matches_the_class_default():
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(Path(__file__).resolve().parents[2] / "conf" / "grouper" / "embedding.yaml")
    assert cfg.threshold == EmbeddingGrouper().threshold == 0.7 and cfg.linkage == "average"


def test_sweep_pair_counts_by_hand():
    path = Path(__file__).resolve().parents[2] / "experiments" / "embedding_threshold_sweep.py"
    spec = importlib.util.spec_from_file_location("embedding_threshold_sweep", path)
    sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep)
    # clusters {0,1} {2,3}, classes {0,1,2} {3}: 1 shared pair, 2 predicted, 3 true
    assert sweep.pair_counts([[0, 1], [2, 3]], [0, 0, 0, 1]) == (1, 2, 3)
    strings, truth = sweep.ground_truth("pascal_ctx_59")
    assert len(strings) == 99 and len(set(truth)) == 59 and "aeroplane" in strings
