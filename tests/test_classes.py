"""Class lists: packaged names, the two file formats, and the samples' ground truth against ADE-150."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest

from llm2labels.classes import ClassInfo, available_class_lists, load_class_list
from llm2labels.data.samples import samples_root
from llm2labels.errors import ConfigError

# class counts from assets/classes/SOURCES.md
COUNTS = {
    "ade20k_150": 150, "ade20k_847": 847, "cityscapes": 19, "coco_panoptic": 133, "coco_stuff": 171,
    "lvis_1203": 1203, "mapillary_vistas": 65, "pascal_ctx_459": 459, "pascal_ctx_59": 59, "pascal_voc_21": 21,
}


def packaged_file(name: str) -> str:
    return str(resources.files("llm2labels") / "assets" / "classes" / name)


def test_available_lists() -> None:
    assert available_class_lists() == sorted(COUNTS)


def test_ade20k_150() -> None:
    classes = load_class_list("ade20k_150")
    assert len(classes) == 150 and [c.id for c in classes] == list(range(150))
    assert classes[0] == ClassInfo(0, "wall", ("wall", "walls", "brick wall", "stone wall", "interior wall"))
    assert classes[149].name == "flag" and classes[12].name == "person"
    assert len(load_class_list("ade20k_847")) == 847


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_txt_and_json_agree(name: str) -> None:
    from_json = load_class_list(name)
    assert load_class_list(packaged_file(f"{name}.txt")) == from_json
    assert load_class_list(packaged_file(f"{name}.json")) == from_json
    assert len(from_json) == COUNTS[name] and [c.id for c in from_json] == list(range(COUNTS[name]))
    assert all(c.synonyms[0] == c.name and len(set(c.synonyms)) == len(c.synonyms) for c in from_json)


def test_user_txt_skips_invalid_ids_and_renumbers(tmp_path: Path) -> None:
    path = tmp_path / "mine.txt"
    path.write_text("0:invalid_class_id\n5:cat,cats\n\n6:invalid_class_id\n9: dog , dogs,dog,\n")
    assert load_class_list(str(path)) == [
        ClassInfo(0, "cat", ("cat", "cats")),
        ClassInfo(1, "dog", ("dog", "dogs")),
    ]
    path.write_text("1:cat\nno colon here\n")
    with pytest.raises(ConfigError, match="line 2"):
        load_class_list(path)


def test_user_json(tmp_path: Path) -> None:
    path = tmp_path / "mine.json"
    path.write_text(json.dumps([{"id": 0, "name": "cat", "synonyms": ["cat", "kitty"]}, {"id": 1, "name": "dog"}]))
    assert load_class_list(path) == [ClassInfo(0, "cat", ("cat", "kitty")), ClassInfo(1, "dog", ("dog",))]
    path.write_text(json.dumps([{"id": 0, "synonyms": ["cat"]}]))
    with pytest.raises(ConfigError, match="item 0"):
        load_class_list(path)


def test_unknown_name_lists_the_available_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ade20k_150.*pascal_voc_21"):
        load_class_list("ade20k_151")
    with pytest.raises(ConfigError, match="unknown class list"):
        load_class_list(str(tmp_path / "missing.json"))


def test_samples_ground_truth_uses_ade150_primary_names() -> None:
    primary = {c.name for c in load_class_list("ade20k_150")}
    mapping = json.loads((samples_root() / "ground_truth.json").read_text(encoding="utf-8"))
    assert mapping and all(labels for labels in mapping.values())
    for labels in mapping.values():
        assert set(labels) <= primary and len(set(labels)) == len(labels)
