"""Gridding: which crops of an image are sampled, and how many times each (docs/method.md, "Stage 1: proposal")."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from llm2labels.errors import ConfigError


@dataclass(frozen=True)
class Crop:
    """A crop of an image: `key` names it in the sample store, `box` is (left, top, right, bottom) in [0, 1]."""

    key: str
    box: tuple[float, float, float, float]
    samples: int



def pixel_box(box: tuple[float, float, float, float], width: int, height: int) -> tuple[int, int, int, int]:
    """A relative crop box in pixels. Tiles share edges exactly, so a 2x2 grid covers every pixel once; a
    crop is at least one pixel wide and high, so a grid over a tiny image (1x1) repeats its pixels rather
    than giving empty crops."""
    left, top = min(round(box[0] * width), width - 1), min(round(box[1] * height), height - 1)
    right, bottom = max(round(box[2] * width), left + 1), max(round(box[3] * height), top + 1)
    return left, top, right, bottom


MAX_SAMPLES = 256  # samples per crop; the paper uses at most 8, and every sample is a full generation


class Grid:
    """The whole image sampled `whole` times plus a `rows` x `cols` grid of tiles sampled `tile` times each.

    Paper modes: `base` = whole 8; `sg` = 2x2 tiles x 2; `sgc` = whole 1 + 2x2 tiles x 1.
    Crops are named by geometry, not by mode, so modes share stored samples where their crops coincide
    (sgc's tiles are sg's first samples; sgc's whole image is base's first sample).
    """

    def __init__(self, name: str = "base", whole: int = 8, rows: int = 2, cols: int = 2, tile: int = 0) -> None:
        for key, value in {"whole": whole, "tile": tile}.items():
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_SAMPLES:
                raise ConfigError(f"grid.{key} must be a whole number in [0, {MAX_SAMPLES}] (samples per crop), "
                                  f"got {value!r}")
        for key, value in {"rows": rows, "cols": cols}.items():
            if not isinstance(value, int) or not 1 <= value <= 16:
                raise ConfigError(f"grid.{key} must be an integer in [1, 16], got {value!r}")
        if whole == 0 and tile == 0:
            raise ConfigError("grid samples nothing: set grid.whole or grid.tile to at least 1")
        self.name, self.whole, self.rows, self.cols, self.tile = name, whole, rows, cols, tile

    def crops(self) -> list[Crop]:
        out = [Crop("full", (0.0, 0.0, 1.0, 1.0), self.whole)] if self.whole else []
        if self.tile:
            for r in range(self.rows):
                for c in range(self.cols):
                    box = (c / self.cols, r / self.rows, (c + 1) / self.cols, (r + 1) / self.rows)
                    out.append(Crop(f"{self.rows}x{self.cols}:{r},{c}", box, self.tile))
        return out

    def __repr__(self) -> str:
        return f"Grid({self.name}: whole={self.whole}, {self.rows}x{self.cols} tiles x {self.tile})"


def sample_seed(seed: int, image: str, crop: str, sample: int) -> int:
    """A 63-bit seed for one sample, a pure function of (run seed, image id, crop, sample index)."""
    digest = hashlib.blake2b(f"{seed}|{image}|{crop}|{sample}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1
