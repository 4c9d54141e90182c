"""The embedded default dataset: six photos shipped inside the package, with hand-written ADE-150 labels.

Files, credits and licenses: `llm2labels/assets/samples/ATTRIBUTION.md`.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from llm2labels.data.folder import FolderDataset
from llm2labels.data.images import DEFAULT_MAX_PIXELS
from llm2labels.errors import ConfigError

GROUND_TRUTH_FILE = "ground_truth.json"


def samples_root() -> Path:
    """The packaged `assets/samples` folder, found through importlib.resources (works from a wheel)."""
    root = resources.files("llm2labels") / "assets" / "samples"
    if not isinstance(root, Path):  # only a zip import (zipapp, egg) gives a non-filesystem Traversable
        raise ConfigError("the packaged sample images are not on the filesystem; install llm2labels unzipped")
    return root


class SamplesDataset(FolderDataset):
    """The packaged sample photos; `ground_truth()` gives the ADE-150 classes visible in each one."""

    name: str = "samples"

    def __init__(self, limit: int | None = None, seed: int = 0, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        super().__init__(samples_root(), limit=limit, seed=seed, max_pixels=max_pixels)

    def ground_truth(self) -> dict[str, list[str]]:
        """ADE-150 primary class names per `rel`, for the selected entries only (all of them without limit)."""
        mapping = json.loads((self.root / GROUND_TRUTH_FILE).read_text(encoding="utf-8"))
        return {e.rel: list(mapping[e.rel]) for e in self.entries()}
