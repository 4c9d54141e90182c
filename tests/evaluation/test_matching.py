"""Label -> class matching, on a toy list and on the real ADE20K lists."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from llm2labels.classes import ClassInfo
from llm2labels.errors import ConfigError
from llm2labels.evaluation.matching import ClassMatcher

TOY = [
    ClassInfo(0, "wall", ("wall",)),
    ClassInfo(1, "person", ("person", "man", "woman")),
    ClassInfo(2, "wardrobe", ("wardrobe", "closet")),
    ClassInfo(3, "closet", ("closet",)),
]


def test_normalises_both_sides() -> None:
    m = ClassMatcher(TOY)
    assert m.match("Walls.") == (0,)
    assert m.match('"Women"') == (1,)
    assert m.match("1. man") == (1,)
    assert m.match("sky") == ()
    assert m.match("") == ()
    assert m.match("...") == ()


def test_string_of_several_classes_matches_each_sorted() -> None:
    m = ClassMatcher(TOY)
    assert m.match("closets") == (2, 3)


def test_synset_entry_is_union_of_members() -> None:
    m = ClassMatcher(TOY)
    assert m.match_entry(["man", "sky", "closet"]) == (1, 2, 3)
    assert m.match_entry(["sky", "cloud"]) == ()
    assert m.match_entry([]) == ()
    assert m.match_entry("wall") == (0,)


def test_real_ade847_multi_class_strings() -> None:
    m = ClassMatcher.from_name("ade20k_847")
    names = {c.id: c.synonyms for c in m.classes}
    # "closet": "wardrobe, closet, press, ..." (46) and "closet" (172)
    assert m.match("closet") == (46, 172)
    assert names[46][0] == "wardrobe" and names[172] == ("closet",)
    # "chest": "chest of drawers, chest, bureau, dresser" (68) and "chest" (211)
    assert m.match("Chests") == (68, 211)
    assert names[68][0] == "chest of drawers" and names[211] == ("chest",)
    # "bag" is a synonym of three classes (bag / traveling bag / handbag)
    assert m.match("bags") == (114, 191, 252)
    assert {names[i][1] for i in (191, 252)} == {"traveling bag", "handbag"}
    assert m.match("wardrobe") == (46,)


def test_real_ade150_stairs_and_steps() -> None:
    m = ClassMatcher.from_name("ade20k_150")
    assert len(m) == 150
    assert m.match("stairs") == m.match("step") == (53, 121)
    assert m.match("double doors") == (14,)


def test_from_name_caches_packaged_lists() -> None:
    assert ClassMatcher.from_name("ade20k_150") is ClassMatcher.from_name("ade20k_150")


def test_from_name_user_file_reloaded_when_edited(tmp_path: Path) -> None:
    path = tmp_path / "mine.json"
    path.write_text(json.dumps([{"id": 0, "name": "cat", "synonyms": ["kitty"]}]), encoding="utf-8")
    first = ClassMatcher.from_name(str(path))
    assert first.match("kitties") == (0,)
    assert ClassMatcher.from_name(path) is first
    path.write_text(json.dumps([{"id": 0, "name": "dog", "synonyms": []}]), encoding="utf-8")
    os.utime(path, ns=(1, 1))  # a different mtime even on coarse file systems
    second = ClassMatcher.from_name(str(path))
    assert second.match("dog") == (0,) and second.match("cat") == ()


def test_from_name_unknown_list() -> None:
    with pytest.raises(ConfigError, match="unknown class list"):
        ClassMatcher.from_name("no_such_list")
