"""A run's images from the store to the dataset ranking: which images can be scored, scoring them into
images.jsonl (with worker processes, `postprocess.score_stored`), and repairing damaged records.

Plain Python over stored samples: no model, no Lightning, no Hydra (a regeneration, when one is needed, is
asked of the caller).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from llm2labels.errors import StorageError
from llm2labels.grid import Crop
from llm2labels.postprocess import (
    CHUNK,
    WORKER_STATE,
    Chunk,
    ImageResult,
    Scoring,
    in_workers,
    rank_images,
    score_stored,
)
from llm2labels.scoring.rank import DatasetRanker
from llm2labels.store import SampleStore
from llm2labels.store.records import DAMAGED, key_hash
from llm2labels.work import ImageWork, Lookup, RunKeys, look_up, plan

log = logging.getLogger("llm2labels")
COLUMN_CHUNK = 5_000  # images scored at a time from the parsed columns (one worker task)
REGENERATIONS = 3  # rounds of regenerating damaged records in one run (a proposer that only makes damaged
# records would otherwise loop for ever)
Skipped = list[dict[str, str]]  # [{"path": rel, "reason": ...}] in dataset order


@dataclass
class Usable:
    """The images to score, in dataset order: uids, paths, and each needed sample's index position in the
    store (images x samples; `RunKeys.columns` names the samples). ~8 bytes a sample, no string per key."""

    uids: list[str]
    paths: list[str]
    positions: np.ndarray
    columns: list[tuple[str, int]]

    def __len__(self) -> int:
        return len(self.uids)

    def chunks(self, store: SampleStore, size: int = CHUNK) -> Iterator[Chunk]:
        """What the scoring workers receive, made chunk by chunk from the store's index arrays."""
        for start in range(0, len(self.uids), size):
            files, offsets, lengths = store.index.locations(self.positions[start:start + size])
            yield Chunk(self.uids[start:start + size], self.paths[start:start + size], files, offsets, lengths,
                        self.columns)


def select(entries: Sequence[Any], uids: Sequence[str], crops: Sequence[Crop], store: SampleStore,
           max_pixels: int, found: Lookup | None = None) -> tuple[Usable, Skipped]:
    """The images to score (every sample stored) and the skipped ones with their reason, in dataset order.
    `found`: the lookup of the store as it is now (`work.look_up`), when the caller has one."""
    found = found if found is not None else look_up(uids, crops, store, max_pixels)
    usable = (found.positions >= 0).all(axis=1)
    usable[list(found.skipped)] = False
    skipped: Skipped = [{"path": entries[row].rel,
                         "reason": found.skipped.get(row, "samples missing (generation did not finish)")}
                        for row in np.flatnonzero(~usable).tolist()]
    rows = np.flatnonzero(usable).tolist()
    return Usable([uids[r] for r in rows], [entries[r].rel for r in rows], found.positions[rows],
                  RunKeys(crops).columns), skipped


@contextlib.contextmanager
def _images_file(images_path: Path, images: int) -> Iterator[Callable[[str, int], None]]:
    """images.jsonl opened for a run's scoring: yields `write(lines, images scored)`, which flushes (a killed
    run keeps every image scored so far) and moves the progress bar; a failed write is a StorageError."""
    try:
        fh = open(images_path, "w", encoding="utf-8")
    except OSError as e:
        raise StorageError.writing(images_path, e) from e
    with fh, tqdm(total=images, desc="scoring", unit="img", disable=None) as bar:
        def write(lines: str, scored: int) -> None:
            try:
                fh.write(lines)
                fh.flush()
            except OSError as e:
                raise StorageError.writing(images_path, e) from e
            bar.update(scored)

        yield write


def score_all(usable: Usable, store: SampleStore, scoring: Scoring, images_path: Path,
              workers: int = 1, chunk: int = CHUNK) -> Iterator[ImageResult]:
    """Score the usable images from the store, writing their labels to images.jsonl as they come (by
    `workers` processes, see postprocess.score_stored; the output is the same whatever their number).
    An image with a damaged record comes out with `damaged` set and no images.jsonl line."""
    with _images_file(images_path, len(usable)) as write:
        for lines, results in score_stored(usable.chunks(store, chunk), store.reader(), scoring, workers):
            write(lines, len(results))
            yield from results


def score_columns(usable: Usable, store: SampleStore, scoring: Scoring, images_path: Path, workers: int,
                  chunk: int = COLUMN_CHUNK) -> tuple[DatasetRanker, list[ImageResult]] | None:
    """`score_all` + `rank_images` from the store's parsed columns (llm2labels/parsed/): the samples are
    parsed once (in `workers` processes, the first time) and every run after that scores in numpy. Returns
    (ranker, images with a damaged record or a mismatched key), or None when the columns cannot be used
    (these settings, a store where they cannot be written, columns removed or cut short under the run):
    the caller scores per occurrence, writing images.jsonl again from its start."""
    from llm2labels.parsed.columns import Columns, ColumnsUnavailable
    from llm2labels.parsed.score import ColumnRanker, ColumnScorer, supported

    if not supported(scoring):
        return None
    try:
        columns = Columns(store.dir, store.index.files, store.index.covered, workers)
    except (OSError, ColumnsUnavailable) as e:  # a store where they cannot be written, or parts that stay broken
        log.warning("the parsed columns under %s cannot be used (%s): scoring per occurrence", store.dir,
                    getattr(e, "strerror", None) or e)
        return None
    ranker = ColumnRanker(columns)
    bad: list[ImageResult] = []
    state = {"scorer": ColumnScorer(columns, scoring)}
    try:
        with _images_file(images_path, len(usable)) as write:
            for lines, damaged, kept in in_workers(_score_columns, usable.chunks(store, chunk), workers, state):
                write(lines, kept.images + len(damaged))
                bad += damaged
                ranker.add(kept)
    except ColumnsUnavailable as e:
        log.warning("%s (removed from outside?): scoring per occurrence", e)
        return None
    return ranker.ranker(), bad


def _score_columns(chunk: Chunk) -> tuple[str, list[ImageResult], Any]:
    return WORKER_STATE["scorer"].score(chunk)


def _set_aside_damaged(results: Iterator[ImageResult], damaged: list[ImageResult]) -> Iterator[ImageResult]:
    """The scored results; those of images with a damaged record (or a colliding key) go to `damaged`."""
    for result in results:
        if result.damaged or result.mismatched:
            damaged.append(result)
        else:
            yield result


def score_run(entries: Sequence[Any], uids: Sequence[str], crops: Sequence[Crop], store: SampleStore,
              scoring: Scoring, images_path: Path, max_pixels: int, workers: int, seed: int,
              regenerate: Callable[[Sequence[ImageWork]], bool], found: Lookup | None = None,
              columns: bool = False) -> tuple[DatasetRanker, Skipped, int]:
    """Score and rank every usable image: (ranker, skipped images, damaged records found).

    A damaged record (a line that is complete but no sample) is quarantined (SampleStore.quarantine); a line
    that holds another key than the one looked up (two keys' hashes collide) makes that hash resolved by key
    from then on (`StoreIndex.mark_ambiguous`). Either image is planned again and handed to `regenerate`,
    after which everything is scored again, at most `REGENERATIONS` times. `regenerate` returns False when
    it cannot generate now (the other ranks of a multi-process job have gone): those images are then
    skipped, and the next run regenerates them. `found`: the lookup of the store as it is now, if the caller
    has one. `columns`: score from the store's parsed columns (`score_columns`) where they can be used."""
    quarantined = 0
    for round_ in itertools.count():
        usable, skipped = select(entries, uids, crops, store, max_pixels, found)
        found = None
        scored = score_columns(usable, store, scoring, images_path, workers) if columns else None
        if scored is not None:
            ranker, damaged = scored
        else:
            damaged = []
            ranker = rank_images(_set_aside_damaged(score_all(usable, store, scoring, images_path, workers),
                                                    damaged))
        quarantined += store.quarantine(loc for r in damaged for loc in r.damaged)
        store.index.mark_ambiguous(key_hash(key) for r in damaged for key in r.mismatched)
        if not damaged:
            return ranker, skipped, quarantined
        n_damaged = sum(bool(r.damaged) for r in damaged)
        if n_damaged:
            log.warning("%d images have damaged sample records: left out of the index (%s)", n_damaged,
                        store.dir / DAMAGED)
            store.refresh()  # (a refresh would forget the hashes marked ambiguous: they need none)
        items = plan(entries, uids, crops, seed, store, max_pixels)
        if not items or round_ >= REGENERATIONS or not regenerate(items):
            by_path = {r.path for r in damaged}
            skipped += [{"path": e.rel, "reason": "damaged sample record (regenerated by the next run)"}
                        for e in entries if e.rel in by_path]
            return ranker, skipped, quarantined
        store.refresh()
    raise AssertionError("unreachable")
