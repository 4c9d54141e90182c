"""Reading one image file into 8-bit RGB, and a content id for caching.

Every way a file can be unusable ends in `ImageError` whose message is a short lowercase reason, so that a
dataset run can record the file in its skip list and go on.
"""

from __future__ import annotations

import errno
import hashlib
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from llm2labels.errors import ConfigError, ImageError, LimitError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")

# 100 megapixels: about 10,000 x 10,000, which no camera photo reaches, while a decompression bomb (a tiny
# file whose header claims, say, 30,000 x 30,000 px) would need 2.7 GB just for its RGB pixels. VLMs resize
# their input to ~1-2 MP anyway, so nothing useful is refused.
DEFAULT_MAX_PIXELS = 100_000_000

_CHUNK = 1 << 20  # bytes read at a time by file_uid (1 MiB)
_MAX_DETAIL = 160  # characters of a decoder's message kept in a skip-list reason
_OPEN_LOCK = threading.Lock()  # guards the brief change of Image.MAX_IMAGE_PIXELS in _own_pixel_limit


@contextmanager
def _own_pixel_limit() -> Iterator[None]:
    """Switch off PIL's global size check while a header is read; `load_rgb` checks `max_pixels` itself.

    PIL warns above Image.MAX_IMAGE_PIXELS (~89 MP) and refuses above twice that, whatever the caller asked
    for; the global is restored at once, and only header parsing (milliseconds) runs under the lock.
    """
    with _OPEN_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text[:_MAX_DETAIL]


def _check_file(path: Path) -> None:
    try:
        st = path.stat()  # follows links: a loop or a dangling link fails here
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ImageError("symbolic link loop") from e
        if e.errno == errno.ENOENT:
            raise ImageError("dangling symbolic link" if path.is_symlink() else "file not found") from e
        if e.errno == errno.EACCES:
            raise ImageError("permission denied") from e
        raise ImageError(f"cannot read file: {_one_line(e)}") from e
    if not path.is_file():
        raise ImageError("not a regular file")
    if st.st_size == 0:
        raise ImageError("empty file (0 bytes)")
    if not os.access(path, os.R_OK):
        raise ImageError("permission denied")


def load_rgb(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode `path` fully into an 8-bit RGB image, upright according to its EXIF orientation.

    The pixel count is checked from the header, before any pixel is decoded. Multi-frame files (GIF,
    multi-page TIFF) give their first frame. The returned image holds no open file.
    """
    if max_pixels < 1:
        raise ConfigError(f"max_pixels must be >= 1, got {max_pixels}")
    path = Path(path)
    _check_file(path)
    try:
        with _own_pixel_limit():
            img = Image.open(path)
        with img:
            width, height = img.size
            if width * height > max_pixels:
                raise LimitError(f"too large: {width}x{height} pixels > limit {max_pixels}")
            img.load()  # decode now, so that truncated or corrupt data fails here and not in a model
            upright = ImageOps.exif_transpose(img)
            return to_rgb(upright)
    except ImageError:
        raise
    except PermissionError as e:
        raise ImageError("permission denied") from e
    except UnidentifiedImageError as e:
        raise ImageError("not an image") from e
    except Image.DecompressionBombError as e:
        raise ImageError(f"too large: {_one_line(e)}") from e
    except Exception as e:  # any decoder failure (OSError, SyntaxError, struct.error, ...) means the same
        raise ImageError(f"corrupt or truncated image: {_one_line(e)}") from e


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert a decoded image of any PIL mode to 8-bit RGB.

    Transparent pixels are composited on white: transparent backgrounds (logos, product shots, scans) are
    drawn for white pages, and black would add a dark region the model might name. 16-bit images are scaled
    by their full range (65535 -> 255), not clipped; see `_high_depth_to_l` for 32-bit and float images.
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I") or mode == "F":
        return _high_depth_to_l(img).convert("RGB")
    if "transparency" in img.info and mode in ("1", "L", "P", "RGB"):
        img, mode = img.convert("RGBA"), "RGBA"  # a colour key or palette alpha becomes a real alpha band
    if mode == "La":  # premultiplied alpha: PIL only un-premultiplies it to LA
        img, mode = img.convert("LA"), "LA"
    if mode in ("LA", "PA", "RGBa"):
        img, mode = img.convert("RGBA"), "RGBA"
    if mode == "RGBA":
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, img).convert("RGB")
    try:
        return img.convert("RGB")
    except ValueError as e:
        raise ImageError(f"unsupported image mode: {mode}") from e


def _high_depth_to_l(img: Image.Image) -> Image.Image:
    """Map a 16-bit, 32-bit integer or float single-band image to 8-bit grey.

    - I;16 (any byte order): v * 255 / 65535, rounded.
    - I (32-bit): files decoded to I almost always hold 16-bit samples (16-bit PNG/TIFF), so values within
      0..65535 are scaled as 16-bit; anything else is stretched from its min..max.
    - F: values within 0..1 are scaled by 255, values within 0..255 (max > 1) are kept, anything else is
      stretched from its min..max. NaN and infinities count as 0.
    """
    arr = np.asarray(img)
    if img.mode.startswith("I;16") and arr.dtype.kind == "u":
        out = (arr.astype(np.uint32) * 255 + 32767) // 65535
        return Image.fromarray(out.astype(np.uint8), mode="L")
    if img.mode not in ("I", "F"):
        raise ImageError(f"unsupported image mode: {img.mode}")
    values = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(values.min()), float(values.max())
    if img.mode == "I" and low >= 0 and high <= 65535:
        low, high = 0.0, 65535.0
    elif img.mode == "F" and low >= 0 and high <= 1:
        low, high = 0.0, 1.0
    elif img.mode == "F" and low >= 0 and high <= 255 and high > 1:
        low, high = 0.0, 255.0
    span = high - low if high > low else np.inf  # a constant image maps to 0
    out = np.floor((values - low) * 255.0 / span + 0.5).clip(0, 255)  # round half up
    return Image.fromarray(out.astype(np.uint8), mode="L")


def file_uid(path: str | Path) -> str:
    """Content id of a file: blake2b (12-byte digest, hex) of its bytes, so renamed copies share cache."""
    digest = hashlib.blake2b(digest_size=12)
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    except OSError as e:
        raise ImageError(f"cannot read file: {_one_line(e)}") from e
    return digest.hexdigest()
