"""The store's index: where each key's record is, as compact arrays, persisted beside each sample file.

`index/samples-X.jsonl.idx` holds, for the first `covered` bytes of `samples-X.jsonl`, one entry per complete
record line: the key's 64-bit hash (`records.key_hash`), the line's byte offset and its length, sorted by
(hash, offset), stored as three columns after a 32-byte header (magic, covered, count). It is written once,
through a temporary file renamed into place, so a reader never sees half of one: by the writer when it
closes the sample file, or by a reader that had to scan the file (a store written before indexes existed, a
file whose writer was killed). Bytes past `covered` (a file still being written, or one a resumed writer
appended to) are scanned at every load, from `covered` on. A missing, short, foreign or stale index (its last
line not where it says) is ignored and rebuilt by scanning: the sample files stay the only source of truth.

In memory (`StoreIndex`): the hashes of every file sorted into one array, and each entry's offset and length
in file order, linked by the sort's permutation: 24 bytes per record (1M images x 8 samples: ~190 MB), plus a
directory of hash buckets (~2 bytes per record) that makes a lookup a gather or two. Two lines with one hash
(a key stored twice by racing runs, or two keys whose hashes collide) make the hash ambiguous: it is
resolved by reading those lines' keys. A reader checks the key of every line it reads (`files.StoreReader`),
so a key that is absent but shares its hash with a stored one is found out there and marked ambiguous too
(`mark_ambiguous`).
"""

from __future__ import annotations

import os
import uuid
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llm2labels.store.records import key_hash, line_key

SUFFIX = ".idx"
INDEX_DIR = "index"
_MAGIC = b"llm2lbl-index-v1"  # 16 bytes; then covered bytes and entry count, little-endian uint64
_HEADER = len(_MAGIC) + 16
_CHUNK = 1 << 24  # bytes read at a time when scanning a sample file


@dataclass
class Entries:
    """One file's index entries as columns: key hashes, line offsets and lengths."""

    hashes: np.ndarray  # uint64
    offsets: np.ndarray  # uint64
    lengths: np.ndarray  # uint32

    @classmethod
    def empty(cls) -> Entries:
        return cls(np.empty(0, np.uint64), np.empty(0, np.uint64), np.empty(0, np.uint32))

    def __len__(self) -> int:
        return len(self.hashes)

    def sorted(self) -> Entries:
        """By (hash, offset): the order of an index file."""
        order = np.lexsort((self.offsets, self.hashes))
        return Entries(self.hashes[order], self.offsets[order], self.lengths[order])

    def __add__(self, other: Entries) -> Entries:
        return Entries(*(np.concatenate([a, b]) for a, b in
                         ((self.hashes, other.hashes), (self.offsets, other.offsets), (self.lengths, other.lengths))))

    def without(self, offsets: list[int]) -> Entries:
        keep = ~np.isin(self.offsets, np.array(offsets, np.uint64))
        return Entries(self.hashes[keep], self.offsets[keep], self.lengths[keep])


def index_path(data: Path) -> Path:
    """Where `data`'s index lives: `index/<data's name>.idx` beside it (a glob of the samples never meets it)."""
    return data.parent / INDEX_DIR / (data.name + SUFFIX)


def write_index(data: Path, entries: Entries, covered: int) -> bool:
    """Persist `entries` (any order) for the first `covered` bytes of `data`; False if the disk refused (the
    index is a shortcut: the next load scans instead)."""
    entries = entries.sorted()  # read_index's callers rely on this order
    path = index_path(data)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    header = _MAGIC + np.array([covered, len(entries)], "<u8").tobytes()
    try:
        path.parent.mkdir(exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(header)
            for column, dtype in ((entries.hashes, "<u8"), (entries.offsets, "<u8"), (entries.lengths, "<u4")):
                fh.write(column.astype(dtype, copy=False).tobytes())
        os.replace(tmp, path)
        return True
    except OSError:
        return False
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass


def read_index(data: Path) -> tuple[Entries, int] | None:
    """(entries, covered bytes) of `data`'s index, or None when there is none usable."""
    path = index_path(data)
    try:
        with open(path, "rb") as fh:
            header = fh.read(_HEADER)
            if len(header) != _HEADER or header[: len(_MAGIC)] != _MAGIC:
                return None
            covered, count = (int(v) for v in np.frombuffer(header[len(_MAGIC):], "<u8"))
            columns = [np.fromfile(fh, dtype, count) for dtype in ("<u8", "<u8", "<u4")]
            if fh.read(1):
                return None  # longer than it says
    except (OSError, ValueError):
        return None
    entries = Entries(*columns)
    if any(len(c) != count for c in columns) or covered > data.stat().st_size:
        return None
    if np.any(entries.hashes[1:] < entries.hashes[:-1]) or not _agrees(data, entries, covered):
        return None
    return entries, covered


def _agrees(data: Path, entries: Entries, covered: int) -> bool:
    """Whether `data` still holds, where the index says, its last indexed line (a file edited in place, its
    lines shifted, fails this; one edited without shifting fails at the read of the edited line)."""
    if covered == 0:
        return True
    last = int(np.argmax(entries.offsets)) if len(entries) else -1
    start = int(entries.offsets[last]) if last >= 0 else covered - 1
    try:
        with open(data, "rb") as fh:
            fh.seek(start)
            tail = fh.read(covered - start)
    except OSError:
        return False
    if not tail.endswith(b"\n"):
        return False
    if last < 0:
        return True
    line = tail[: int(entries.lengths[last])]
    key = line_key(line)
    return line.endswith(b"\n") and key is not None and key_hash(key) == int(entries.hashes[last])


def scan(data: Path, start: int = 0) -> tuple[Entries, int]:
    """Entries of the complete record lines of `data` from byte `start` on, and the offset after the last
    complete line. Lines that are cut (no newline), zero-filled (a crashed machine's file system) or do not
    start like a record are skipped."""
    hashes, offsets, lengths = array("Q"), array("Q"), array("L")
    position = start
    tail = b""
    with open(data, "rb") as fh:
        fh.seek(start)
        while chunk := fh.read(_CHUNK):
            lines = (tail + chunk).split(b"\n")
            tail = lines.pop()
            for line in lines:
                size = len(line) + 1
                key = line_key(line) if b"\0" not in line else None
                if key is not None:
                    hashes.append(key_hash(key))
                    offsets.append(position)
                    lengths.append(size)
                position += size
    return from_arrays(hashes, offsets, lengths), position


def from_arrays(hashes: array, offsets: array, lengths: array) -> Entries:
    """Entries from the `array`s a writer or a scan fills, one record at a time."""
    return Entries(np.frombuffer(hashes, np.uint64).copy(), np.frombuffer(offsets, np.uint64).copy(),
                   np.array(lengths, np.uint32))


def load_entries(data: Path) -> tuple[Entries, int, int, bool, bool]:
    """`data`'s entries, sorted by (hash, offset): its index, plus a scan of the bytes it does not cover;
    what was scanned is written back to the index (when it can be). Returns (entries, the end of its last
    complete line, records scanned, whether a usable index existed (or the file is empty), whether the
    index is now up to date on disk)."""
    size = data.stat().st_size
    known = read_index(data)
    entries, covered = known if known is not None else (Entries.empty(), 0)
    scanned, saved = 0, True
    if covered < size:
        more, covered = scan(data, covered)
        scanned = len(more)
        entries = (entries + more).sorted()
        if scanned:
            saved = write_index(data, entries, covered)
    return entries, covered, scanned, known is not None or size == 0, saved


class StoreIndex:
    """Key hash -> (file number, offset, length) over `files`, with the damaged lines left out."""

    def __init__(self, files: list[Path], damaged: set[tuple[str, int]]) -> None:
        self.files = files
        self.scanned = 0  # records found by scanning (not in an index file) at this load
        self.unindexed = 0  # files that had no usable index file at all
        self.unsaved = 0  # files scanned whose index could not be written (a read-only store)
        self.covered: list[int] = []  # per file, the end of its last complete line
        parts = []
        for data in files:
            entries = self._entries(data)
            bad = [offset for name, offset in damaged if name == data.name]
            parts.append(entries.without(bad) if bad else entries)
        # the entries in file order (each file's sorted by (hash, offset)), and where each file's begin
        self._file_starts = np.cumsum([0] + [len(e) for e in parts], dtype=np.int64)
        unsorted = np.concatenate([e.hashes for e in parts]) if parts else np.empty(0, np.uint64)
        self._offsets = np.concatenate([e.offsets for e in parts]) if parts else np.empty(0, np.uint64)
        self._lengths = np.concatenate([e.lengths for e in parts]) if parts else np.empty(0, np.uint32)
        del parts
        # A stable sort (timsort, merging the files' sorted runs) puts, among equal hashes, the earlier file,
        # then the earlier line, first: it wins.
        order = np.argsort(unsorted, kind="stable")
        self.hashes = unsorted[order]
        del unsorted
        self._order = order.astype(np.uint32) if len(order) < 1 << 32 else order
        del order
        same = np.flatnonzero(self.hashes[1:] == self.hashes[:-1])
        self._ambiguous: dict[int, dict[str, int] | None] = {int(h): None for h in self.hashes[same]}
        # positions whose hash is ambiguous, so a lookup tells in one gather which answers need a key
        self._flagged = np.zeros(len(self.hashes), bool)
        self._flagged[same] = self._flagged[same + 1] = True
        self._directory()

    @property
    def nbytes(self) -> int:
        """Bytes held, all arrays together."""
        return sum(a.nbytes for a in (self.hashes, self._order, self._offsets, self._lengths, self._flagged,
                                      self._start, self._file_starts))

    def locations(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(file numbers, offsets, lengths) of index positions (any shape; each >= 0)."""
        entry = self._order[positions]
        files = (np.searchsorted(self._file_starts, entry, "right") - 1).astype(np.uint32)
        return files, self._offsets[entry], self._lengths[entry]

    def location(self, position: int) -> tuple[int, int, int]:
        """(file number, offset, length) of one index position."""
        files, offsets, lengths = self.locations(np.array([position]))
        return int(files[0]), int(offsets[0]), int(lengths[0])

    def _directory(self) -> None:
        """Bucket b (the hash's top bits) holds positions [start[b], start[b + 1]): about 2 each, so a lookup
        is a gather or two rather than a binary search (whose dependent steps miss the cache at every level
        once the arrays outgrow it)."""
        n = len(self.hashes)
        bits = max(1, min(n.bit_length() - 1, 40))
        self._shift = np.uint64(64 - bits)
        counts = np.bincount((self.hashes >> self._shift).astype(np.intp), minlength=1 << bits)
        self._start = np.zeros((1 << bits) + 1, np.uint32 if n < 1 << 32 else np.int64)
        np.cumsum(counts, out=self._start[1:])

    def _entries(self, data: Path) -> np.ndarray:
        entries, covered, scanned, had_index, saved = load_entries(data)
        self.covered.append(covered)
        self.scanned += scanned
        self.unindexed += not had_index
        self.unsaved += not saved
        return entries

    def __len__(self) -> int:
        """Distinct stored keys: distinct hashes, plus the extra keys of the hashes that several lines share
        (resolved by reading those lines' keys: a key stored twice, or two keys that collide)."""
        distinct = len(self.hashes) - int(np.count_nonzero(self.hashes[1:] == self.hashes[:-1]))
        return distinct + sum(max(len(self._resolved(h)) - 1, 0) for h in list(self._ambiguous))

    def read_key(self, position: int) -> str:
        """The key of the line at `position` (an index into the sorted arrays)."""
        f, offset, length = self.location(position)
        with open(self.files[f], "rb") as fh:
            fh.seek(offset)
            line = fh.read(length)
        return line_key(line) or ""

    def mark_ambiguous(self, hashes: Iterable[int]) -> None:
        """Resolve these hashes by key from now on (a reader found a line whose key was not the one asked)."""
        for h in hashes:
            self._ambiguous.setdefault(int(h), None)
            left = int(np.searchsorted(self.hashes, np.uint64(h), "left"))
            self._flagged[left:int(np.searchsorted(self.hashes, np.uint64(h), "right"))] = True

    def _resolved(self, h: int) -> dict[str, int]:
        """key -> position of its first line, for the lines of an ambiguous hash."""
        table = self._ambiguous[h]
        if table is None:
            left = int(np.searchsorted(self.hashes, np.uint64(h), "left"))
            right = int(np.searchsorted(self.hashes, np.uint64(h), "right"))
            table = {}
            for position in range(left, right):
                table.setdefault(self.read_key(position), position)
            self._ambiguous[h] = table
        return table

    def find(self, hashes: np.ndarray, key_of: Callable[[int], str]) -> np.ndarray:
        """Positions of `hashes` (any shape) in the sorted arrays, -1 where absent. `key_of(i)` gives the key
        of flat query i; it is asked only for hashes that are ambiguous."""
        flat = np.ascontiguousarray(hashes, dtype=np.uint64).ravel()
        out = self._first(flat)
        found = np.flatnonzero(out >= 0)
        for i in found[self._flagged[out[found]]].tolist():
            out[i] = self._resolved(int(flat[i])).get(key_of(i), -1)
        return out.reshape(np.shape(hashes))

    def _first(self, flat: np.ndarray) -> np.ndarray:
        """The first position holding each hash, -1 where none: a probe of its bucket, all queries at once."""
        out = np.full(len(flat), -1, np.int64)
        if not len(self.hashes):
            return out
        bucket = (flat >> self._shift).astype(np.intp)
        query = np.arange(len(flat))
        position, end = self._start[bucket].astype(np.int64), self._start[bucket + 1]
        while len(query):
            live = position < end
            query, position, end = query[live], position[live], end[live]
            held = self.hashes[position]
            wanted = flat[query]
            hit = held == wanted
            out[query[hit]] = position[hit]
            on = held < wanted  # a bucket is sorted: past the hash, it is absent
            query, position, end = query[on], position[on] + 1, end[on]
        return out

    def find_key(self, key: str) -> int:
        """The position of one key, -1 when it is not stored."""
        return int(self.find(np.array([key_hash(key)], np.uint64), lambda _: key)[0])
