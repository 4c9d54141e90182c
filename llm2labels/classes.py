"""Class lists with synonyms (the evaluation ground truth): the packaged ones, or a user's file.

Packaged lists live in `llm2labels/assets/classes/` (from FC-CLIP, Apache-2.0; see SOURCES.md there). Two
formats, both accepted for a user's file:
- `.json`: a list of `{"id": int, "name": str, "synonyms": [str, ...]}` (other keys ignored).
- `.txt`: lines `source_id:name1,name2,...`; lines `N:invalid_class_id` are placeholders and skipped, and
  ids are re-numbered 0-based among the remaining lines in file order (as the packaged .json files are).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llm2labels.errors import ConfigError

if TYPE_CHECKING:  # importlib.resources.abc is Python >= 3.11
    from importlib.resources.abc import Traversable

_INVALID = "invalid_class_id"


@dataclass(frozen=True)
class ClassInfo:
    """One class: 0-based `id`, primary `name`, and every name that counts as it (`name` first)."""

    id: int
    name: str
    synonyms: tuple[str, ...]


def _packaged_dir() -> Traversable:
    return resources.files("llm2labels") / "assets" / "classes"


def available_class_lists() -> list[str]:
    """Names of the packaged class lists, sorted (e.g. "ade20k_150")."""
    return sorted(f.name[: -len(".json")] for f in _packaged_dir().iterdir() if f.name.endswith(".json"))


def load_class_list(name_or_path: str | Path) -> list[ClassInfo]:
    """Load a packaged list by name ("ade20k_150") or a user's `.json` / `.txt` file by path."""
    text = str(name_or_path)
    if text in available_class_lists():
        source: Traversable | Path = _packaged_dir() / f"{text}.json"
    else:
        source = Path(text).expanduser()
        if source.suffix.lower() not in (".json", ".txt") or not source.is_file():
            names = ", ".join(available_class_lists())
            raise ConfigError(
                f"unknown class list {text!r}: give one of [{names}] or the path of a .json/.txt file"
            )
    try:
        content = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read class list {text}: {e}") from e
    classes = _parse_json(content, text) if source.name.lower().endswith(".json") else _parse_txt(content, text)
    if not classes:
        raise ConfigError(f"class list {text} has no classes: give a list with at least one class")
    return classes


def _dedupe(names: list[str]) -> tuple[str, ...]:
    """Strip, drop empty and repeated names, keep order."""
    return tuple(dict.fromkeys(n.strip() for n in names if n.strip()))


def _parse_txt(content: str, origin: str) -> list[ClassInfo]:
    classes: list[ClassInfo] = []
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        source_id, colon, rest = line.partition(":")
        if not colon or not source_id.strip().lstrip("-").isdigit():
            raise ConfigError(f"{origin} line {number}: expected 'id:name,synonym,...', got {line.strip()!r}")
        if rest.strip() == _INVALID:
            continue
        names = _dedupe(rest.split(","))
        if not names:
            raise ConfigError(f"{origin} line {number}: no class name after the id")
        classes.append(ClassInfo(id=len(classes), name=names[0], synonyms=names))
    return classes


def _parse_json(content: str, origin: str) -> list[ClassInfo]:
    try:
        items = json.loads(content)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{origin} is not valid JSON: {e}") from e
    if not isinstance(items, list):
        raise ConfigError(f"{origin}: expected a JSON list of {{id, name, synonyms}} objects")
    classes = [_json_class(item, origin, index) for index, item in enumerate(items)]
    ids = [c.id for c in classes]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{origin}: class ids are not unique")
    return classes


def _json_class(item: Any, origin: str, index: int) -> ClassInfo:
    where = f"{origin} item {index}"
    if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"].strip():
        raise ConfigError(f"{where}: expected an object with a non-empty string 'name'")
    class_id = item.get("id", index)
    if not isinstance(class_id, int) or isinstance(class_id, bool):
        raise ConfigError(f"{where}: 'id' must be an integer, got {class_id!r}")
    synonyms = item.get("synonyms", [])
    if not isinstance(synonyms, list) or not all(isinstance(s, str) for s in synonyms):
        raise ConfigError(f"{where}: 'synonyms' must be a list of strings")
    name = item["name"].strip()
    return ClassInfo(id=class_id, name=name, synonyms=_dedupe([name, *synonyms]))
