"""What the pipeline needs of a dataset: its images, how to decode one, and its ground truth if any.

`FolderDataset` and its subclasses (the packaged samples, ADE20K, labeled folders) are the implementations;
a new one only has to have these members (a `typing.Protocol`: no base class needed).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from PIL import Image

    from llm2labels.data.folder import ImageEntry


class ImageSource(Protocol):
    """How the predict loop decodes an image (in loader workers): `load` raises `ImageError` with the skip
    reason for a file it cannot use, `LimitError` for one over `max_pixels` (pixels, a setting of the run)."""

    max_pixels: int

    def load(self, path: Path) -> Image.Image: ...


class Dataset(ImageSource, Protocol):
    """A run's images: `entries()` sorted by `rel` (the image's key in every output); `ground_truth()`
    sorted class ids of `class_list` per `rel`, or None without annotations."""

    name: str
    class_list: str | None

    def entries(self) -> list[ImageEntry]: ...

    def ground_truth(self) -> dict[str, list[int]] | None: ...
