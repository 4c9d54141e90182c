"""The sample files themselves: a writer appending to a file of its own, a reader by location."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable
from json.decoder import scanstring as _scanstring
from pathlib import Path
from typing import IO, Any

from llm2labels.errors import StorageError
from llm2labels.store.records import DamagedRecord, sample_problem
from llm2labels.textio import json_line

# What post-processing decodes of a sample record (StoreReader.read_sample), in predict.py's key order.
_SAMPLE_FIELDS = ('"text":"', '"token_ends":[', '"logprobs":[')
_DECODER = json.JSONDecoder()


class StoreWriter:
    """Appends records to one new file; `flush` after each batch makes them survive a killed process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[str] | None = None
        self.written = 0

    def write(self, records: Iterable[dict[str, Any]]) -> None:
        """Append and flush; a disk that refuses (full, read-only) raises StorageError, and whatever reached
        the file before is kept (a line cut short is ignored by readers, like one cut by a kill)."""
        try:
            if self._fh is None:
                self._fh = open(self.path, "a", encoding="utf-8")
            for record in records:
                # One write per record, key first: readers find keys without parsing the JSON.
                self._fh.write(json_line(record))
                self.written += 1
            self._fh.flush()
        except OSError as e:
            self._abandon()
            raise StorageError.writing(self.path, e, ": the samples written before are kept; free space or "
                                       "give a writable cache.dir, then run again to resume") from e

    def _abandon(self) -> None:
        """Drop the handle after a failed write without flushing again (that would fail the same way)."""
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError:
                pass
            self._fh = None

    def close(self) -> None:
        if self._fh is not None:
            fh, self._fh = self._fh, None
            try:
                fh.close()
            except OSError as e:
                raise StorageError.writing(self.path, e) from e


def new_writer(store_dir: Path, tag: str = "0") -> StoreWriter:
    """A writer of a new sample file of its own: `tag` (the rank), this process and a random part name it."""
    return StoreWriter(store_dir / f"samples-{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl")


class StoreReader:
    """Records by location (file number, byte offset): what `SampleStore.get` reads with, and what a worker
    process is handed instead of the whole index. Picklable; files open lazily, one handle each."""

    def __init__(self, files: list[Path]) -> None:
        self.files = files
        self._handles: dict[int, IO[bytes]] = {}

    def _line(self, loc: tuple[int, int]) -> bytes:
        f, offset = loc
        fh = self._handles.get(f)
        if fh is None:
            fh = self._handles[f] = open(self.files[f], "rb")
        fh.seek(offset)  # records of one image sit together: this seek stays inside the read buffer
        return fh.readline()

    def read(self, loc: tuple[int, int]) -> dict[str, Any]:
        """The record at `loc`; DamagedRecord when the line is not a JSON object."""
        try:
            record = json.loads(self._line(loc))
        except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise DamagedRecord(f"{self.files[loc[0]].name} at byte {loc[1]}: {e}") from e
        if not isinstance(record, dict):
            raise DamagedRecord(f"{self.files[loc[0]].name} at byte {loc[1]}: not a JSON object")
        return record

    def read_sample(self, loc: tuple[int, int]) -> dict[str, Any]:
        """Only a sample's text, token_ends and logprobs: what post-processing reads, decoded in ~60% of
        `read`'s time (token ids, seeds and the rest stay undecoded). Falls back to `read` for any line that
        does not hold each of the three exactly once, in the writer's order and compact separators.
        DamagedRecord when the line is not a sample: not JSON, a field missing, or of the wrong type."""
        try:
            line = self._line(loc).decode("utf-8")
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
            raise DamagedRecord(f"{self.files[loc[0]].name} at byte {loc[1]}: {e}") from e
        problem = sample_problem(sample)
        if problem:
            raise DamagedRecord(f"{self.files[loc[0]].name} at byte {loc[1]}: {problem}")
        return sample

    def close(self) -> None:
        for fh in self._handles.values():
            fh.close()
        self._handles.clear()

    def __getstate__(self) -> dict[str, Any]:
        return {"files": self.files}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.files, self._handles = state["files"], {}
