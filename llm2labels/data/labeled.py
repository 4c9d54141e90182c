"""A generic labelled dataset: a folder of images plus a JSON file naming the classes in each image.

The JSON maps an image's path relative to the folder (POSIX, e.g. "street/a.jpg") to a list of classes,
each a name or an integer id of the class list:

    {"a.jpg": ["person", "motorbike"], "street/b.jpg": [0, 116], "empty.jpg": []}

Only the images listed in the JSON are the dataset (images in the folder without an entry are ignored,
since "no entry" cannot be told apart from "no classes"); a listed image that is not in the folder is a
ConfigError. A name resolves at the first of these tiers where it matches: exact primary name, exact synonym,
normalised primary name, normalised synonym (`normalize_label` on both sides), so "motorbike" and "Motorbikes"
are A-150 "minibike", while "stair" is A-150 "step" (an exact synonym) before "stairs" (a normalised primary).
A name that is unknown, or that matches several classes at that first tier (A-847 has three "bag" classes), is
a ConfigError: give the id instead.
"""

from __future__ import annotations

import difflib
import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from llm2labels.classes import ClassInfo, load_class_list
from llm2labels.data.folder import FolderDataset, ImageEntry
from llm2labels.data.images import DEFAULT_MAX_PIXELS
from llm2labels.errors import ConfigError
from llm2labels.normalize import normalize_label

_MAX_LISTED = 5  # missing files named in an error message


class ClassResolver:
    """Class names or ids -> class ids of one class list (see the module docstring for the name tiers)."""

    def __init__(self, classes: Sequence[ClassInfo], origin: str) -> None:
        self.origin = origin
        self.ids = {c.id for c in classes}
        self._tiers: list[dict[str, list[int]]] = [defaultdict(list) for _ in range(4)]
        for c in classes:
            self._tiers[0][c.name].append(c.id)
            for synonym in c.synonyms:  # distinct already (ClassInfo de-duplicates)
                self._tiers[1][synonym].append(c.id)
            self._tiers[2][normalize_label(c.name)].append(c.id)
            for synonym in {normalize_label(s) for s in c.synonyms}:
                self._tiers[3][synonym].append(c.id)

    def resolve(self, label: Any, where: str) -> int:
        """One class id for a name or an id; `where` (e.g. "image 'a.jpg'") starts the error message."""
        if isinstance(label, int) and not isinstance(label, bool):
            if label not in self.ids:
                raise ConfigError(f"{where}: class id {label} is not in {self.origin}")
            return label
        if not isinstance(label, str):
            raise ConfigError(f"{where}: a class must be a name or an integer id, got {label!r}")
        exact, normalised = label.strip(), normalize_label(label)
        keys = (exact, exact, normalised, normalised)
        for tier, key in zip(self._tiers, keys):
            ids = tier.get(key, [])
            if len(ids) == 1:
                return ids[0]
            if ids:
                raise ConfigError(f"{where}: class {label!r} is ambiguous in {self.origin} "
                                  f"(ids {sorted(ids)}); give the id instead")
        close = difflib.get_close_matches(normalised, list(self._tiers[3]), n=3)
        hint = f" (close: {', '.join(close)})" if close else ""
        raise ConfigError(f"{where}: unknown class {label!r} in {self.origin}{hint}")

    def resolve_all(self, labels: Sequence[Any], where: str) -> list[int]:
        """Sorted, de-duplicated class ids of a list of names and ids."""
        return sorted({self.resolve(label, where) for label in labels})


class LabeledFolderDataset(FolderDataset):
    """The images listed in the JSON file `labels` under `root`, with their classes in `class_list`.

    `labels` is a path (absolute or from the working directory), or a file name inside `root`. `class_list`
    is a packaged class-list name ("ade20k_150") or the path of a .json/.txt list (see llm2labels.classes).
    The JSON is read and every label resolved in the constructor, so a bad file fails at start.
    """

    name: str = "labeled"

    def __init__(
        self,
        root: str | Path,
        labels: str | Path,
        class_list: str | Path = "ade20k_150",
        limit: int | None = None,
        seed: int = 0,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        super().__init__(root, limit=limit, seed=seed, max_pixels=max_pixels)
        if not isinstance(class_list, (str, Path)) or not str(class_list).strip():
            raise ConfigError(f"class_list must be a class-list name or a path, got {class_list!r}")
        self.class_list = str(class_list)
        self.labels_path = _find_labels(self.root, labels)
        resolver = ClassResolver(load_class_list(self.class_list), self.class_list)
        raw = _read_labels(self.labels_path)
        self._truth = {rel: resolver.resolve_all(items, f"{self.labels_path.name}: image {rel!r}")
                       for rel, items in raw.items()}
        missing = [rel for rel in self._truth if not (self.root / rel).is_file()]
        if missing:
            shown = ", ".join(missing[:_MAX_LISTED]) + (f" and {len(missing) - _MAX_LISTED} more"
                                                        if len(missing) > _MAX_LISTED else "")
            raise ConfigError(f"{len(missing)} image(s) listed in {self.labels_path} are not under "
                              f"{self.root}: {shown}")

    def _find(self) -> list[ImageEntry]:
        return [ImageEntry(path=self.root / rel, rel=rel) for rel in sorted(self._truth)]

    def ground_truth(self) -> dict[str, list[int]]:
        """Sorted class ids per `rel`, for the selected entries only (all listed images without `limit`)."""
        return {e.rel: list(self._truth[e.rel]) for e in self.entries()}


def _find_labels(root: Path, labels: str | Path) -> Path:
    if not isinstance(labels, (str, Path)) or not str(labels).strip():
        raise ConfigError(f"labels must be the path of a JSON file, got {labels!r}")
    given = Path(labels).expanduser()
    for candidate in (given, root / given):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"labels file not found: {given} (give a JSON path, or a file name inside {root})")


def _read_labels(path: Path) -> dict[str, list[Any]]:
    """The JSON mapping with keys as canonical POSIX paths; a structural problem is a one-line ConfigError."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"cannot read labels file {path}: {' '.join(str(e).split())}") from e
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{path}: expected a non-empty JSON object mapping image paths to lists of classes")
    mapping: dict[str, list[Any]] = {}
    for key, items in raw.items():
        rel = PurePosixPath(key).as_posix()
        if PurePosixPath(rel).is_absolute() or ".." in PurePosixPath(rel).parts or "\\" in rel or rel == ".":
            raise ConfigError(f"{path}: {key!r} must be a POSIX path relative to the image folder")
        if not isinstance(items, list):
            raise ConfigError(f"{path}: image {key!r}: expected a list of class names or ids, got {items!r}")
        if rel in mapping:
            raise ConfigError(f"{path}: image {rel!r} is listed twice")
        mapping[rel] = items
    return mapping
