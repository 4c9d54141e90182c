"""A dataset that is a folder of image files, scanned recursively."""

from __future__ import annotations

import os
import random
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from llm2labels.data.images import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, load_rgb
from llm2labels.errors import ConfigError


class ImageEntry:
    """One image file: its path, and `rel`, its POSIX path relative to the dataset root (the image's key).

    Immutable. Held as `rel` and the text of the folder it is relative to (one string, shared by every entry
    under that folder): ~120 bytes an entry instead of ~470 with a `Path` in it, which a run holds for every
    image of its dataset."""

    __slots__ = ("_head", "rel")
    _head: str  # the path's text before `rel`, or the whole path when it does not end with `rel`
    rel: str

    def __init__(self, path: str | os.PathLike[str], rel: str) -> None:
        text = os.fspath(path)
        head = text[: len(text) - len(rel)] if rel and text.endswith(rel) else text + "\0"
        object.__setattr__(self, "_head", sys.intern(head))
        object.__setattr__(self, "rel", rel)

    @property
    def path(self) -> Path:
        head = self._head
        return Path(head[:-1] if head.endswith("\0") else head + self.rel)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"ImageEntry is immutable: cannot set {name}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ImageEntry) and (self._head, self.rel) == (other._head, other.rel)

    def __hash__(self) -> int:
        return hash((self._head, self.rel))

    def __repr__(self) -> str:
        return f"ImageEntry(path={self.path!r}, rel={self.rel!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return ImageEntry, (str(self.path), self.rel)


class FolderDataset:
    """Every image file under `root` (hidden files and folders skipped), ordered by `rel`.

    With `limit`, a random subset of `limit` files drawn with `random.Random(seed)` from the sorted list, so
    the same seed picks the same files whatever order the filesystem lists them in. The scan runs once, on the
    first call to `entries`; the constructor only checks its arguments.

    Every dataset has the members of `protocol.Dataset`: `name`, `max_pixels`, `entries()`, `load()`, and
    `class_list` (the class list its ground truth refers to) with `ground_truth()` (sorted class ids per
    `rel`); a plain folder has neither. Subclasses that list their images differently override `_find`.
    """

    name: str = "folder"
    class_list: str | None = None  # a packaged class-list name or a path, for datasets with ground truth

    def __init__(
        self,
        root: str | Path,
        limit: int | None = None,
        seed: int = 0,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.root = Path(root).expanduser()
        if not self.root.exists():
            raise ConfigError(f"image folder not found: {self.root} (check the dataset root path)")
        if not self.root.is_dir():
            raise ConfigError(f"image folder is not a directory: {self.root}")
        _check_selection(limit, seed, max_pixels)
        self.extensions = _normalise_extensions(extensions)
        self.limit = limit
        self.seed = seed
        self.max_pixels = max_pixels
        self._entries: list[ImageEntry] | None = None
        self.not_listed: dict[str, Any] = {}  # what the scan passed over (see _scan), for summary.json

    def entries(self) -> list[ImageEntry]:
        """The dataset's images, sorted by `rel` (a fresh list; the scan itself is cached)."""
        if self._entries is None:
            self._entries = _select_subset(self._find(), self.limit, self.seed)
        return list(self._entries)

    def _find(self) -> list[ImageEntry]:
        """Every candidate image, sorted by `rel` (before `limit`); raises ConfigError when there is none."""
        found = _scan(self.root, self.extensions, self.not_listed)
        if not found:
            exts = " ".join(self.extensions)
            raise ConfigError(f"no image files ({exts}) found under {self.root}")
        return found

    def load(self, path: Path) -> Image.Image:
        """Decode one image file to RGB; `ImageError` with the skip-list reason if it cannot be used
        (`LimitError` over `max_pixels`). The predict loop decodes every image through this."""
        return load_rgb(path, self.max_pixels)

    def ground_truth(self) -> dict[str, list[int]] | None:
        """Sorted class ids (in `class_list`) per selected `rel`; None for a plain folder (no annotations)."""
        return None

    def __len__(self) -> int:
        return len(self.entries())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, limit={self.limit}, seed={self.seed})"


def _check_selection(limit: int | None, seed: int, max_pixels: int) -> None:
    """The ConfigError checks of the arguments every dataset takes (`limit`, `seed`, `max_pixels`)."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"limit must be a positive integer or None, got {limit!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ConfigError(f"max_pixels must be an integer >= 1, got {max_pixels!r}")


def _select_subset(found: list[ImageEntry], limit: int | None, seed: int) -> list[ImageEntry]:
    """`limit` entries drawn by `random.Random(seed)` from `found` (sorted by rel), re-sorted; all without."""
    if limit is None or limit >= len(found):
        return list(found)
    return sorted(random.Random(seed).sample(found, limit), key=lambda e: e.rel)


def _normalise_extensions(extensions: Sequence[str]) -> tuple[str, ...]:
    if isinstance(extensions, str):
        extensions = [extensions]
    normalised = tuple(sorted({"." + e.lower().lstrip(".") for e in extensions if e.strip(". ")}))
    if not normalised:
        raise ConfigError("extensions must name at least one file extension, e.g. ['.jpg', '.png']")
    return normalised


def _scan(root: Path, extensions: tuple[str, ...], notes: dict[str, Any] | None = None) -> list[ImageEntry]:
    """All files below `root` whose extension matches (any case), not inside or named like hidden ones.

    `notes`, when given, receives what was passed over without a word: `unreadable_folders` (relative
    paths, with the reason) and `other_files` (counts by extension) of files this dataset does not take.
    """
    found = []
    unreadable: list[dict[str, str]] = []
    others: Counter[str] = Counter()

    def refused(error: OSError) -> None:
        where = Path(error.filename or root)
        rel = where.relative_to(root).as_posix() if where.is_relative_to(root) else str(where)
        unreadable.append({"path": rel, "reason": error.strerror or str(error)})

    # followlinks=False: a symlinked folder cannot loop forever
    for folder, dirs, files in os.walk(root, onerror=refused):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for file in files:
            if file.startswith("."):
                continue
            extension = os.path.splitext(file)[1].lower()
            if extension not in extensions:
                others[extension or "(none)"] += 1
                continue
            path = Path(folder, file)
            found.append(ImageEntry(path=path, rel=path.relative_to(root).as_posix()))
    found.sort(key=lambda e: e.rel)
    if notes is not None:
        notes.clear()
        if unreadable:
            notes["unreadable_folders"] = sorted(unreadable, key=lambda u: u["path"])
        if others:
            notes["other_files"] = dict(sorted(others.items()))
    return found
