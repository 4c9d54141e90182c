"""The sample store: every generated sample on disk as soon as it exists, reusable by any later run.

Layout under `cache.dir`:
    <model-slug>-<fingerprint hash>/fingerprint.json    what produced these samples (model, prompt, sampling, ...)
    <model-slug>-<fingerprint hash>/samples-*.jsonl      one JSON record per line, key first
    <model-slug>-<fingerprint hash>/index/samples-*.jsonl.idx  each file's index: key hash, offset, length
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

Modules: `records` (keys and their hashes, what a sample record must hold), `files` (writer and reader of
one sample file), `index` (the persisted per-file indexes and the in-memory one), `samples` (`SampleStore`),
`filehashes` (content ids of input files).
"""

from llm2labels.store.filehashes import FileHashes
from llm2labels.store.files import KeyMismatch, StoreReader, StoreWriter, decode_sample, new_writer
from llm2labels.store.records import (
    DAMAGED,
    DamagedRecord,
    fingerprint_digest,
    sample_key,
    sample_problem,
    skip_key,
)
from llm2labels.store.samples import SampleStore

__all__ = [
    "DAMAGED",
    "DamagedRecord",
    "FileHashes",
    "KeyMismatch",
    "SampleStore",
    "StoreReader",
    "StoreWriter",
    "decode_sample",
    "fingerprint_digest",
    "new_writer",
    "sample_key",
    "sample_problem",
    "skip_key",
]
