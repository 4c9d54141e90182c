"""From stored samples to the ranked candidate list, with no model in sight (docs/method.md, "Stage 1b").

Per image: parse every sample into labels with token spans, score each occurrence from its own tokens
(the token aggregator), pool the occurrences over the image's samples and crops, and filter. Then pool the
surviving labels over the dataset with a streaming ranker, one image at a time, so memory stays flat.
`score_stored` does the per-image part for a whole store, in this process or in forked worker processes
that each take a run of consecutive images and hand back their images.jsonl lines and results in order.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import itertools
import json
import math
import multiprocessing
import os
import signal
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from llm2labels.errors import ConfigError, int_at_least
from llm2labels.normalize import normalize_label
from llm2labels.parsing import label_spans, token_indices
from llm2labels.scoring.aggregate import TokenAggregator, check_probability, pool_grouped
from llm2labels.scoring.rank import DatasetRanker
from llm2labels.store import DamagedRecord, KeyMismatch, StoreReader, decode_sample

CHUNK = 200  # images per worker task: large enough to amortise the pickling, small enough to stream


@dataclass
class Chunk:
    """Consecutive images to score, as a worker receives them: each image's uid and path, and where each of
    its samples is (file number, offset, length; arrays of images x samples); `columns` names the samples
    ((crop, sample index), the same for every image), so each line's key can be checked."""

    uids: list[str]
    paths: list[str]
    files: np.ndarray
    offsets: np.ndarray
    lengths: np.ndarray
    columns: list[tuple[str, int]]


@dataclass
class ImageResult:
    """One image after filtering: every label's (image score, sample count), the labels that survived, and
    the raw strings that produced each surviving label (one per occurrence, in sample order).

    `score_stored` writes `labels` to images.jsonl and hands the result on without it (empty): the ranker
    does not read it, and it is most of what a worker process would otherwise send back.
    """

    uid: str
    path: str
    labels: dict[str, tuple[float, int]]
    kept: dict[str, float]
    surface: dict[str, list[str]] = field(default_factory=dict)
    damaged: list[tuple[int, int, int]] = field(default_factory=list)  # records that are no samples: unscored
    mismatched: list[str] = field(default_factory=list)  # keys whose line held another key (hash collision)


def score_image(uid: str, path: str, samples: Iterable[Mapping[str, Any]],
                aggregate: Callable[[list[float]], float], pool: str,
                image_filter: Callable[[dict[str, float]], dict[str, float]],
                normalized: dict[str, str] | None = None) -> ImageResult:
    """Pool one image's samples (each sample gets its own id) and apply the per-image filter.

    Parse each sample into labels with token spans, score each occurrence from its own tokens (the token
    aggregator), pool the occurrences per label, filter: one loop, which runs for every label of every
    sample of the dataset (tests/oracles.py holds the plain reading it is tested against). `normalized` optionally caches normalize_label across images.
    """
    normalized = {} if normalized is None else normalized
    # A TokenAggregator gives every single-token label exp(log p) for a finite log p <= 0, whatever its `how`.
    exact_single, exp, inf = type(aggregate) is TokenAggregator, math.exp, math.inf
    # label -> [probabilities, surface forms, distinct samples, last sample]: samples come one at a time,
    # so a label's sample count grows when it turns up in a sample other than the last one it was in
    acc: dict[str, list[Any]] = {}
    for sample_id, record in enumerate(samples):
        text, ends, logprobs = record["text"], record["token_ends"], record["logprobs"]
        n_tokens = len(ends)
        for form, start, end in label_spans(text):
            label = normalized.get(form)
            if label is None:
                label = normalized[form] = normalize_label(form)
            if not label:
                continue
            first = bisect_right(ends, start)  # token_indices, inlined for the usual one-token label:
            # the span ends inside token `first`, which ends after `start`, so has width
            if bisect_left(ends, end) == first < n_tokens and end > start:
                lp = logprobs[first]
                p = exp(lp) if exact_single and -inf < lp <= 0.0 else aggregate([lp])
            else:
                p = aggregate([logprobs[t] for t in token_indices(ends, start, end)])
            if not 0.0 <= p <= 1.0:
                p = check_probability(label, p)
            a = acc.get(label)
            if a is None:
                acc[label] = [[p], [form], 1, sample_id]
                continue
            a[0].append(p)
            a[1].append(form)
            if a[3] != sample_id:
                a[2] += 1
                a[3] = sample_id
    probs, counts = {label: a[0] for label, a in acc.items()}, {label: a[2] for label, a in acc.items()}
    labels = pool_grouped(probs, counts, pool)
    kept = image_filter({label: score for label, (score, _) in labels.items()})
    return ImageResult(uid, path, labels, kept, {label: acc[label][1] for label in kept if label in acc})


def rank_images(results: Iterable[ImageResult], ranker: DatasetRanker | None = None) -> DatasetRanker:
    """Feed filtered images into a (new or given) dataset ranker; the ranker keeps per-label sums only."""
    ranker = ranker or DatasetRanker()
    for r in results:
        ranker.add_image(r.kept, {label: r.surface.get(label, []) for label in r.kept})
    return ranker


@dataclass
class Scoring:
    """The per-image settings, handed once to each worker process."""

    aggregate: Callable[[list[float]], float]
    pool: str
    image_filter: Callable[[dict[str, float]], dict[str, float]]


def image_line(result: ImageResult) -> str:
    """One images.jsonl line: the image, its kept labels and every label's [image score, sample count]."""
    return json.dumps({"path": result.path, "uid": result.uid, "kept": result.kept, "labels": result.labels})


def score_chunk(chunk: Chunk, reader: StoreReader, scoring: Scoring, normalized: dict[str, str]
                ) -> tuple[str, list[ImageResult]]:
    """Score consecutive images: their images.jsonl lines (one string) and results without `labels`. Their
    records are read in file order, in a few large reads (`StoreReader.read_lines`). An image with a damaged
    record, or a line holding another key than its own, is not scored: its result says which, and it has no
    line."""
    n, m = chunk.files.shape
    locs = list(zip(chunk.files.ravel().tolist(), chunk.offsets.ravel().tolist(), chunk.lengths.ravel().tolist()))
    lines = reader.read_lines(locs)
    results = []
    for i, (uid, path) in enumerate(zip(chunk.uids, chunk.paths)):
        samples, damaged, mismatched = [], [], []
        for j, (crop, k) in enumerate(chunk.columns):
            loc = locs[i * m + j]
            key = f"{uid}|{crop}|{k}"
            try:
                samples.append(decode_sample(lines[i * m + j], reader.files[loc[0]], loc[1], key))
            except DamagedRecord:
                damaged.append(loc)
            except KeyMismatch:
                mismatched.append(key)
        if damaged or mismatched:
            results.append(ImageResult(uid, path, {}, {}, damaged=damaged, mismatched=mismatched))
            continue
        results.append(score_image(uid, path, samples, scoring.aggregate, scoring.pool, scoring.image_filter,
                                   normalized))
    if len(normalized) > 1 << 18:  # bounded like normalize_label's own cache
        normalized.clear()
    lines_out = "".join(image_line(r) + "\n" for r in results if not (r.damaged or r.mismatched))
    for r in results:
        r.labels = {}
    return lines_out, results


WORKER_STATE: dict[str, Any] = {}  # what a worker process's tasks read (`in_workers`' state)


def _init_worker(state: dict[str, Any], parent: int) -> None:
    _exit_with_parent(parent)
    WORKER_STATE.clear()
    WORKER_STATE.update(state)


def _exit_with_parent(parent: int) -> None:
    """Have the kernel end this worker when its parent dies (Linux), so a parent killed with SIGKILL leaves
    no worker blocked forever on the task queue it shares with its siblings."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return  # not Linux: workers then end when the task queue closes, as before
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _worker_chunk(chunk: Chunk) -> tuple[str, list[ImageResult]]:
    return score_chunk(chunk, WORKER_STATE["reader"], WORKER_STATE["scoring"], WORKER_STATE["normalized"])


def default_workers() -> int:
    """One worker per CPU this process may use, at most 8 (the main process ranks every image alone)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cpus, 8))


def resolve_workers(value: object) -> int:
    """The `postprocess.workers` setting as a process count: null means `default_workers()`."""
    if value is None:
        return default_workers()
    if not int_at_least(value, 1):
        raise ConfigError(f"postprocess.workers must be a whole number >= 1, or null for one per CPU; "
                          f"got {value!r}")
    return value


def score_stored(chunks: Iterable[Chunk], reader: StoreReader, scoring: Scoring, workers: int = 1
                 ) -> Iterator[tuple[str, list[ImageResult]]]:
    """Score chunks of stored images, in order: (images.jsonl lines, results) per chunk, in `workers`
    processes (`in_workers`: the output is the same as with one)."""
    return in_workers(_worker_chunk, chunks, workers, {"reader": reader, "scoring": scoring, "normalized": {}})


def in_workers(task: Callable[[Any], Any], items: Iterable[Any], workers: int, state: dict[str, Any]
               ) -> Iterator[Any]:
    """`task(item)` for each item, yielded in order; the task reads `state` from `WORKER_STATE`.

    With `workers` > 1 forked processes run the tasks and this one yields the results in order. Fork, not
    spawn: a worker needs the parent's imports (seconds of them) and `state` (handed over by the fork, not
    pickled), and nothing of its threads; where fork is missing the tasks run in this process. Items are
    taken as they are sent (`items` may be a generator), at most two per worker ahead of the one yielded,
    so memory does not grow with their number. A worker that dies raises BrokenProcessPool.
    """
    queued = iter(items)
    if workers <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        saved = dict(WORKER_STATE)
        WORKER_STATE.clear()
        WORKER_STATE.update(state)
        try:
            for item in queued:
                yield task(item)
        finally:
            WORKER_STATE.clear()
            WORKER_STATE.update(saved)
        return
    context = multiprocessing.get_context("fork")
    executor = ProcessPoolExecutor(workers, context, initializer=_init_worker, initargs=(state, os.getpid()))
    try:
        gc.freeze()  # the forked workers' collector (and copy-on-write) leaves this process's objects alone
        try:  # a window of 2 items per worker in flight: finished ones wait for their turn in bounded memory
            window = deque(executor.submit(task, item) for item in itertools.islice(queued, 2 * workers))
        finally:
            gc.unfreeze()
        while window:
            done = window.popleft().result()  # a worker that dies (killed, out of memory) raises BrokenProcessPool
            window.extend(executor.submit(task, item) for item in itertools.islice(queued, 1))
            yield done
    finally:
        executor.shutdown(wait=True, cancel_futures=True)  # also when the caller stops early
