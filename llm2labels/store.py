"""The sample store: every generated sample on disk as soon as it exists, reusable by any later run.

Layout under `cache.dir`:
    <model-slug>-<fingerprint hash>/fingerprint.json    what produced these samples (model, prompt, sampling, ...)
    <model-slug>-<fingerprint hash>/samples-*.jsonl      one JSON record per line, key first
    filehash.jsonl                                       content hash of each input file by (path, size, mtime)

A record's key is `<image uid>|<crop key>|<sample index>` (or `<image uid>|skip` for an unreadable file), so a
sample is identified by everything that changes it: the fingerprint (directory), the image content, the crop
and the sample index (the seed is a function of those and the run seed, which is part of the fingerprint).
Each writer appends to a file of its own and never reopens an old one, so a record torn by a kill can only be
the last line of a file; readers ignore lines that do not end in a newline. Duplicate keys (two runs racing
on the same store) are harmless: the first one read wins, and both hold the same sample.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from collections.abc import Iterable, Iterator
from json.decoder import scanstring as _scanstring
from pathlib import Path
from typing import IO, Any

from llm2labels.data.images import file_uid
from llm2labels.errors import ImageError

_KEY_PREFIX = b'{"key":"'
# What post-processing decodes of a sample record (StoreReader.read_sample), in predict.py's key order.
_SAMPLE_FIELDS = ('"text":"', '"token_ends":[', '"logprobs":[')
_DECODER = json.JSONDecoder()


def sample_key(image: str, crop: str, sample: int) -> str:
    return f"{image}|{crop}|{sample}"


def skip_key(image: str) -> str:
    return f"{image}|skip"


def fingerprint_digest(fingerprint: dict[str, Any]) -> str:
    text = json.dumps(fingerprint, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


class StoreWriter:
    """Appends records to one new file; `flush` after each batch makes them survive a killed process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[str] | None = None
        self.written = 0

    def write(self, records: Iterable[dict[str, Any]]) -> None:
        if self._fh is None:
            self._fh = open(self.path, "a", encoding="utf-8")
        for record in records:
            # One write per record, key first: readers find keys without parsing the JSON.
            self._fh.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
            self.written += 1
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


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
        return json.loads(self._line(loc))

    def read_sample(self, loc: tuple[int, int]) -> dict[str, Any]:
        """Only a sample's text, token_ends and logprobs: what post-processing reads, decoded in ~60% of
        `read`'s time (token ids, seeds and the rest stay undecoded). Falls back to `read` for any line that
        does not hold each of the three exactly once, in the writer's order and compact separators."""
        line = self._line(loc).decode("utf-8")
        # A quote inside a JSON string is escaped, so `"text":"` can only be a key (at any depth): once = ours
        if all(line.count(needle) == 1 for needle in _SAMPLE_FIELDS):
            i = line.find(_SAMPLE_FIELDS[0])
            j = line.find(_SAMPLE_FIELDS[1], i)
            k = line.find(_SAMPLE_FIELDS[2], j)
            if 0 <= i < j < k:
                text = _scanstring(line, i + len(_SAMPLE_FIELDS[0]))[0]
                ends = _DECODER.raw_decode(line, j + len(_SAMPLE_FIELDS[1]) - 1)[0]
                logprobs = _DECODER.raw_decode(line, k + len(_SAMPLE_FIELDS[2]) - 1)[0]
                return {"text": text, "token_ends": ends, "logprobs": logprobs}
        return json.loads(line)

    def close(self) -> None:
        for fh in self._handles.values():
            fh.close()
        self._handles.clear()

    def __getstate__(self) -> dict[str, Any]:
        return {"files": self.files}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.files, self._handles = state["files"], {}


class SampleStore:
    """Samples of one fingerprint under `root`; see the module docstring for the layout and guarantees."""

    def __init__(self, root: str | Path, fingerprint: dict[str, Any]) -> None:
        self.root = Path(root).expanduser()
        model = str(fingerprint.get("model", "model"))
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", model).strip("_")[-48:] or "model"
        self.dir = self.root / f"{slug}-{fingerprint_digest(fingerprint)}"
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "fingerprint.json"
        if not meta.exists():
            tmp = meta.with_suffix(f".{uuid.uuid4().hex}.tmp")
            tmp.write_text(json.dumps(fingerprint, indent=1, sort_keys=True, default=str))
            os.replace(tmp, meta)
        self._index: dict[str, tuple[int, int]] = {}
        self._reader = StoreReader([])

    def writer(self, tag: str = "0") -> StoreWriter:
        return StoreWriter(self.dir / f"samples-{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl")

    def refresh(self) -> dict[str, tuple[int, int]]:
        """(Re)build the key -> (file, byte offset) index from every complete, undamaged line on disk."""
        self.close()
        files = sorted(self.dir.glob("samples-*.jsonl"))
        index: dict[str, tuple[int, int]] = {}
        start = len(_KEY_PREFIX)
        for f, path in enumerate(files):
            with open(path, "rb") as fh:
                offset = 0
                for line in fh:
                    # NUL bytes: a range a crashed machine's file system left zero-filled (JSON holds none)
                    if line.endswith(b"\n") and line.startswith(_KEY_PREFIX) and b"\0" not in line:
                        key = line[start : line.find(b'"', start)].decode("utf-8", "replace")
                        if key not in index:
                            index[key] = (f, offset)
                    offset += len(line)
        self._index = index
        self._reader = StoreReader(files)
        return index

    def keys(self) -> set[str]:
        return set(self._index)

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def __len__(self) -> int:
        return len(self._index)

    def locate(self, key: str) -> tuple[int, int] | None:
        """Where `key`'s record is, for `reader()`; None when it is not stored."""
        return self._index.get(key)

    def reader(self) -> StoreReader:
        """A new reader over the files of the last `refresh` (for another process, or another thread)."""
        return StoreReader(list(self._reader.files))

    def get(self, key: str) -> dict[str, Any] | None:
        """The record stored under `key`, or None. Call `refresh` first to see other writers' records."""
        loc = self._index.get(key)
        return None if loc is None else self._reader.read(loc)

    def close(self) -> None:
        self._reader.close()


class FileHashes:
    """Content hashes of input files, remembered by (absolute path, size, mtime) so reruns read no pixels."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self._known: dict[tuple[str, int, int], str] = {}
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines(keepends=True):
                if line.endswith("\n"):
                    try:
                        r = json.loads(line)
                        self._known[(r["path"], r["size"], r["mtime_ns"])] = r["uid"]
                    except (ValueError, KeyError, TypeError):
                        continue

    def uids(self, paths: Iterable[Path]) -> Iterator[str]:
        """The content uid of each path, hashing only files not seen before (or changed since)."""
        new: list[str] = []
        try:
            for p in paths:
                try:
                    st = p.stat()
                    k = (str(p.resolve()), st.st_size, st.st_mtime_ns)
                    uid = self._known.get(k) or file_uid(p)
                except (OSError, ImageError):
                    # Unreadable now: an id from the path, never remembered; loading it records the skip.
                    yield "unreadable-" + hashlib.blake2b(str(p).encode(), digest_size=8).hexdigest()
                    continue
                if k not in self._known:
                    self._known[k] = uid
                    new.append(json.dumps({"path": k[0], "size": k[1], "mtime_ns": k[2], "uid": uid}) + "\n")
                yield uid
        finally:
            if new:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "a", encoding="utf-8") as fh:
                    for line in new:
                        fh.write(line)
