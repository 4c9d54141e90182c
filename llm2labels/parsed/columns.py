"""Parsed columns beside the store: written once per part of a sample file, read by every later run.

Layout: `<store>/parsed/<version>/<sample file>/<start>-<end>/` (version.py) holds one part (parse.py):
`meta.npz` (record offsets, key checks, usable flags, occurrence starts, the form and label tables) and one
raw column per occurrence field: `form.u4`, and `product.f8`, `avg.f8`, `min.f8`, `max.f8` (a run reads
the form column and its aggregator's). A part is written into a temporary folder renamed into place, so a
reader never sees half of one; parts of one file tile its complete lines from byte 0, and a run parses
what they do not cover yet (a file that grew, a store parsed for the first time), in worker processes.

`Columns` loads every part's small arrays (~17 bytes a record) and maps each part's forms to one table for
the run; the occurrence columns stay on disk and are read per chunk of images (`gather`), in large reads.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llm2labels.parsed.parse import Part, parse_range, split_ranges
from llm2labels.parsed.version import parse_version
from llm2labels.postprocess import WORKER_STATE, in_workers
from llm2labels.scoring.aggregate import HOWS
from llm2labels.store.records import key_check, line_key

log = logging.getLogger("llm2labels")
PARSED = "parsed"
USED = ".used"  # in a version's folder: touched by every run that loads it
KEEP_UNUSED_S = 3600  # another version's columns are removed once no run has used them for this long, so that
# a run of another installation sharing the cache is not left without the columns it reads
_READ_GAP = 1 << 16  # occurrences: needed ranges closer than this are read in one go
RANGE_BYTES = 16 << 20  # a part: the records of about this many bytes of a sample file


def save_part(folder: Path, part: Part) -> Path:
    """Write `part` under `folder` (its sample file's folder) through a renamed temporary folder."""
    final = folder / f"{part.start}-{part.end}"
    tmp = folder / f".{final.name}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir(parents=True)
    try:
        tables = json.dumps({"forms": part.forms, "labels": part.labels}, ensure_ascii=True).encode()
        np.savez(tmp / "meta.npz", offsets=part.offsets, checks=part.checks, ok=part.ok, occ_start=part.occ_start,
                 tables=np.frombuffer(tables, np.uint8))
        part.form.astype("<u4").tofile(tmp / "form.u4")
        for how in HOWS:
            part.p[how].astype("<f8").tofile(tmp / f"{how}.f8")
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():  # not another process that wrote it first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


class ColumnsUnavailable(RuntimeError):
    """The columns a run is reading are gone or incomplete (removed from outside): it scores per occurrence."""


@dataclass
class PartMeta:
    """What a run keeps in memory of a part; its occurrence columns stay in `folder`."""

    file: int
    start: int
    end: int
    folder: Path
    offsets: np.ndarray
    checks: np.ndarray
    ok: np.ndarray
    occ_start: np.ndarray
    forms: list[str]  # emptied once Columns has mapped them to its tables (`form_ids`)
    labels: list[str]


def load_part(file: int, folder: Path, data: Path) -> PartMeta | None:
    """A part's small arrays, or None when its folder is not a complete part, or when `data` (its sample
    file) no longer holds its last record where it says (a file rewritten or edited in place since)."""
    try:
        start, end = (int(x) for x in folder.name.split("-"))
        with np.load(folder / "meta.npz") as meta:
            tables = json.loads(meta["tables"].tobytes())
            out = PartMeta(file, start, end, folder, meta["offsets"], meta["checks"], meta["ok"], meta["occ_start"],
                           tables["forms"], tables["labels"])
        n_occ = int(out.occ_start[-1]) if len(out.occ_start) else 0
        sizes_ok = (folder / "form.u4").stat().st_size == 4 * n_occ and all(
            (folder / f"{how}.f8").stat().st_size == 8 * n_occ for how in HOWS)
        if not sizes_ok or len(out.occ_start) != len(out.offsets) + 1 or not _agrees(out, data):
            return None
    except (OSError, ValueError, KeyError):
        return None
    return out


def _agrees(meta: PartMeta, data: Path) -> bool:
    """Whether `data` ends a line at the part's end and holds its last record's key there."""
    with open(data, "rb") as fh:
        fh.seek(meta.end - 1)
        if fh.read(1) != b"\n":
            return False
        if not len(meta.offsets):
            return True
        fh.seek(meta.start + int(meta.offsets[-1]))
        key = line_key(fh.readline())
    return key is not None and key_check(key) == int(meta.checks[-1])


def _chain(folder: Path, covered: int) -> tuple[list[Path], list[tuple[int, int]]]:
    """The parts of one file that tile [0, covered) from byte 0, and the ranges they leave to parse."""
    found: dict[int, list[tuple[int, Path]]] = {}
    if folder.is_dir():
        for sub in folder.iterdir():
            try:
                start, end = (int(x) for x in sub.name.split("-"))
            except ValueError:  # a temporary folder: another run's, or one left by a killed run
                if sub.name.endswith(".tmp") and _age(sub) > KEEP_UNUSED_S:
                    shutil.rmtree(sub, ignore_errors=True)
                continue
            if end <= covered:
                found.setdefault(start, []).append((end, sub))
    chain, missing, position = [], [], 0
    while position < covered:
        options = found.get(position)
        if options:
            end, sub = max(options)
            chain.append(sub)
            position = end
            continue
        later = [s for s in found if s > position]
        stop = min(later) if later else covered
        missing.append((position, stop))
        position = stop
    return chain, missing


def _parse_task(task: tuple[Path, Path, int, int]) -> Path:
    path, folder, start, end = task
    return save_part(folder, parse_range(path, start, end, WORKER_STATE["normalized"]))


class Columns:
    """The parsed columns of every sample file of a store, as of its last refresh (see the module docstring).

    Parses what is missing first, in `workers` processes."""

    def __init__(self, store_dir: Path, files: list[Path], covered: list[int], workers: int = 1) -> None:
        self.root = store_dir / PARSED / parse_version()
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            (self.root / USED).touch()
        except OSError:
            pass  # a read-only store: its columns are read, and no run of another version removes them
        self.parts: list[PartMeta] = []
        self.part_forms: list[np.ndarray] = []  # per part, its form ids in the run's table
        self.forms: list[str] = []  # the run's form table: surface form text
        self.labels: list[str] = []  # the run's label table: normalised label text
        self._form_ids: dict[str, int] = {}
        self._label_ids: dict[str, int] = {}
        self._form_label: list[int] = []
        # each part is loaded once: the valid ones now, the ones parsed below after the parse
        tasks, loaded, pending = [], set(), []
        for number, (path, end) in enumerate(zip(files, covered)):
            folder = self.root / path.name
            chain, missing = _chain(folder, end)
            broken = False
            for sub in chain:
                meta = load_part(number, sub, path)
                if meta is None:  # a part cut short by a full disk or damaged since: parsed again
                    shutil.rmtree(sub, ignore_errors=True)
                    broken = True
                else:
                    self._add(meta)
                    loaded.add(sub)
            if broken:
                chain, missing = _chain(folder, end)
            if broken or missing:
                pending.append((number, path, end))
            tasks += [(path, folder, a, b) for start, stop in missing
                      for a, b in split_ranges(path, start, stop, RANGE_BYTES)]
        self.parsed = self._parse(tasks, workers)
        for number, path, end in pending:
            chain, missing = _chain(self.root / path.name, end)
            if missing:
                self._incomplete(path)
            for sub in chain:
                if sub not in loaded:
                    meta = load_part(number, sub, path)
                    if meta is None:
                        self._incomplete(path)
                    self._add(meta)  # type: ignore[arg-type]
        del self._form_ids, self._label_ids
        self.form_label = np.array(self._form_label, np.uint32)
        # parts in (file, first byte) order, for the lookup by one sorted key (file << 40 | byte)
        order = sorted(range(len(self.parts)), key=lambda i: (self.parts[i].file, self.parts[i].start))
        self.parts = [self.parts[i] for i in order]
        self.part_forms = [self.part_forms[i] for i in order]
        self._part_keys = np.array([(m.file << 40) | m.start for m in self.parts], np.uint64)
        if self.parsed:
            self._prune()

    def _incomplete(self, path: Path) -> None:
        raise ColumnsUnavailable(f"the parsed columns of {path.name} under {self.root} are incomplete")

    def _parse(self, tasks: list[tuple[Path, Path, int, int]], workers: int) -> int:
        """Parse the missing ranges (in forked worker processes when there are several); returns how many."""
        if not tasks:
            return 0
        log.info("parsing %d ranges of sample files into columns (%s): once for this parser version",
                 len(tasks), self.root)
        for _ in in_workers(_parse_task, tasks, min(workers, len(tasks)), {"normalized": {}}):
            pass
        return len(tasks)

    def _prune(self) -> None:
        """Remove the columns of other parser versions that no run has used for KEEP_UNUSED_S: a cache, and
        a large one."""
        for other in self.root.parent.iterdir():
            if other != self.root and other.is_dir() and _age(other / USED, other) > KEEP_UNUSED_S:
                log.info("removing the parsed columns of another parser version, unused for an hour: %s", other)
                shutil.rmtree(other, ignore_errors=True)

    def _add(self, meta: PartMeta) -> None:
        """Add a loaded part, its forms mapped to the run's form and label tables: a part's own tables are
        then dropped, so memory holds each distinct string once, not once per part (the tables' order does
        not matter: every output is ordered by text or by position)."""
        ids = np.empty(len(meta.forms), np.uint32)
        for i, (form, label) in enumerate(zip(meta.forms, meta.labels)):
            fid = self._form_ids.get(form)
            if fid is None:
                fid = self._form_ids[form] = len(self.forms)
                self.forms.append(form)
                lid = self._label_ids.get(label)
                if lid is None:
                    lid = self._label_ids[label] = len(self.labels)
                    self.labels.append(label)
                self._form_label.append(lid)
            ids[i] = fid
        self.part_forms.append(ids)
        meta.forms, meta.labels = [], []
        self.parts.append(meta)

    def records(self, files: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(part number, record number in it) of sample lines by (file number, byte offset); -1 and -1 where
        no part holds a record there."""
        keys = (files.astype(np.uint64) << np.uint64(40)) | offsets.astype(np.uint64)
        part = np.searchsorted(self._part_keys, keys, "right").astype(np.int64) - 1
        record = np.full(len(keys), -1, np.int64)
        for p in np.unique(part[part >= 0]).tolist():
            meta, at = self.parts[p], np.flatnonzero(part == p)
            if not len(meta.offsets):
                continue
            local = offsets[at].astype(np.int64) - meta.start
            inside = (files[at] == meta.file) & (local >= 0) & (local < meta.end - meta.start)
            found = np.searchsorted(meta.offsets, local.clip(0, (1 << 32) - 1).astype(np.uint32))
            found = np.minimum(found, len(meta.offsets) - 1)
            hit = inside & (meta.offsets[found].astype(np.int64) == local)
            record[at[hit]] = found[hit]
        part[record < 0] = -1
        return part, record

    def gather(self, part: np.ndarray, record: np.ndarray, how: str
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """For samples given by (part, record), all found: (usable flags, key checks, occurrence counts,
        global form ids, probabilities under `how`), the occurrences in the samples' order."""
        n = len(part)
        ok, checks, counts = np.zeros(n, bool), np.zeros(n, np.uint64), np.zeros(n, np.int64)
        lo = np.zeros(n, np.int64)
        for p in np.unique(part).tolist():
            meta, at = self.parts[p], np.flatnonzero(part == p)
            r = record[at]
            ok[at], checks[at] = meta.ok[r], meta.checks[r]
            lo[at] = meta.occ_start[r]
            counts[at] = meta.occ_start[r + 1].astype(np.int64) - lo[at]
        total = int(counts.sum())
        forms, probs = np.empty(total, np.uint32), np.empty(total, np.float64)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]) if n else np.empty(0, np.int64)
        for p in np.unique(part).tolist():
            at = np.flatnonzero(part == p)
            self._read(p, how, lo[at], counts[at], starts[at], forms, probs)
        return ok, checks, counts, forms, probs

    def _read(self, p: int, how: str, lo: np.ndarray, counts: np.ndarray, dest: np.ndarray,
              forms: np.ndarray, probs: np.ndarray) -> None:
        """Read part p's occurrences [lo, lo + counts) into forms/probs at `dest`, in a few large reads."""
        meta = self.parts[p]
        order = np.argsort(lo, kind="stable")
        lo, counts, dest = lo[order], counts[order], dest[order]
        hi = lo + counts
        # runs of needed ranges with gaps below _READ_GAP are read at once
        reach = np.maximum.accumulate(hi)
        breaks = np.flatnonzero(lo[1:] > reach[:-1] + _READ_GAP) + 1
        for a, b in zip(np.concatenate([[0], breaks]).tolist(), np.concatenate([breaks, [len(lo)]]).tolist()):
            first, last = int(lo[a]), int(reach[b - 1])
            if last <= first:
                continue
            try:
                block_forms = np.fromfile(meta.folder / "form.u4", "<u4", last - first, offset=4 * first)
                block_p = np.fromfile(meta.folder / f"{how}.f8", "<f8", last - first, offset=8 * first)
            except FileNotFoundError as e:
                raise ColumnsUnavailable(f"a part of the parsed columns is gone: {e.filename}") from e
            if len(block_forms) != last - first or len(block_p) != last - first:
                raise ColumnsUnavailable(f"a part of the parsed columns was cut short: {meta.folder}")
            index = _ranges(lo[a:b] - first, counts[a:b])
            target = _ranges(dest[a:b], counts[a:b])
            forms[target] = self.part_forms[p][block_forms[index]]
            probs[target] = block_p[index]


def _age(path: Path, fallback: Path | None = None) -> float:
    """Seconds since `path` (else `fallback`) was last modified; 0 when neither can be read."""
    for candidate in (path, fallback):
        if candidate is not None:
            try:
                return time.time() - candidate.stat().st_mtime
            except OSError:
                pass
    return 0.0


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The concatenation of arange(s, s + c) for each (s, c)."""
    counts = counts.astype(np.int64)
    total = int(counts.sum())
    if not total:
        return np.empty(0, np.int64)
    offsets = np.repeat(starts.astype(np.int64) - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    return offsets + np.arange(total)


def parsed_size(root: Path) -> int:
    """Bytes under a store's parsed columns (all versions)."""
    return sum(f.stat().st_size for f in (root / PARSED).rglob("*") if f.is_file())
