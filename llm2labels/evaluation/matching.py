"""Match predicted labels to ground-truth classes (docs/method.md, "Evaluation").

A label matches class c when `normalize_label(label)` equals `normalize_label(s)` for one of c's synonyms; the
same normalisation the pipeline ranks with is applied to both sides, so "Chairs" matches "chair".

A normalised string can be a synonym of several classes (A-847 has 77 such strings: "closet" names both
"wardrobe, closet, press" and "closet"; "chest" both "chest of drawers, chest, bureau, dresser" and "chest").
Such a label matches EACH of those classes: each counts as found for recall, while the label itself is ONE
hit for precision (precision counts labels, recall counts classes). `match` therefore returns all of them.

An entry of a ranked list may be a synset (a list of member labels, from vocabulary.json): it matches the union
of its members' classes, and it is still one entry (one precision hit at most).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path

from llm2labels.classes import ClassInfo, available_class_lists, load_class_list
from llm2labels.normalize import normalize_label


class ClassMatcher:
    """Normalised synonym -> class ids, built once per class list."""

    def __init__(self, classes: Sequence[ClassInfo]) -> None:
        self.classes: list[ClassInfo] = list(classes)
        self.ids: frozenset[int] = frozenset(c.id for c in self.classes)
        index: dict[str, set[int]] = {}
        for c in self.classes:
            for synonym in c.synonyms:
                key = normalize_label(synonym)
                if key:
                    index.setdefault(key, set()).add(c.id)
        # Keys are outputs of normalize_label, hence fixed points of it.
        self._index: dict[str, tuple[int, ...]] = {k: tuple(sorted(v)) for k, v in index.items()}

    @classmethod
    def from_name(cls, name_or_path: str | Path) -> ClassMatcher:
        """The matcher of a packaged list ("ade20k_847") or a user's file, cached.

        A packaged list is cached by name; a file by its resolved path, size and modification time, so an
        edited file is read again.
        """
        text = str(name_or_path)
        if text in available_class_lists():
            return _cached_matcher(text, None)
        path = Path(text).expanduser()
        try:
            stat = path.stat()
            key: tuple[int, int] | None = (stat.st_size, stat.st_mtime_ns)
            text = os.fspath(path.resolve())
        except OSError:
            key = None  # load_class_list reports the missing file
        return _cached_matcher(text, key)

    def __len__(self) -> int:
        return len(self.classes)

    def match(self, label: str) -> tuple[int, ...]:
        """Sorted ids of every class the label matches; () when none (or when it normalises to '')."""
        hit = self._index.get(label)  # already-normalised labels (the pipeline's) skip normalisation
        if hit is not None:
            return hit
        return self._index.get(normalize_label(label), ())

    def match_entry(self, entry: str | Sequence[str]) -> tuple[int, ...]:
        """A label's matches, or for a synset (a sequence of member labels) the sorted union of its members'."""
        if isinstance(entry, str):
            return self.match(entry)
        found: set[int] = set()
        for member in entry:
            found.update(self.match(member))
        return tuple(sorted(found))


@functools.lru_cache(maxsize=32)
def _cached_matcher(name_or_path: str, _file_key: tuple[int, int] | None) -> ClassMatcher:
    return ClassMatcher(load_class_list(name_or_path))
