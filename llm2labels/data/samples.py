"""The embedded default dataset: six photos shipped inside the package, with hand-written ADE-150 labels.

Files, credits and licenses: `llm2labels/assets/samples/ATTRIBUTION.md`. `ground_truth.json` there holds A-150
primary class names (readable on disk); `ground_truth()` gives their ids, like every other dataset.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from llm2labels.data.images import DEFAULT_MAX_PIXELS
from llm2labels.data.labeled import LabeledFolderDataset
from llm2labels.errors import ConfigError

GROUND_TRUTH_FILE = "ground_truth.json"


def samples_root() -> Path:
    """The packaged `assets/samples` folder, found through importlib.resources (works from a wheel)."""
    root = resources.files("llm2labels") / "assets" / "samples"
    if not isinstance(root, Path):  # only a zip import (zipapp, egg) gives a non-filesystem Traversable
        raise ConfigError("the packaged sample images are not on the filesystem; install llm2labels unzipped")
    return root


class SamplesDataset(LabeledFolderDataset):
    """The packaged sample photos; `ground_truth()` gives the ADE-150 class ids visible in each one."""

    name: str = "samples"

    def __init__(self, limit: int | None = None, seed: int = 0, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        root = samples_root()
        super().__init__(root, root / GROUND_TRUTH_FILE, class_list="ade20k_150", limit=limit, seed=seed,
                         max_pixels=max_pixels)
