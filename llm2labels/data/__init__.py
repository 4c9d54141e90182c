"""Input images: decoding any file to RGB (`images`), folder datasets (`folder`), the packaged samples."""

from llm2labels.data.folder import FolderDataset, ImageEntry
from llm2labels.data.images import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, file_uid, load_rgb
from llm2labels.data.samples import SamplesDataset

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "FolderDataset",
    "ImageEntry",
    "SamplesDataset",
    "file_uid",
    "load_rgb",
]
