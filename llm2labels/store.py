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
from pathlib import Path
from typing import IO, Any

from llm2labels.data.images import file_uid
from llm2labels.errors import ImageError

_KEY_PREFIX = b'{"key":"'


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
        self._files: list[Path] = []
        self._handles: dict[int, IO[bytes]] = {}

    def writer(self, tag: str = "0") -> StoreWriter:
        return StoreWriter(self.dir / f"samples-{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl")

    def refresh(self) -> dict[str, tuple[int, int]]:
        """(Re)build the key -> (file, byte offset) index from every complete line on disk."""
        self.close()
        self._files = sorted(self.dir.glob("samples-*.jsonl"))
        index: dict[str, tuple[int, int]] = {}
        for f, path in enumerate(self._files):
            with open(path, "rb") as fh:
                offset = 0
                for line in fh:
                    if line.endswith(b"\n") and line.startswith(_KEY_PREFIX):
                        end = line.find(b'"', len(_KEY_PREFIX))
                        key = line[len(_KEY_PREFIX) : end].decode("utf-8", "replace")
                        index.setdefault(key, (f, offset))
                    offset += len(line)
        self._index = index
        return index

    def keys(self) -> set[str]:
        return set(self._index)

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def __len__(self) -> int:
        return len(self._index)

    def get(self, key: str) -> dict[str, Any] | None:
        """The record stored under `key`, or None. Call `refresh` first to see other writers' records."""
        loc = self._index.get(key)
        if loc is None:
            return None
        f, offset = loc
        fh = self._handles.get(f)
        if fh is None:
            fh = self._handles[f] = open(self._files[f], "rb")
        fh.seek(offset)
        return json.loads(fh.readline())

    def close(self) -> None:
        for fh in self._handles.values():
            fh.close()
        self._handles.clear()


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
