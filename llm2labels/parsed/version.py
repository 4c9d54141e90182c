"""The version of the parsed columns: a hash of everything that decides them.

Parsed columns are kept under `parsed/<version>/` in the store folder. The version hashes the source of the
modules that turn a sample into columns (record decoding and key checks, parsing, normalisation, the token
aggregator, the parse pass itself), the version of `inflect` (which singularises), Python's Unicode
database and the column layout, so a change to any of them makes a run parse again instead of reading
stale columns. Once a run has parsed a store, the folders of other versions that no run has used for an
hour are removed (`columns.Columns`): they are a cache, and nearly as large as the samples (36 bytes a label
occurrence)."""

from __future__ import annotations

import functools
import hashlib
import sys
import unicodedata
from importlib import metadata
from pathlib import Path

LAYOUT = 1  # bump when the files of a part change
SOURCES = ("parsing.py", "normalize.py", "scoring/aggregate.py", "parsed/parse.py", "store/files.py",
           "store/records.py")  # records: the key checks; files: how a record is decoded


@functools.lru_cache(maxsize=1)
def parse_version() -> str:
    """The version of this installation's parser (cached: the sources do not change under a run)."""
    return source_version(Path(__file__).resolve().parents[1])


def source_version(package: Path) -> str:
    """`v<layout>-<hash>` of the deciding sources under `package` (the llm2labels folder) and inflect."""
    h = hashlib.blake2b(digest_size=8)
    h.update(f"layout {LAYOUT}\n".encode())
    # str.lower, isalnum and the regexes' \w follow Python's Unicode database
    h.update(f"python {sys.version_info[:2]} unicode {unicodedata.unidata_version}\n".encode())
    for name in SOURCES:
        h.update(name.encode() + b"\n" + (package / name).read_bytes())
    try:
        h.update(metadata.version("inflect").encode())
    except metadata.PackageNotFoundError:
        pass
    return f"v{LAYOUT}-{h.hexdigest()}"
