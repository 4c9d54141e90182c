"""`SampleStore`: the samples of one fingerprint, indexed by key, with its skips and damaged lines."""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from llm2labels.errors import ConfigError
from llm2labels.store.files import KeyMismatch, StoreReader, StoreWriter, new_writer
from llm2labels.store.index import StoreIndex
from llm2labels.store.records import DAMAGED, DamagedRecord, fingerprint_digest, key_hash, skip_key
from llm2labels.textio import json_line

log = logging.getLogger("llm2labels")


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
        self._index = StoreIndex([], set())
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

    def quarantine(self, locations: Iterable[tuple[int, ...]]) -> int:
        """Lines found damaged (DamagedRecord), as (file number, offset, ...) of the last `refresh`, are left out
        of every later `refresh`, in this process and, through `damaged.jsonl` in the store folder, in every
        later run: a key they held is regenerated, or served by a later copy of it. Returns how many were new."""
        found = {(self._reader.files[loc[0]].name, int(loc[1])) for loc in locations} - self._damaged
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
        return new_writer(self.dir, tag)

    def refresh(self) -> int:
        """(Re)load the index over every complete, undamaged record on disk (index.py); returns the number of
        keys stored. A store written before indexes existed is indexed once, and says so."""
        self.close()
        self._read_damaged()
        files = sorted(self.dir.glob("samples-*.jsonl"))
        self._index = StoreIndex(files, self._damaged)
        self._reader = StoreReader(files)
        index = self._index
        if index.unindexed:
            kept = ("done once, the indexes are kept in its index/ folder" if not index.unsaved else
                    "the store is not writable, so every run does it again")
            log.info("indexed %d sample files of %s that had no index (%d records): %s", index.unindexed,
                     self.dir, index.scanned, kept)
        return len(self._index)

    @property
    def index(self) -> StoreIndex:
        """The index of the last `refresh` (hash arrays, `find`)."""
        return self._index

    def __contains__(self, key: str) -> bool:
        """Whether `key` is stored: its line is looked up in the index and its key read (one small read)."""
        return self._verified(key) is not None

    def _verified(self, key: str) -> tuple[int, int, int] | None:
        """`locate(key)`, having checked that the line there holds `key`. A line holding another key (two keys
        whose hashes collide) makes that hash resolved by key from now on."""
        while (loc := self.locate(key)) is not None:
            try:
                self._reader.check(loc, key)
                return loc
            except KeyMismatch:
                self._index.mark_ambiguous([key_hash(key)])
        return None

    def __len__(self) -> int:
        return len(self._index)

    def locate(self, key: str) -> tuple[int, int, int] | None:
        """Where `key`'s record is (file number, offset, length), for `reader()`; None when it is not stored."""
        position = self._index.find_key(key)
        return None if position < 0 else self.location(position)

    def location(self, position: int) -> tuple[int, int, int]:
        """(file number, offset, length) of an index position (`index.find`)."""
        return self._index.location(position)

    def reader(self) -> StoreReader:
        """A new reader over the files of the last `refresh` (for another process, or another thread)."""
        return StoreReader(list(self._reader.files))

    def get(self, key: str) -> dict[str, Any] | None:
        """The record stored under `key`, or None. A damaged line reads as None and is quarantined, so the next
        `refresh` leaves it out. Call `refresh` first to see other writers' records."""
        loc = self._verified(key)
        if loc is None:
            return None
        try:
            return self._reader.read(loc)
        except DamagedRecord:
            self.quarantine([loc])
            return None

    def skip_reason(self, image: str, max_pixels: int) -> str | None:
        """Why `image` is not used under this pixel limit: a stored fact about its file, or a skip stored under
        the same limit; None when it may be used. A skip of an older store that came from a pixel limit
        ("too large: ...") is ignored: it is decided again under this run's limit."""
        for key in (skip_key(image), skip_key(image, max_pixels)):
            record = self.get(key)
            reason = record.get("reason") if record else None
            if isinstance(reason, str) and not (key == skip_key(image) and reason.startswith("too large:")):
                return reason
        return None

    def close(self) -> None:
        self._reader.close()
