"""What is left to generate: per image, the crops and sample indices missing from the store (looked up in
the store's index as arrays, so planning a million images holds no string per key), as a `Plan`."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from llm2labels.grid import Crop, Grid, sample_seed
from llm2labels.proposers.base import Proposer
from llm2labels.store import SampleStore, skip_key
from llm2labels.store.records import key_hashes, rest_bits, uid_bits_array


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


BLOCK = 1 << 16  # images looked up at a time


def find_keys(uids: Sequence[str], rests: Sequence[str], store: SampleStore) -> np.ndarray:
    """Index positions (`store.index`) of the keys `<uid>|<rest>` for every uid and rest, (uids, rests); -1
    where not stored. Looked up in blocks of uids, as hash arrays: no string per key."""
    bits_of_rests = np.array([rest_bits(r) for r in rests], np.uint64)
    out = np.empty((len(uids), len(rests)), np.int64)
    m = len(rests)
    for start in range(0, len(uids), BLOCK):
        block = uids[start:start + BLOCK]

        def key_of(i: int, block: Sequence[str] = block) -> str:  # asked only for ambiguous hashes
            return f"{block[i // m]}|{rests[i % m]}"

        hashes = key_hashes(uid_bits_array(list(block)), bits_of_rests)
        out[start:start + len(block)] = store.index.find(hashes, key_of)
    return out


class RunKeys:
    """The sample keys a run needs, as a matrix: one row per image, one column per (crop, sample index)."""

    def __init__(self, crops: Sequence[Crop]) -> None:
        self.columns = [(c.key, k) for c in crops for k in range(c.samples)]
        self.rests = [f"{crop}|{k}" for crop, k in self.columns]

    def positions(self, uids: Sequence[str], store: SampleStore) -> np.ndarray:
        """Index positions of every needed sample, (images, columns); -1 where missing."""
        return find_keys(uids, self.rests, store)


def skip_rests(max_pixels: int) -> list[str]:
    """The key ends of an image's skip records: a fact about the file, and one under this pixel limit."""
    return [key[1:] for key in (skip_key(""), skip_key("", max_pixels))]  # "skip", "skip|max_pixels=N"


def skip_reasons(uids: Sequence[str], store: SampleStore, hits: np.ndarray, max_pixels: int) -> dict[int, str]:
    """Row -> why the image is not used (`SampleStore.skip_reason`), for the rows with a skip record found
    (`hits`: the positions of `skip_rests` keys, (images, 2))."""
    found: dict[int, str] = {}
    for row in np.flatnonzero((hits >= 0).any(axis=1)).tolist():
        reason = store.skip_reason(uids[row], max_pixels)
        if reason is not None:
            found[row] = reason
    return found


class Plan(Sequence[ImageWork]):
    """What is left to generate, as arrays: the dataset rows of the images to generate (one per distinct
    content) and, per row, which samples (`RunKeys.columns`) are missing. Its items (`ImageWork`) are made
    when asked for, from the run's own listing, so a plan of a million images is ~9 bytes an image.

    A multi-process job sends only `compact()` from rank 0 to the others, which rebuild it over their own
    listing (`with_compact`) once `digest()` says their listing is rank 0's."""

    def __init__(self, entries: Sequence[Any], uids: Sequence[str], crops: Sequence[Crop], seed: int,
                 rows: np.ndarray, missing: np.ndarray) -> None:
        self.entries, self.uids, self.crops, self.seed = entries, uids, list(crops), seed
        self.rows, self.missing = rows, missing
        self.columns = RunKeys(self.crops).columns
        self._boxes = {c.key: c.box for c in self.crops}

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return Plan(self.entries, self.uids, self.crops, self.seed, self.rows[i], self.missing[i])
        row = int(self.rows[i])
        entry, uid = self.entries[row], self.uids[row]
        missing: dict[str, list[tuple[int, int]]] = {}
        for column in np.flatnonzero(self.missing[i]):
            crop, k = self.columns[column]
            missing.setdefault(crop, []).append((k, sample_seed(self.seed, uid, crop, k)))
        crops = [CropWork(crop, self._boxes[crop], samples) for crop, samples in missing.items()]
        return ImageWork(str(entry.path), entry.rel, uid, crops)

    def compact(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows as uint32/uint64, missing samples packed 8 to a byte): what rank 0 broadcasts."""
        rows = self.rows.astype(np.uint32 if len(self.uids) < 1 << 32 else np.uint64)
        return rows, np.packbits(self.missing, axis=1)

    def with_compact(self, payload: tuple[np.ndarray, np.ndarray]) -> Plan:
        """The plan `payload` (another process's `compact()`) describes, over this listing."""
        rows, packed = payload
        missing = np.unpackbits(packed, axis=1, count=len(self.columns)).astype(bool)
        return Plan(self.entries, self.uids, self.crops, self.seed, rows.astype(np.int64), missing)

    def digest(self) -> str:
        """A hash of what the rows and columns refer to: the listing (paths, uids), the samples and seed."""
        h = hashlib.blake2b(digest_size=16)
        h.update(json.dumps([self.seed, self.columns]).encode())
        for start in range(0, len(self.uids), BLOCK):
            part = range(start, min(start + BLOCK, len(self.uids)))
            text = "\n".join(f"{self.uids[i]}\t{self.entries[i].rel}" for i in part)
            h.update(text.encode("utf-8", "surrogatepass"))
        return h.hexdigest()


@dataclass
class Lookup:
    """A run's samples in the store's index as of one `refresh`: each needed sample's index position (images
    x `RunKeys.columns`; -1 where missing) and why images are skipped (row -> reason). The plan, the counts
    and the scoring's selection all read one lookup, until the store is refreshed."""

    positions: np.ndarray
    skipped: dict[int, str]

    def counts(self, uids: Sequence[str]) -> tuple[int, int]:
        """(samples needed, samples stored) over the distinct images of `uids`."""
        positions = self.positions
        if len(set(uids)) != len(uids):
            first: dict[str, int] = {}
            for row, uid in enumerate(uids):
                first.setdefault(uid, row)
            positions = positions[np.fromiter(first.values(), np.int64, len(first))]
        return positions.size, int(np.count_nonzero(positions >= 0))


def look_up(uids: Sequence[str], crops: Sequence[Crop], store: SampleStore, max_pixels: int) -> Lookup:
    """Every needed sample and skip record of `uids` in the store's index, in one pass."""
    keys = RunKeys(crops)
    m = len(keys.rests)
    both = find_keys(uids, keys.rests + skip_rests(max_pixels), store)
    return Lookup(both[:, :m], skip_reasons(uids, store, both[:, m:], max_pixels))


def plan(entries: Sequence[Any], uids: Sequence[str], crops: Sequence[Crop], seed: int,
         store: SampleStore, max_pixels: int, found: Lookup | None = None) -> Plan:
    """The images whose samples are not all in the store (one per distinct content), leaving out the files
    the store knows to be unusable under `max_pixels` (SampleStore.skip_reason). `found`: the lookup of
    the store as it is now, when the caller has one."""
    found = found if found is not None else look_up(uids, crops, store, max_pixels)
    seen: set[str] = set()
    rows = []
    for row in np.flatnonzero((found.positions < 0).any(axis=1)).tolist():
        if row not in found.skipped and uids[row] not in seen:
            seen.add(uids[row])
            rows.append(row)
    picked = np.array(rows, np.int64)
    return Plan(entries, uids, crops, seed, picked, found.positions[picked] < 0)


def stored_counts(uids: Sequence[str], crops: Sequence[Crop], store: SampleStore) -> tuple[int, int]:
    """(samples needed, samples stored) over the distinct images of `uids`."""
    return Lookup(RunKeys(crops).positions(uids, store), {}).counts(uids)
