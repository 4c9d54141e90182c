"""WordNet groupers: hand-checked synsets, senses in context, the hypernym hierarchy, coverage, data lookup.

Expected values come from WordNet 3.0 itself (checked by hand with its definitions): sofa.n.01 holds "sofa"
and "couch", car.n.01 "car" and "automobile", cellular_telephone.n.01 "cellphone"; bicycle / motorcycle,
car / truck, chair / armchair and sea / lake are different synsets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm2labels.errors import ConfigError
from llm2labels.grouping import wordnet_data
from llm2labels.grouping.hierarchy import parents
from llm2labels.grouping.lexical import HybridGrouper, WordNetGrouper
from llm2labels.grouping.lexicon import Lexicon, variant_key
from llm2labels.scoring.rank import RankedLabel

ROOT = Path(__file__).resolve().parents[2]
HAND = ["sofa", "couch", "bicycle", "motorcycle", "car", "truck", "chair", "armchair", "sea", "lake",
        "cell phone", "cellphone", "cell-phone", "colour", "color", "trees", "tree", "automobile"]
SYNONYMS = [{"sofa", "couch"}, {"car", "automobile"}, {"cell phone", "cellphone", "cell-phone"},
            {"colour", "color"}, {"trees", "tree"}]
SISTERS = [("bicycle", "motorcycle"), ("car", "truck"), ("chair", "armchair"), ("sea", "lake")]


def ranked(labels: list[str]) -> list[RankedLabel]:
    return [RankedLabel(i + 1, lab, 1.0 / (i + 1), 0.5, 0.4, 100 - i, [lab]) for i, lab in enumerate(labels)]


@pytest.fixture(scope="module")
def wordnet() -> WordNetGrouper:
    return WordNetGrouper()


@pytest.fixture(scope="module")
def hybrid() -> HybridGrouper:
    return HybridGrouper()


def synset_of(vocab: dict) -> dict[str, str]:
    return {m: s["name"] for s in vocab["synsets"] for m in s["members"]}


def sense(vocab: dict, label: str) -> str | None:
    return next(s["wordnet"] for s in vocab["synsets"] if label in s["members"])


@pytest.mark.parametrize("name", ["wordnet", "hybrid"])
def test_hand_list_synonyms_and_variants_merge_sisters_stay_apart(name: str, request) -> None:
    vocab = request.getfixturevalue(name)(ranked(HAND))
    of = synset_of(vocab)
    for group in SYNONYMS:
        assert len({of[m] for m in group}) == 1, group
    for a, b in SISTERS:
        assert of[a] != of[b], (a, b)
    assert {frozenset(s["members"]) for s in vocab["synsets"] if len(s["members"]) > 1} == \
        {frozenset(g) for g in SYNONYMS}
    assert of["automobile"] == "car" and of["tree"] == "trees"  # canonical name: the best-ranked member
    assert sense(vocab, "couch") == "sofa.n.01" and sense(vocab, "cellphone") == "cellular_telephone.n.01"


def test_variant_keys() -> None:
    assert len({variant_key(x) for x in ("cell phone", "cellphone", "Cell-Phones", "a cell phone")}) == 1
    assert variant_key("colour") == variant_key("color") and variant_key("centre") == variant_key("center")
    assert variant_key("car") != variant_key("cart") and variant_key("None") == ""


@pytest.mark.parametrize("labels, label, expected", [
    # the device, by its definition "a hand-operated electronic device that controls ... a cursor"
    (["mouse", "keyboard", "monitor"], "mouse", "mouse.n.04"),
    (["mouse", "cat", "dog", "horse", "tree"], "mouse", "mouse.n.01"),  # the rodent
    (["cat", "guy", "dog", "man", "woman", "horse"], "cat", "cat.n.01"),  # "guy" names guy.n.01 itself
    (["dog", "man", "woman", "car", "tree"], "dog", "dog.n.01"),  # not dog.n.03, "informal term for a man"
    (["plant", "tree", "palm tree", "oak", "grass", "flower"], "plant", "plant.n.02"),  # flora, not a factory
    (["plant", "factory", "warehouse", "building"], "plant", "plant.n.01"),
    (["tree", "oak", "palm tree"], "oak", "oak.n.02"),  # the tree, not its wood
    (["car", "railway car", "road"], "car", "car.n.01"),  # "railway car" is a kind of car: no evidence
])
def test_sense_is_chosen_from_the_other_labels(wordnet: WordNetGrouper, labels, label, expected) -> None:
    assert sense(wordnet(ranked(labels)), label) == expected


def test_step_beside_stair_keeps_another_reading(wordnet: WordNetGrouper) -> None:
    vocab = wordnet(ranked(["step", "stair", "floor", "wall", "door", "window"]))
    assert sense(vocab, "stair") == "step.n.04" and sense(vocab, "step") != "step.n.04"


def node(name: str, *children: dict, wordnet: str | None = None, implicit: bool = False) -> dict:
    out = {"name": name, "wordnet": wordnet, "children": list(children)}
    return {**out, "implicit": True} if implicit else out


def test_hierarchy_hand_checked(wordnet: WordNetGrouper) -> None:
    # WordNet 3.0: palm.n.03 and oak.n.02 are trees; tree.n.01 < woody_plant < vascular_plant < plant.n.02;
    # flower.n.01 < angiosperm < spermatophyte < vascular_plant. "tree" and "vascular plant" are not labels
    # here but each covers two branches of the vocabulary, so they become (implicit) nodes.
    vocab = wordnet(ranked(["palm tree", "oak", "plant", "flower"]))
    assert vocab["hierarchy"] == [
        node("plant",
             node("vascular plant",
                  node("tree", node("palm tree", wordnet="palm.n.03"), node("oak", wordnet="oak.n.02"),
                       wordnet="tree.n.01", implicit=True),
                  node("flower", wordnet="flower.n.01"),
                  wordnet="vascular_plant.n.01", implicit=True),
             wordnet="plant.n.02")]
    with_tree = wordnet(ranked(["tree", "palm tree", "oak", "plant"]))  # "tree" is a label: no implicit node
    assert parents(with_tree["hierarchy"]) == {"palm tree": "tree", "oak": "tree", "tree": "plant"}


def test_unknown_compound_sits_below_its_head(wordnet: WordNetGrouper, hybrid: HybridGrouper) -> None:
    labels = ["bench", "wooden bench", "chair"]
    assert parents(wordnet(ranked(labels))["hierarchy"])["wooden bench"] == "bench"
    of = synset_of(hybrid(ranked(labels)))  # hybrid: a kind of bench may join bench, never chair
    assert of["chair"] != of["bench"] and of["wooden bench"] in (of["bench"], "wooden bench")


pool = st.sampled_from(HAND + ["mouse", "keyboard", "wooden bench", "qzxv", "None", "1", "", "palm tree",
                               "Trees", "a car", "tile floor", "floor tile", "sky blue", "xyz a", "the as",
                               "red the car", "s", "'s", "a-b", "cell - phone", "___"])
words = st.text(st.sampled_from("ab -'_.sxyz"), max_size=8)  # odd spacing, determiners, one-letter nouns
label = pool | words | st.text(max_size=6)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(labels=st.lists(label, unique=True, max_size=14))
def test_every_label_in_exactly_one_synset(wordnet: WordNetGrouper, hybrid: HybridGrouper, labels) -> None:
    for grouper in (wordnet, hybrid):
        vocab = grouper(ranked(labels))
        members = Counter(m for s in vocab["synsets"] for m in s["members"])
        assert members == Counter(labels)
        assert all(s["name"] in s["members"] for s in vocab["synsets"])


def test_output_does_not_depend_on_the_hash_seed(tmp_path: Path) -> None:
    """NLTK keeps hypernym pointers in sets: their order must not leak into the result."""
    path = tmp_path / "labels.txt"
    path.write_text("\n".join(HAND + ["person", "man", "woman", "dog", "bus", "wall", "floor", "plant"]))
    outs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "HF_HUB_OFFLINE": "1"}
        done = subprocess.run([sys.executable, "-m", "llm2labels.group", str(path), "--grouper", "wordnet"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=True)
        outs.append(json.loads(done.stdout))
    assert outs[0] == outs[1]


@pytest.fixture
def fresh_wordnet(monkeypatch: pytest.MonkeyPatch):
    wordnet_data.load_wordnet.cache_clear()
    monkeypatch.delenv("WORDNET_DIR", raising=False)
    yield
    wordnet_data.load_wordnet.cache_clear()


def test_wordnet_dir_is_read_first(fresh_wordnet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with zipfile.ZipFile(wordnet_data._packaged_zip()) as archive:
        archive.extractall(tmp_path)  # -> tmp_path/wordnet/data.noun ...
    monkeypatch.setenv("WORDNET_DIR", str(tmp_path / "wordnet"))
    reader = wordnet_data.load_wordnet()
    assert reader.source == f"WORDNET_DIR={tmp_path / 'wordnet'}"
    assert Lexicon(reader).senses("couch")[0].synset == "sofa.n.01"


def test_packaged_copy_when_nothing_else(fresh_wordnet, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wordnet_data, "_nltk_path_pointer", lambda: None)
    assert wordnet_data.load_wordnet().source.startswith("packaged")


def test_missing_data_is_one_line(fresh_wordnet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wordnet_data, "_nltk_path_pointer", lambda: None)
    monkeypatch.setattr(wordnet_data, "_packaged_zip", lambda: tmp_path / "gone.zip")
    with pytest.raises(ConfigError) as caught:
        wordnet_data.load_wordnet()
    message = str(caught.value)
    assert "\n" not in message and message.startswith("WordNet not found")
    assert "python -m nltk.downloader wordnet" in message and "WORDNET_DIR" in message
    monkeypatch.setenv("WORDNET_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match=r"^WORDNET_DIR=.* holds no WordNet data.noun: reinstall"):
        wordnet_data.load_wordnet()


def test_missing_data_in_the_cli_is_one_line_exit_2(tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("sofa\ncouch\n")
    env = {**os.environ, "WORDNET_DIR": str(tmp_path / "empty"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "llm2labels.group", str(labels), "--grouper", "wordnet"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(f"error: WORDNET_DIR={tmp_path / 'empty'}")


def test_bad_settings_fail_at_construction() -> None:
    with pytest.raises(ConfigError, match="^grouper=hybrid: known_threshold must be"):
        HybridGrouper(known_threshold=2)
    with pytest.raises(ConfigError, match="^grouper=hybrid: device must be"):
        HybridGrouper(device="")
    with pytest.raises(ConfigError, match="^grouper=wordnet: min_depth must be"):
        WordNetGrouper(min_depth=-1)
