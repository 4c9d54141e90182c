"""ADE20K with its segmentation annotations, reduced to the set of classes present in each image.

Two layouts, each with `root` either the named dataset folder or its parent:
- `ADE20KDataset` (A-150, SceneParsing `ADEChallengeData2016/`): `images/<split>/*.jpg` and
  `annotations/<split>/<stem>.png`, 8-bit; pixel value v > 0 is A-150 class v - 1, 0 is "other" (ignored).
- `ADE20KFullDataset` (A-847, `ADE20K_2021_17_01/` as written by detectron2's
  `prepare_ade20k_full_sem_seg.py`): `images_detectron2/<split>/*.jpg` and
  `annotations_detectron2/<split>/<stem>.tif`, 16-bit; the pixel value is the class id 0..846, 65535 is
  ignored.

Reading 2,000 full-size label maps takes a while, so the class ids per annotation file are cached in one JSON
file per (annotation folder, dataset class) under `cache_dir`, each entry checked against the file's size and
mtime_ns: a changed annotation is read again. Only the selected entries' annotations are read.

An image whose annotation is missing or unreadable is not an error: it is recorded in `missing_annotations`
(path and reason, like a run's skip list) and left out of `ground_truth()`, so one bad file does not stop an
evaluation over thousands; check that list when the numbers look off.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image

from llm2labels.data.folder import FolderDataset
from llm2labels.data.images import DEFAULT_MAX_PIXELS
from llm2labels.errors import ConfigError, ImageError

log = logging.getLogger(__name__)

_CACHE_VERSION = 1  # part of the cache key: bump when the meaning of a cached entry changes
_LABEL_MODES = ("L", "P", "I", "I;16", "I;16L", "I;16B")  # single-band integer images (8, 16, 32 bit)
_MAX_DETAIL = 160  # characters of a decoder's message kept in a reason


def default_cache_dir() -> Path:
    """`$LLM2LABELS_CACHE/gt`, else `~/.cache/llm2labels/gt` (the same base as the `cache.dir` default)."""
    base = os.environ.get("LLM2LABELS_CACHE") or "~/.cache/llm2labels"
    return Path(base).expanduser() / "gt"


def read_label_values(path: Path) -> np.ndarray:
    """The distinct pixel values of a single-band label map, sorted; ImageError (the reason) if unusable."""
    try:
        with Image.open(path) as img:
            if img.mode not in _LABEL_MODES:
                raise ImageError(f"not a label map: mode {img.mode} (expected one band of integers)")
            return np.unique(np.asarray(img))
    except ImageError:
        raise
    except Exception as e:  # PIL raises many types for a truncated or foreign file; all mean the same here
        detail = " ".join(str(e).split())[:_MAX_DETAIL] or type(e).__name__
        raise ImageError(f"corrupt annotation: {detail}") from e


class _SegmentationDataset(FolderDataset):
    """Images of one split with a label map each; subclasses give the layout and the value -> id rule."""

    title: str  # in messages
    folder_name: str  # the dataset folder `root` may be, or contain
    images_dir: str
    annotations_dir: str
    annotation_suffix: str
    num_classes: int

    def __init__(
        self,
        root: str | Path,
        split: str = "validation",
        limit: int | None = None,
        seed: int = 0,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        cache_dir: str | Path | None = None,
    ) -> None:
        if not isinstance(split, str) or not split.strip() or "/" in split or "\\" in split:
            raise ConfigError(f"split must be a folder name such as validation or training, got {split!r}")
        self.split = split
        self.dataset_root = self._locate(Path(root).expanduser(), split)
        self.annotation_root = self.dataset_root / self.annotations_dir / split
        super().__init__(self.dataset_root / self.images_dir / split, limit=limit, seed=seed,
                         extensions=(".jpg",), max_pixels=max_pixels)
        self.cache_dir = default_cache_dir() if cache_dir is None else Path(cache_dir).expanduser()
        self._truth: dict[str, list[int]] | None = None
        self._missing: list[dict[str, str]] = []

    def _locate(self, root: Path, split: str) -> Path:
        """`root` itself, or its `folder_name` child, whichever holds the split; else a ConfigError."""
        if not root.is_dir():
            raise ConfigError(f"{self.title} root not found: {root} (give {self.folder_name}/ or its parent)")
        base = root
        if not (root / self.images_dir / split).is_dir() and (root / self.folder_name).is_dir():
            base = root / self.folder_name
        layout = (f"expected {self.folder_name} layout: {self.images_dir}/{split}/*.jpg and "
                  f"{self.annotations_dir}/{split}/*{self.annotation_suffix}")
        if not (base / self.images_dir / split).is_dir():
            raise ConfigError(f"no {self.title} images at {base / self.images_dir / split} ({layout})")
        if not (base / self.annotations_dir / split).is_dir():
            raise ConfigError(f"no {self.title} annotations at {base / self.annotations_dir / split} "
                              f"({layout})")
        return base

    def class_ids(self, values: np.ndarray) -> list[int]:
        """Sorted class ids from the distinct pixel values of one label map; ImageError for bad values."""
        raise NotImplementedError

    def ground_truth(self) -> dict[str, list[int]]:
        """Sorted class ids per selected `rel`; images in `missing_annotations` are left out."""
        if self._truth is None:
            self._truth, self._missing = self._read_truth()
        return {rel: list(ids) for rel, ids in self._truth.items()}

    @property
    def missing_annotations(self) -> list[dict[str, str]]:
        """{"path": rel, "reason": ...} for each selected image without a usable annotation."""
        if self._truth is None:
            self.ground_truth()
        return [dict(m) for m in self._missing]

    def seen_classes(self) -> list[int]:
        """The sorted union of the selected images' class ids (the "seen" classes of an evaluation)."""
        return sorted(set().union(*self.ground_truth().values()))

    def annotation_path(self, rel: str) -> Path:
        """The annotation file of an image `rel` (same relative path, annotation suffix)."""
        return self.annotation_root / PurePosixPath(rel).with_suffix(self.annotation_suffix)

    def cache_path(self) -> Path:
        """The ground-truth cache file of this annotation folder and dataset class."""
        key = f"{_CACHE_VERSION}\n{type(self).__name__}\n{self.annotation_root.resolve()}"
        return self.cache_dir / f"{self.name}-{hashlib.blake2b(key.encode(), digest_size=8).hexdigest()}.json"

    def _read_truth(self) -> tuple[dict[str, list[int]], list[dict[str, str]]]:
        cache_path = self.cache_path()
        files = _load_cache(cache_path, str(self.annotation_root.resolve()))
        truth: dict[str, list[int]] = {}
        missing: list[dict[str, str]] = []
        changed = False
        for entry in self.entries():
            path = self.annotation_path(entry.rel)
            name = path.relative_to(self.annotation_root).as_posix()
            try:
                stat = path.stat()
            except FileNotFoundError:
                missing.append({"path": entry.rel, "reason": f"no annotation file {name}"})
                continue
            except OSError as e:
                missing.append({"path": entry.rel, "reason": f"cannot read annotation {name}: {e.strerror}"})
                continue
            hit = files.get(name)
            if hit is not None and (hit["size"], hit["mtime_ns"]) == (stat.st_size, stat.st_mtime_ns):
                truth[entry.rel] = list(hit["ids"])
                continue
            try:
                ids = self.class_ids(read_label_values(path))
            except ImageError as e:
                missing.append({"path": entry.rel, "reason": f"{name}: {e}"})
                continue
            files[name] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "ids": ids}
            truth[entry.rel] = ids
            changed = True
        if changed:
            _save_cache(cache_path, {"version": _CACHE_VERSION, "dataset": type(self).__name__,
                                     "annotations": str(self.annotation_root.resolve()), "files": files})
        if missing:
            log.warning("%s: %d of %d images have no usable annotation (see missing_annotations)",
                        self.name, len(missing), len(self.entries()))
        return truth, missing


class ADE20KDataset(_SegmentationDataset):
    """ADE20K SceneParsing (A-150): `root` is ADEChallengeData2016/ or its parent; ids in "ade20k_150"."""

    name: str = "ade20k"
    class_list: str | None = "ade20k_150"
    title = "ADE20K"
    folder_name = "ADEChallengeData2016"
    images_dir = "images"
    annotations_dir = "annotations"
    annotation_suffix = ".png"
    num_classes = 150

    def class_ids(self, values: np.ndarray) -> list[int]:
        """Pixel value v in 1..150 is class v - 1; 0 ("other") is ignored."""
        if values.size and (values.min() < 0 or values.max() > self.num_classes):
            bad = int(values.max() if values.max() > self.num_classes else values.min())
            raise ImageError(f"pixel value {bad} outside 0..{self.num_classes} (not an A-150 annotation?)")
        return [int(v) - 1 for v in values if v > 0]


class ADE20KFullDataset(_SegmentationDataset):
    """ADE20K-Full (A-847), detectron2 layout: `root`: ADE20K_2021_17_01/ or its parent; "ade20k_847" ids."""

    name: str = "ade20k_full"
    class_list: str | None = "ade20k_847"
    title = "ADE20K-Full"
    folder_name = "ADE20K_2021_17_01"
    images_dir = "images_detectron2"
    annotations_dir = "annotations_detectron2"
    annotation_suffix = ".tif"
    num_classes = 847
    ignore_value = 65535  # detectron2's ignore label for unlabelled pixels

    def class_ids(self, values: np.ndarray) -> list[int]:
        """Pixel value v in 0..846 is class v; 65535 is ignored."""
        kept = values[values != self.ignore_value]
        if kept.size and (kept.min() < 0 or kept.max() >= self.num_classes):
            bad = int(kept.max() if kept.max() >= self.num_classes else kept.min())
            raise ImageError(f"pixel value {bad} outside 0..{self.num_classes - 1} and not "
                             f"{self.ignore_value} (not an A-847 annotation?)")
        return [int(v) for v in kept]


def _load_cache(path: Path, annotations: str) -> dict[str, Any]:
    """The cached entries of `path`, or {} when it is absent, unreadable or for another folder."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        log.warning("ignoring unreadable ground-truth cache %s: %s", path, e)
        return {}
    valid = (isinstance(data, dict) and data.get("version") == _CACHE_VERSION
             and data.get("annotations") == annotations and isinstance(data.get("files"), dict))
    if not valid:
        return {}
    return {k: v for k, v in data["files"].items() if _valid_entry(v)}


def _valid_entry(entry: Any) -> bool:
    return (isinstance(entry, dict) and type(entry.get("size")) is int and type(entry.get("mtime_ns")) is int
            and isinstance(entry.get("ids"), list) and all(type(i) is int for i in entry["ids"]))


def _save_cache(path: Path, data: dict[str, Any]) -> None:
    """Write atomically through a unique temp file (several ranks may write at once; the last one wins).

    A cache that cannot be written only costs a re-read next time, so it is a warning, not an error.
    """
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, prefix=path.name,
                                         suffix=".tmp", delete=False) as fh:
            tmp = fh.name
            json.dump(data, fh, separators=(",", ":"))
        os.replace(tmp, path)
    except OSError as e:
        log.warning("cannot write ground-truth cache %s: %s", path, e)
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
