"""Content hashes of input files, remembered in `cache.dir/filehash.jsonl` so reruns read no pixels."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from llm2labels.data.images import file_uid
from llm2labels.errors import ImageError


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
