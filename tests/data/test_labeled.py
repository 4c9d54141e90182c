"""LabeledFolderDataset: names, synonyms and ids resolved against a class list; which images count."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hydra.utils import instantiate
from PIL import Image

from llm2labels.classes import load_class_list
from llm2labels.data.labeled import LabeledFolderDataset
from llm2labels.errors import ConfigError

A150 = {c.name: c.id for c in load_class_list("ade20k_150")}


def make(tmp_path: Path, labels: dict[str, Any], extra: tuple[str, ...] = (), name: str = "labels.json"
         ) -> Path:
    """Images for each key of `labels` (and `extra`, unlisted) under tmp_path/img; the JSON beside them."""
    root = tmp_path / "img"
    for rel in (*labels, *extra):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4), (10, 200, 30)).save(root / rel)
    (root / name).write_text(json.dumps(labels), encoding="utf-8")
    return root


def test_names_synonyms_and_ids_resolve_to_sorted_ids(tmp_path: Path) -> None:
    root = make(tmp_path, {
        "a.jpg": ["person", "motorbike", "sky"],  # primary names and a synonym of "minibike"
        "street/b.png": ["Motorbikes", 0, "walls", 116],  # normalised synonym, ids, duplicates
        "c.jpg": [],
        "d.jpg": ["stair", "Stairs", "steps"],  # exact synonym of "step"; normalised primary / exact synonym
    }, extra=("unlisted.jpg",))
    ds = LabeledFolderDataset(root, "labels.json")
    assert (ds.name, ds.class_list) == ("labeled", "ade20k_150")
    assert [e.rel for e in ds.entries()] == ["a.jpg", "c.jpg", "d.jpg", "street/b.png"]  # not unlisted.jpg
    assert A150["minibike"] == 116 and A150["wall"] == 0 and A150["step"] == 121 and A150["stairs"] == 53
    assert ds.ground_truth() == {
        "a.jpg": sorted([A150["person"], 116, A150["sky"]]),
        "street/b.png": [0, 116],
        "c.jpg": [],
        "d.jpg": [53, 121],
    }
    assert ds.load(ds.entries()[3].path).size == (4, 4)


def test_exact_primary_wins_and_shared_primaries_are_ambiguous(tmp_path: Path) -> None:
    a847 = {c.id: c.name for c in load_class_list("ade20k_847")}
    assert (a847[17], a847[588]) == ("table", "tables")  # two A-847 classes whose names normalise alike
    root = make(tmp_path, {"a.jpg": ["table"], "b.jpg": ["tables"]})
    ds = LabeledFolderDataset(root, root / "labels.json", class_list="ade20k_847")
    assert ds.ground_truth() == {"a.jpg": [17], "b.jpg": [588]}
    (root / "labels.json").write_text(json.dumps({"a.jpg": ["Tables"]}), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"class 'Tables' is ambiguous in ade20k_847 \(ids \[17, 588\]\)"):
        LabeledFolderDataset(root, "labels.json", class_list="ade20k_847")
    bags = sorted(i for i, name in a847.items() if name == "bag")
    assert len(bags) == 3
    (root / "labels.json").write_text(json.dumps({"a.jpg": ["bag"]}), encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"image 'a.jpg': class 'bag' is ambiguous in ade20k_847 \(ids "
                                          rf"\[{', '.join(map(str, bags))}\]\); give the id instead$"):
        LabeledFolderDataset(root, "labels.json", class_list="ade20k_847")


@pytest.mark.parametrize(("labels", "message"), [
    ({"a.jpg": ["persn"]}, "labels.json: image 'a.jpg': unknown class 'persn' in ade20k_150 (close: person"),
    ({"a.jpg": ["sky", 150]}, "labels.json: image 'a.jpg': class id 150 is not in ade20k_150"),
    ({"a.jpg": [True]}, "image 'a.jpg': a class must be a name or an integer id, got True"),
    ({"a.jpg": "sky"}, "image 'a.jpg': expected a list of class names or ids, got 'sky'"),
    ({}, "expected a non-empty JSON object mapping image paths to lists of classes"),
    ({"../a.jpg": []}, "'../a.jpg' must be a POSIX path relative to the image folder"),
])
def test_bad_labels_fail_with_one_line(tmp_path: Path, labels: dict[str, Any], message: str) -> None:
    root = tmp_path / "img"
    root.mkdir()
    Image.new("RGB", (4, 4)).save(root / "a.jpg")
    (root / "labels.json").write_text(json.dumps(labels), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        LabeledFolderDataset(root, "labels.json")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_listed_but_missing_images_are_named_up_to_five(tmp_path: Path) -> None:
    root = make(tmp_path, {"a.jpg": ["sky"]})
    listed = {"a.jpg": ["sky"], **{f"gone{i}.jpg": ["sky"] for i in range(7)}}
    (root / "labels.json").write_text(json.dumps(listed), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        LabeledFolderDataset(root, "labels.json")
    assert str(info.value) == (f"7 image(s) listed in {root / 'labels.json'} are not under {root}: "
                               "gone0.jpg, gone1.jpg, gone2.jpg, gone3.jpg, gone4.jpg and 2 more")


def test_labels_path_and_class_list_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make(tmp_path, {"a.jpg": ["kitten", "dog"], "b.jpg": [1]}, name="gt.json")
    (tmp_path / "pets.txt").write_text("1:dog,puppy\n2:invalid_class_id\n3:cat,kitten\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    for labels in ("gt.json", "img/gt.json", root / "gt.json"):  # inside root, from the cwd, absolute
        ds = LabeledFolderDataset(root, labels, class_list="pets.txt")
        assert ds.ground_truth() == {"a.jpg": [0, 1], "b.jpg": [1]}  # .txt ids are renumbered 0-based
    with pytest.raises(ConfigError, match=r"^labels file not found: nope.json \(give a JSON path, or a file"):
        LabeledFolderDataset(root, "nope.json")


def test_limit_picks_a_seeded_subset_and_ground_truth_follows(tmp_path: Path) -> None:
    root = make(tmp_path, {f"{i}.jpg": [i] for i in range(6)})
    ds = LabeledFolderDataset(root, "labels.json", limit=3, seed=2)
    rels = [e.rel for e in ds.entries()]
    assert len(rels) == 3 and rels == [e.rel for e in LabeledFolderDataset(root, "labels.json", limit=3,
                                                                           seed=2).entries()]
    assert ds.ground_truth() == {rel: [int(rel[:-4])] for rel in rels}


def test_hydra_config_instantiates(make_cfg, tmp_path: Path) -> None:
    root = make(tmp_path, {"a.jpg": ["motorbike"]})
    cfg = make_cfg("dataset=labeled", f"dataset.root={root}", "dataset.labels=labels.json")
    ds = instantiate(cfg.dataset)
    assert isinstance(ds, LabeledFolderDataset) and ds.ground_truth() == {"a.jpg": [116]}
