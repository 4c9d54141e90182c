"""The sample store: every generated sample on disk as soon as it exists, reusable by any later run.

Layout under `cache.dir`:
    <model-slug>-<fingerprint hash>/fingerprint.json    what produced these samples (model, prompt, sampling, ...)
    <model-slug>-<fingerprint hash>/samples-*.jsonl      one JSON record per line, key first
    <model-slug>-<fingerprint hash>/damaged.jsonl        lines found damaged, left out of the index
    filehash.jsonl                                       content hash of each input file by (path, size, mtime)

A record's key is `<image uid>|<crop key>|<sample index>`, so a sample is identified by everything that
changes it: the fingerprint (directory), the image content, the crop and the sample index (the seed is a
function of those and the run seed, which is part of the fingerprint). An unusable file has a record
`<image uid>|skip` (a fact about the file: not an image, truncated) or `<image uid>|skip|max_pixels=N` (over
a pixel limit: true under that limit only).
Each writer appends to a file of its own and never reopens an old one, so a record torn by a kill can only be
the last line of a file; readers ignore lines that do not end in a newline. A complete line that is no sample
(a flipped byte, a wrong type) is found when read (DamagedRecord) and quarantined in damaged.jsonl. Duplicate
keys (two runs racing on the same store) are harmless: the first one read wins, and both hold the same
sample.
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
from llm2labels.errors import ConfigError, ImageError, StorageError
from llm2labels.textio import json_line

DAMAGED = "damaged.jsonl"  # lines of sample files found damaged, left out of the index
_KEY_PREFIX = b'{"key":"'
# What post-processing decodes of a sample record (StoreReader.read_sample), in predict.py's key order.
_SAMPLE_FIELDS = ('"text":"', '"token_ends":[', '"logprobs":[')
_DECODER = json.JSONDecoder()


def sample_key(image: str, crop: str, sample: int) -> str:
    return f"{image}|{crop}|{sample}"


def skip_key(image: str, max_pixels: int | None = None) -> str:
    """The key of an unusable file's record: a fact about the file, or (with `max_pixels`) a skip that
    holds only under that pixel limit."""
    return f"{image}|skip" if max_pixels is None else f"{image}|skip|max_pixels={max_pixels}"


class DamagedRecord(ValueError):
    """A stored line that is complete but not a well-formed sample (a flipped byte, a cut, a wrong type)."""


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


def sample_problem(sample: Any) -> str | None:
    """Why `sample` is not a usable sample record, or None: text a string; token_ends increasing integers
    and logprobs numbers, one per token."""
    if not isinstance(sample, dict):
        return "not a JSON object"
    text, ends, logprobs = sample.get("text"), sample.get("token_ends"), sample.get("logprobs")
    if not isinstance(text, str):
        return "text is not a string"
    if not (isinstance(ends, list) and isinstance(logprobs, list)) or len(ends) != len(logprobs):
        return "token_ends and logprobs are not two lists of one length"
    if not all(type(e) is int for e in ends) or any(b < a for a, b in zip(ends, ends[1:])):
        return "token_ends are not increasing integers"
    if not all(type(x) is float or type(x) is int for x in logprobs):
        return "logprobs are not numbers"
    return None


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


class SampleStore:
    """Samples of one fingerprint under `root`; see the module docstring for the layout and guarantees."""

    def __init__(self, root: str | Path, fingerprint: dict[str, Any]) -> None:
        self.root = Path(root).expanduser()
        model = str(fingerprint.get("model", "model"))
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", model).strip("_")[-48:] or "model"
        self.dir = self.root / f"{slug}-{fingerprint_digest(fingerprint)}"
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(f"cache.dir {self.root} is a file, not a folder: give a folder for the samples")
        meta = self.dir / "fingerprint.json"
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            if not meta.exists():
                tmp = meta.with_suffix(f".{uuid.uuid4().hex}.tmp")
                try:
                    tmp.write_text(json.dumps(fingerprint, indent=1, sort_keys=True, default=str))
                    os.replace(tmp, meta)
                finally:
                    tmp.unlink(missing_ok=True)
        except OSError as e:
            if not meta.exists():  # a store that exists can still be read (a read-only shared cache)
                raise ConfigError(f"cannot create the sample store {self.dir}: {e.strerror or e} "
                                  f"(cache.dir must be a writable folder)") from e
        self._index: dict[str, tuple[int, int]] = {}
        self._reader = StoreReader([])
        self._damaged: set[tuple[str, int]] = set()  # (file name, offset) of lines found damaged

    def check_writable(self) -> None:
        """ConfigError (one line) unless a new sample file can be written here: checked before a model loads."""
        probe = self.dir / f".write-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            probe.write_bytes(b"\0")
        except OSError as e:
            raise ConfigError(f"the sample store {self.dir} is not writable ({e.strerror or e}): samples "
                              f"must be generated, so give a writable cache.dir") from e
        finally:
            try:
                probe.unlink(missing_ok=True)
            except OSError:
                pass

    def quarantine(self, locations: Iterable[tuple[int, int]]) -> int:
        """Lines found damaged (DamagedRecord) are left out of every later `refresh`, in this process and,
        through `damaged.jsonl` in the store folder, in every later run: a key they held is regenerated, or
        served by a later copy of it. Returns how many were new."""
        found = {(self._reader.files[f].name, offset) for f, offset in locations} - self._damaged
        self._damaged |= found
        if found:
            lines = "".join(json_line({"file": name, "offset": offset}) for name, offset in sorted(found))
            try:
                with open(self.dir / DAMAGED, "a", encoding="utf-8") as fh:
                    fh.write(lines)
            except OSError:
                pass  # a read-only store: this run still leaves them out
        return len(found)

    def _read_damaged(self) -> None:
        path = self.dir / DAMAGED
        if not path.is_file():
            return
        with open(path, "rb") as fh:
            for line in fh:
                try:
                    entry = json.loads(line)
                    self._damaged.add((str(entry["file"]), int(entry["offset"])))
                except (ValueError, KeyError, TypeError):
                    continue

    def writer(self, tag: str = "0") -> StoreWriter:
        return StoreWriter(self.dir / f"samples-{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl")

    def refresh(self) -> dict[str, tuple[int, int]]:
        """(Re)build the key -> (file, byte offset) index from every complete, undamaged line on disk."""
        self.close()
        self._read_damaged()
        files = sorted(self.dir.glob("samples-*.jsonl"))
        index: dict[str, tuple[int, int]] = {}
        start = len(_KEY_PREFIX)
        for f, path in enumerate(files):
            damaged = {offset for name, offset in self._damaged if name == path.name}
            with open(path, "rb") as fh:
                offset = 0
                for line in fh:
                    # NUL bytes: a range a crashed machine's file system left zero-filled (JSON holds none)
                    if (line.endswith(b"\n") and line.startswith(_KEY_PREFIX) and b"\0" not in line
                            and offset not in damaged):
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
        """The record stored under `key`, or None (also for a damaged line). Call `refresh` first to see other
        writers' records."""
        loc = self._index.get(key)
        if loc is None:
            return None
        try:
            return self._reader.read(loc)
        except DamagedRecord:
            return None

    def skip_reason(self, image: str, max_pixels: int) -> str | None:
        """Why `image` is not used under this pixel limit: a stored fact about its file, or a skip stored under
        the same limit; None when it may be used. A skip of an older store that came from a pixel limit
        ("too large: ...") is ignored: it is decided again under this run's limit."""
        for key in (skip_key(image), skip_key(image, max_pixels)):
            record = self.get(key) if key in self._index else None
            reason = record.get("reason") if record else None
            if isinstance(reason, str) and not (key == skip_key(image) and reason.startswith("too large:")):
                return reason
        return None

    def close(self) -> None:
        self._reader.close()


class FileHashes:
    """Content hashes of input files, remembered by (absolute path, size, mtime) so reruns read no pixels."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self._known: dict[tuple[str, int, int], str] = {}
        if self.path.is_file():
            # A damaged line (a bad byte, two nodes' writes interleaved) is dropped: it costs one re-hash.
            with open(self.path, "rb") as fh:
                for line in fh:
                    if line.endswith(b"\n"):
                        try:
                            r = json.loads(line)
                            self._known[(r["path"], int(r["size"]), int(r["mtime_ns"]))] = str(r["uid"])
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
                    yield "unreadable-" + hashlib.blake2b(os.fsencode(p), digest_size=8).hexdigest()
                    continue
                if k not in self._known:
                    self._known[k] = uid
                    new.append(json.dumps({"path": k[0], "size": k[1], "mtime_ns": k[2], "uid": uid}) + "\n")
                yield uid
        finally:
            if new:
                try:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    with open(self.path, "a", encoding="utf-8") as fh:
                        fh.write("".join(new))
                except OSError:
                    pass  # a read-only or full cache: the hashes are only a shortcut, computed again next time
