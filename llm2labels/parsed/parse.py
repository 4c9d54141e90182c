"""The parse pass: every sample record of a byte range of a sample file, read once, as columns.

A sample's labels are a pure function of its text, token ends and log-probabilities (docs/method.md,
"Stage 1b"): the label spans (parsing.py), each span's normalised label (normalize.py) and its token
aggregate (`TokenAggregator`, for each of its four `how`s). `parse_range` computes them for every record of
a range, in file order, into a `Part`:

- per record: its line offset (from the range's start), its key check (`records.key_check`: a second hash
  of its key, independent of the index's), where its occurrences start, and whether it is a usable sample
  (`ok`: false for a complete line that is no sample, such as a skip record or a damaged line);
- per occurrence, in the order post-processing meets them (sample text order): its surface form (an id
  into the part's form table) and its probability under each `how` (one column each: a run reads one).

The form table gives each distinct surface form once, with its normalised label: normalisation runs once
per distinct string. Forms whose label is empty ("a", "1", "None") are left out, as post-processing leaves
them out.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from llm2labels.normalize import normalize_label
from llm2labels.parsing import label_spans, token_indices
from llm2labels.scoring.aggregate import HOWS, TokenAggregator
from llm2labels.store.files import decode_sample
from llm2labels.store.records import DamagedRecord, key_check, line_key

_AGGREGATORS = [TokenAggregator(how) for how in HOWS]
NORMALIZED_CACHE = 1 << 18  # surface forms whose label a worker remembers across the ranges it parses


@dataclass
class Part:
    """The parsed columns of bytes [start, end) of one sample file (see the module docstring)."""

    start: int
    end: int
    offsets: np.ndarray  # uint32 (records,): line offsets from `start`, ascending
    checks: np.ndarray  # uint64 (records,): key checks
    ok: np.ndarray  # bool (records,): a usable sample
    occ_start: np.ndarray  # uint32 (records + 1,): record r's occurrences are [occ_start[r], occ_start[r+1])
    form: np.ndarray  # uint32 (occurrences,): surface form id
    p: dict[str, np.ndarray]  # how -> float64 (occurrences,): the occurrence's token aggregate
    forms: list[str] = field(default_factory=list)  # surface form id -> text
    labels: list[str] = field(default_factory=list)  # surface form id -> normalised label


class _Builder:
    """Fills a Part's columns one record at a time."""

    def __init__(self, normalized: dict[str, str]) -> None:
        self.normalized = normalized  # surface form -> label, across ranges (a worker's cache)
        self.form_ids: dict[str, int] = {}
        self.forms: list[str] = []
        self.labels: list[str] = []
        self.offsets, self.checks, self.ok = array("L"), array("Q"), array("B")
        self.occ_start = array("L", [0])
        self.form, self.p = array("L"), array("d")  # p: the product aggregate
        self.multi, self.multi_values = array("Q"), array("d")  # two tokens or more: avg, min, max

    def _new_form(self, form: str) -> int:
        """The id of a surface form not met before in this range, -1 when its label is empty."""
        label = self.normalized.get(form)
        if label is None:
            if len(self.normalized) >= NORMALIZED_CACHE:  # open-vocabulary output: bounded memory
                self.normalized.clear()
            label = self.normalized[form] = normalize_label(form)
        fid = -1
        if label:
            fid = len(self.forms)
            self.forms.append(form)
            self.labels.append(label)
        self.form_ids[form] = fid
        return fid

    def add(self, offset: int, key: str, sample: dict | None) -> None:
        self.offsets.append(offset)
        self.checks.append(key_check(key))
        self.ok.append(sample is not None)
        if sample is not None:
            self._occurrences(sample["text"], sample["token_ends"], sample["logprobs"])
        self.occ_start.append(len(self.form))

    def _occurrences(self, text: str, ends: list[int], logprobs: list[float]) -> None:
        exp, inf, n_tokens = math.exp, math.inf, len(ends)
        form_ids, add_form, add_p = self.form_ids, self.form.append, self.p.append
        product = _AGGREGATORS[0]
        for form, start, end in label_spans(text):
            fid = form_ids.get(form)
            if fid is None:
                fid = self._new_form(form)
            if fid < 0:
                continue
            first = bisect_right(ends, start)  # as postprocess.score_image: the usual one-token label first
            if bisect_left(ends, end) == first < n_tokens and end > start:
                lp = logprobs[first]
                add_p(exp(lp) if -inf < lp <= 0.0 else product([lp]))
            else:  # every `how` agrees on 0 or 1 token; two or more give four values
                tokens = [logprobs[t] for t in token_indices(ends, start, end)]
                add_p(product(tokens))
                if len(tokens) > 1:
                    self.multi.append(len(self.p) - 1)
                    self.multi_values.extend(aggregate(tokens) for aggregate in _AGGREGATORS[1:])
            add_form(fid)

    def part(self, start: int, end: int) -> Part:
        product = _np(self.p, np.float64)
        multi = _np(self.multi, np.int64)
        values = _np(self.multi_values, np.float64).reshape(-1, 3)
        p = {HOWS[0]: product}
        for j, how in enumerate(HOWS[1:]):
            p[how] = product.copy()
            p[how][multi] = values[:, j]
        return Part(start, end, _np(self.offsets, np.uint32), _np(self.checks, np.uint64),
                    _np(self.ok, np.uint8).astype(bool), _np(self.occ_start, np.uint32), _np(self.form, np.uint32),
                    p, self.forms, self.labels)


def _np(values: array, dtype: type) -> np.ndarray:
    out = np.frombuffer(values, values.typecode).astype(dtype) if len(values) else np.empty(0, dtype)
    return out


def parse_range(path: Path, start: int, end: int, normalized: dict[str, str] | None = None) -> Part:
    """Parse the complete record lines of `path` within bytes [start, end); the part ends after the last
    complete line. Lines that are not records (no key) are passed over; records that are no sample (skip
    records, damaged lines) are kept with `ok` false."""
    builder = _Builder({} if normalized is None else normalized)
    with open(path, "rb") as fh:
        fh.seek(start)
        data = fh.read(end - start)
    lines = data.split(b"\n")
    position = 0
    for line in lines[:-1]:  # the last piece follows the last newline: empty, or a line cut short
        key = line_key(line) if b"\0" not in line else None
        if key is not None:
            try:
                sample = decode_sample(line, path, start + position)
            except DamagedRecord:
                sample = None
            builder.add(position, key, sample)
        position += len(line) + 1
    return builder.part(start, start + position)


def split_ranges(path: Path, start: int, end: int, size: int = 64 << 20) -> list[tuple[int, int]]:
    """[start, end) cut into ranges of about `size` bytes (at most 4 GiB) that begin and end at line
    boundaries."""
    size = min(size, (1 << 32) - (1 << 20))
    ranges = []
    with open(path, "rb") as fh:
        while start < end:
            stop = min(start + size, end)
            if stop < end:
                fh.seek(stop - 1)
                stop = min(stop - 1 + len(fh.readline()), end)  # to the end of the line holding byte stop-1
            ranges.append((start, stop))
            start = stop
    return ranges
