"""What is left to generate: per image, the crops and sample indices missing from the store."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from llm2labels.grid import Crop, Grid, sample_seed
from llm2labels.proposers.base import Proposer
from llm2labels.store import SampleStore, sample_key


@dataclass
class CropWork:
    key: str
    box: tuple[float, float, float, float]  # relative (left, top, right, bottom)
    samples: list[tuple[int, int]]  # (sample index, seed) still missing from the store


@dataclass
class ImageWork:
    path: str
    rel: str
    uid: str
    crops: list[CropWork] = field(default_factory=list)


def effective_crops(grid: Grid, proposer: Proposer) -> list[Crop]:
    """The grid's crops; a deterministic proposer (a classifier) gives every sample the same: ask for one."""
    crops = grid.crops()
    if proposer.deterministic:
        crops = [Crop(c.key, c.box, 1) for c in crops]
    return crops


def plan(entries: Sequence[Any], uids: Sequence[str], crops: Sequence[Crop], seed: int,
         store: SampleStore, max_pixels: int) -> list[ImageWork]:
    """Work items for the images whose samples are not all in the store (one item per distinct content),
    leaving out the files the store knows to be unusable under `max_pixels` (SampleStore.skip_reason)."""
    items: dict[str, ImageWork] = {}
    for entry, uid in zip(entries, uids):
        if uid in items or store.skip_reason(uid, max_pixels) is not None:
            continue
        work = ImageWork(str(entry.path), entry.rel, uid)
        for c in crops:
            missing = [(k, sample_seed(seed, uid, c.key, k)) for k in range(c.samples)
                       if sample_key(uid, c.key, k) not in store]
            if missing:
                work.crops.append(CropWork(c.key, c.box, missing))
        if work.crops:
            items[uid] = work
    return list(items.values())
