"""The sample files themselves: a writer appending to a file of its own, a reader by location."""

from __future__ import annotations

import json
import os
import uuid
from array import array
from collections.abc import Iterable, Sequence
from json.decoder import scanstring as _scanstring
from pathlib import Path
from typing import IO, Any

from llm2labels.errors import StorageError
from llm2labels.store.index import from_arrays, load_entries, write_index
from llm2labels.store.records import KEY_PREFIX, DamagedRecord, key_hash, line_key, sample_problem
from llm2labels.textio import json_line

# What post-processing decodes of a sample record (decode_sample), in predict.py's key order.
_SAMPLE_FIELDS = ('"text":"', '"token_ends":[', '"logprobs":[')
_DECODER = json.JSONDecoder()


class StoreWriter:
    """Appends records to one file of its own; `flush` after each batch makes them survive a killed process.
    At `close` it writes the file's index (index.py) from what it wrote, so no reader has to scan the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[bytes] | None = None
        self.written = 0
        self._start = 0  # the file's size when this writer opened it (a resumed file: its old records)
        self._position = 0
        self._hashes, self._offsets, self._lengths = array("Q"), array("Q"), array("L")

    def write(self, records: Iterable[dict[str, Any]]) -> None:
        """Append and flush; a disk that refuses (full, read-only) raises StorageError, and whatever reached
        the file before is kept (a line cut short is ignored by readers, like one cut by a kill)."""
        try:
            if self._fh is None:
                self._open()
            for record in records:
                # One write per record, key first: readers find keys without parsing the JSON.
                data = json_line(record).encode("utf-8")
                self._fh.write(data)
                self._hashes.append(key_hash(record["key"]))
                self._offsets.append(self._position)
                self._lengths.append(len(data))
                self._position += len(data)
                self.written += 1
            self._fh.flush()
        except OSError as e:
            self._abandon()
            raise StorageError.writing(self.path, e, ": the samples written before are kept; free space or "
                                       "give a writable cache.dir, then run again to resume") from e

    def _open(self) -> None:
        self._fh = open(self.path, "ab")
        self._start = self._position = self._fh.tell()
        if self._start:  # a file resumed: end a line torn by a kill, so it does not swallow the next record
            with open(self.path, "rb") as fh:
                fh.seek(self._start - 1)
                if fh.read(1) != b"\n":
                    self._fh.write(b"\n")
                    self._position += 1

    def _abandon(self) -> None:
        """Drop the handle after a failed write without flushing again (that would fail the same way)."""
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError:
                pass
            self._fh = None

    def close(self) -> None:
        if self._fh is None:
            return
        fh, self._fh = self._fh, None
        try:
            fh.close()
        except OSError as e:
            raise StorageError.writing(self.path, e) from e
        if self._start:  # a resumed file: its old index, extended by a scan (as a reader would)
            load_entries(self.path)
            return
        write_index(self.path, from_arrays(self._hashes, self._offsets, self._lengths), self._position)


def new_writer(store_dir: Path, tag: str = "0") -> StoreWriter:
    """A writer of a new sample file of its own: `tag` (the rank), this process and a random part name it."""
    return StoreWriter(store_dir / f"samples-{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl")


class KeyMismatch(LookupError):
    """The line at a location holds another key than the one asked for: two keys whose hashes collide."""


Location = tuple[int, int, int]  # (file number, byte offset, length)


class StoreReader:
    """Records by location (file number, byte offset, length): what `SampleStore.get` reads with, and what a
    worker process is handed instead of the whole index. Picklable; files open lazily, one handle each.

    Given the key a location should hold, a read checks it, so a key whose hash collides with a stored one
    is never mistaken for it (KeyMismatch)."""

    def __init__(self, files: list[Path]) -> None:
        self.files = files
        self._handles: dict[int, IO[bytes]] = {}

    def _handle(self, f: int) -> IO[bytes]:
        fh = self._handles.get(f)
        if fh is None:
            fh = self._handles[f] = open(self.files[f], "rb")
        return fh

    def _line(self, loc: Location, key: str | None) -> bytes:
        f, offset, length = loc
        fh = self._handle(f)
        fh.seek(offset)
        line = fh.read(length)
        _check_key(line, key, self.files[f], offset)
        return line

    def check(self, loc: Location, key: str) -> None:
        """KeyMismatch unless the line at `loc` holds `key`."""
        f, offset, _ = loc
        fh = self._handle(f)
        fh.seek(offset)
        _check_key(fh.read(len(KEY_PREFIX) + 4 * len(key) + 8), key, self.files[f], offset)

    def read(self, loc: Location, key: str | None = None) -> dict[str, Any]:
        """The record at `loc`; DamagedRecord when the line is not a JSON object."""
        return _record(self._line(loc, key), self.files[loc[0]], loc[1])

    def read_lines(self, locs: Sequence[Location], gap: int = 1 << 20) -> list[bytes]:
        """The lines at `locs`, in their order, read in file order with one read per run of nearby lines
        (lines less than `gap` bytes apart): large sequential reads instead of a seek per record."""
        out: list[bytes] = [b""] * len(locs)
        order = sorted(range(len(locs)), key=lambda i: (locs[i][0], locs[i][1]))
        start = 0
        while start < len(order):
            f, first, _ = locs[order[start]]
            stop, end = start, first
            while stop < len(order):
                g, offset, length = locs[order[stop]]
                if g != f or offset > end + gap:
                    break
                end = max(end, offset + length)
                stop += 1
            fh = self._handle(f)
            fh.seek(first)
            block = fh.read(end - first)
            for i in order[start:stop]:
                _, offset, length = locs[i]
                out[i] = block[offset - first: offset - first + length]
            start = stop
        return out

    def close(self) -> None:
        for fh in self._handles.values():
            fh.close()
        self._handles.clear()

    def __getstate__(self) -> dict[str, Any]:
        return {"files": self.files}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.files, self._handles = state["files"], {}


def _check_key(line: bytes, key: str | None, path: Path, offset: int) -> None:
    if key is None:
        return
    expected = KEY_PREFIX + key.encode("utf-8", "surrogatepass") + b'"'
    if not line.startswith(expected) and line_key(line) != key:  # (the second: a key written with escapes)
        raise KeyMismatch(f"{path.name} at byte {offset} holds another key than {key!r}")


def _record(line: bytes, path: Path, offset: int) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise DamagedRecord(f"{path.name} at byte {offset}: {e}") from e
    if not isinstance(record, dict):
        raise DamagedRecord(f"{path.name} at byte {offset}: not a JSON object")
    return record


def decode_sample(raw: bytes, path: Path, offset: int, key: str | None = None) -> dict[str, Any]:
    """A sample line's text, token_ends and logprobs, decoded in ~60% of a full `json.loads` (token ids,
    seeds and the rest stay undecoded); the full decode for any line that does not hold each of the three
    exactly once, in the writer's order and compact separators. DamagedRecord when the line is no sample;
    KeyMismatch when `key` is given and the line holds another."""
    _check_key(raw, key, path, offset)
    try:
        line = raw.decode("utf-8")
        sample = None
        # A quote inside a JSON string is escaped, so `"text":"` can only be a key (at any depth)
        if all(line.count(needle) == 1 for needle in _SAMPLE_FIELDS):
            i = line.find(_SAMPLE_FIELDS[0])
            j = line.find(_SAMPLE_FIELDS[1], i)
            k = line.find(_SAMPLE_FIELDS[2], j)
            if 0 <= i < j < k:
                text = _scanstring(line, i + len(_SAMPLE_FIELDS[0]))[0]
                ends = _DECODER.raw_decode(line, j + len(_SAMPLE_FIELDS[1]) - 1)[0]
                logprobs = _DECODER.raw_decode(line, k + len(_SAMPLE_FIELDS[2]) - 1)[0]
                sample = {"text": text, "token_ends": ends, "logprobs": logprobs}
        if sample is None:
            sample = json.loads(line)
    except ValueError as e:
        raise DamagedRecord(f"{path.name} at byte {offset}: {e}") from e
    problem = sample_problem(sample)
    if problem:
        raise DamagedRecord(f"{path.name} at byte {offset}: {problem}")
    return sample
