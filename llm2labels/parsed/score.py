"""Post-processing in columns: pooling, the per-image filters, images.jsonl and the dataset ranking as
numpy group-bys over the parsed occurrences of a chunk of images (no Python loop per occurrence).

It computes what `postprocess.score_image` + `rank_images` compute, in the same order of operations where
floating point depends on it, so the results are the same: every label's image score and sample count,
the kept labels in the order they first appear in the image, the same images.jsonl lines, and a ranker
whose sums were added image by image in dataset order (`np.bincount` adds its weights in order). Pooling
with `avg` sums each label's occurrences with `math.fsum` as the per-image code does (vectorised for one
or two occurrences, where a plain sum is exact).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from llm2labels.parsed.columns import Columns
from llm2labels.postprocess import Chunk, ImageResult, Scoring
from llm2labels.scoring.aggregate import TokenAggregator
from llm2labels.scoring.filters import BothFilter, NoFilter, PercentileFilter, ThresholdFilter
from llm2labels.scoring.rank import DatasetRanker
from llm2labels.store.records import key_checks


def supported(scoring: Scoring) -> bool:
    """Whether columns can score this: the token aggregator and one of the four filters, exactly."""
    return (type(scoring.aggregate) is TokenAggregator and type(scoring.image_filter) in
            (PercentileFilter, ThresholdFilter, BothFilter, NoFilter))


class ColumnRanker:
    """`DatasetRanker`'s sums as arrays over the run's label and form tables."""

    def __init__(self, columns: Columns) -> None:
        self.columns = columns
        self.n_images = 0
        self.counts = np.zeros(len(columns.labels), np.int64)
        self.sums = np.zeros(len(columns.labels), np.float64)
        self.form_counts = np.zeros(len(columns.forms), np.int64)

    def add(self, kept: Kept) -> None:
        """Count a chunk's images (`Kept`), after those of the chunks before it."""
        n_images, labels, scores, forms = kept.images, kept.labels, kept.scores, kept.forms
        size = len(self.sums)
        self.n_images += n_images
        self.counts += np.bincount(labels, minlength=size)
        # bincount adds in order: the running sum first, then each image's score, as add_image does
        self.sums = np.bincount(np.concatenate([np.arange(size), labels]), np.concatenate([self.sums, scores]),
                                minlength=size)
        self.form_counts += np.bincount(forms, minlength=len(self.form_counts))

    def ranker(self) -> DatasetRanker:
        """The equivalent DatasetRanker (its accumulators filled), to rank and write as usual."""
        out = DatasetRanker()
        out.n_images = self.n_images
        labels, forms = self.columns.labels, self.columns.forms
        for lid in np.flatnonzero(self.counts).tolist():
            out._images[labels[lid]] = int(self.counts[lid])
            out._score_sum[labels[lid]] = float(self.sums[lid])
        form_label = self.columns.form_label
        for fid in np.flatnonzero(self.form_counts).tolist():
            label = labels[int(form_label[fid])]
            out._surface.setdefault(label, Counter())[forms[fid]] = int(self.form_counts[fid])
        return out


@dataclass
class Kept:
    """What a chunk adds to the ranking: its images scored, their kept labels and scores in image order,
    and the surface form of every occurrence of a kept label."""

    images: int
    labels: np.ndarray
    scores: np.ndarray
    forms: np.ndarray


@dataclass
class _Filter:
    q: float | None  # percentile cut in [0, 1], or None
    t: float | None  # threshold, or None

    @classmethod
    def of(cls, image_filter: object) -> _Filter:
        q = getattr(image_filter, "q", None)
        t = getattr(image_filter, "t", None)
        return cls(None if q is None else q / 100.0, t)


def _cuts(image: np.ndarray, score: np.ndarray, n_images: int, q: float) -> np.ndarray:
    """Per image, filters.quantile of its scores: numpy's linear quantile, the same float operations."""
    order = np.lexsort((score, image))
    ordered, sizes = score[order], np.bincount(image, minlength=n_images)
    first = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    cuts = np.full(n_images, np.inf)
    has = sizes > 0
    n = sizes[has].astype(np.int64)
    base = first[has]
    v = (n - 1).astype(np.float64) * q
    at_end = v >= n - 1
    below = np.where(at_end, n - 1, np.floor(v).astype(np.int64))
    a = ordered[base + below]
    b = np.where(at_end, a, ordered[base + np.minimum(below + 1, n - 1)])
    t = np.where(at_end, v + 1, v - below)
    diff = b - a
    cuts[has] = np.where(t >= 0.5, b - diff * (1 - t), a + diff * t)
    return cuts


def _pool(pool: str, p: np.ndarray, starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Each group's pooled score; `p` is sorted by group, in occurrence order within a group."""
    if pool == "max":
        return np.maximum.reduceat(p, starts)
    if pool == "min":
        return np.minimum.reduceat(p, starts)
    if pool == "product":
        return np.multiply.reduceat(p, starts)  # in order, as math.prod
    out = np.add.reduceat(p, starts) / sizes  # one or two values: a plain sum is fsum's
    for g in np.flatnonzero(sizes > 2).tolist():
        out[g] = math.fsum(p[starts[g]:starts[g] + sizes[g]].tolist()) / sizes[g]
    return out


class ColumnScorer:
    """Scores chunks of images from parsed columns: images.jsonl lines and what they add to the ranking."""

    def __init__(self, columns: Columns, scoring: Scoring) -> None:
        if not supported(scoring):
            raise ValueError("these settings are scored per occurrence (postprocess.score_image)")
        self.columns, self.pool = columns, scoring.pool
        self.how = scoring.aggregate.how  # type: ignore[attr-defined]
        self.filter = _Filter.of(scoring.image_filter)
        self._label_json = [json.dumps(label) for label in columns.labels]

    def score(self, chunk: Chunk) -> tuple[str, list[ImageResult], Kept]:
        """(images.jsonl lines, the images with a damaged record or a mismatched key (unscored), what the
        chunk adds to the ranking)."""
        n, m = chunk.files.shape
        files, offsets = chunk.files.ravel(), chunk.offsets.ravel()
        part, record = self.columns.records(files, offsets)
        found = part >= 0
        ok, checks, counts, forms, probs = self.columns.gather(part[found], record[found], self.how)
        sample_ok = np.zeros(n * m, bool)
        sample_ok[found] = ok
        rests = [f"{crop}|{k}" for crop, k in chunk.columns]
        mismatch = np.zeros(n * m, bool)  # the line holds another key (its hash collides): checked first,
        mismatch[found] = checks != key_checks(list(chunk.uids), rests).ravel()[found]  # as the reader does
        damaged = ~sample_ok & ~mismatch
        bad_images = (damaged | mismatch).reshape(n, m).any(axis=1)
        bad: list[ImageResult] = []
        for i in np.flatnonzero(bad_images).tolist():
            cols = range(i * m, (i + 1) * m)
            bad.append(ImageResult(chunk.uids[i], chunk.paths[i], {}, {},
                                   damaged=[(int(files[s]), int(offsets[s]), int(chunk.lengths.ravel()[s]))
                                            for s in cols if damaged[s]],
                                   mismatched=[f"{chunk.uids[i]}|{rests[s - i * m]}" for s in cols if mismatch[s]]))
        # occurrences of the good images: image row, sample column, label
        sample_counts = np.zeros(n * m, np.int64)
        sample_counts[found] = counts
        keep = np.repeat(~bad_images, m)[found]
        per_found = np.repeat(keep, counts)
        forms, probs = forms[per_found], probs[per_found]
        sample_ids = np.flatnonzero(found)[keep]
        occ_counts = counts[keep]
        image = np.repeat(sample_ids // m, occ_counts)
        column = np.repeat(sample_ids % m, occ_counts)
        label = self.columns.form_label[forms].astype(np.int64)
        lines, kept = self._images(chunk, n, image, column, label, forms, probs, bad_images)
        return lines, bad, kept

    def _images(self, chunk: Chunk, n: int, image: np.ndarray, column: np.ndarray, label: np.ndarray,
                forms: np.ndarray, probs: np.ndarray, bad_images: np.ndarray) -> tuple[str, Kept]:
        n_labels = max(len(self.columns.labels), 1)
        key = image * n_labels + label
        order = np.argsort(key, kind="stable")  # by (image, label); occurrence order within each
        key_sorted = key[order]
        starts = np.flatnonzero(np.concatenate([[True], key_sorted[1:] != key_sorted[:-1]])[: len(key)])
        sizes = np.diff(np.concatenate([starts, [len(key)]]))
        g_image, g_label = image[order][starts], label[order][starts]
        g_first = order[starts]  # the group's first occurrence: where the label first appears in the image
        col_sorted = column[order]
        new_sample = np.concatenate([[True], col_sorted[1:] != col_sorted[:-1]])[: len(key)]
        new_sample[starts] = True
        g_samples = np.add.reduceat(new_sample.astype(np.int64), starts) if len(starts) else np.empty(0, np.int64)
        g_score = _pool(self.pool, probs[order], starts, sizes) if len(starts) else np.empty(0)
        # the filter, per image
        keep = np.ones(len(starts), bool)
        if self.filter.q is not None:
            keep &= g_score >= _cuts(g_image, g_score, n, self.filter.q)[g_image]
        if self.filter.t is not None:
            keep &= g_score >= self.filter.t
        kept = Kept(int(n - bad_images.sum()), g_label[keep], g_score[keep], forms[order][np.repeat(keep, sizes)])
        return self._lines(chunk, n, bad_images, g_image, g_first, g_label, g_score, g_samples, keep), kept

    def _lines(self, chunk: Chunk, n: int, bad_images: np.ndarray, g_image: np.ndarray, g_first: np.ndarray,
               g_label: np.ndarray, g_score: np.ndarray, g_samples: np.ndarray, keep: np.ndarray) -> str:
        """images.jsonl lines, as json.dumps writes them, each image's labels in the order they first appear:
        the text of every (label, score) pair is made once, float reprs by one list repr."""
        shown = np.lexsort((g_first, g_image))
        bounds = np.searchsorted(g_image[shown], np.arange(n + 1)).tolist()
        kept_shown = keep[shown]
        kept_bounds = np.concatenate([[0], np.cumsum(kept_shown)])[bounds].tolist()
        label_json = self._label_json
        head = [label_json[g] + ": " for g in g_label[shown].tolist()]
        scores = repr(g_score[shown].tolist())[1:-1].split(", ") if len(shown) else []
        counts = g_samples[shown].tolist()
        labels = [f"{h}[{s}, {c}]" for h, s, c in zip(head, scores, counts)]
        kept = [h + s for h, s, k in zip(head, scores, kept_shown.tolist()) if k]
        lines = []
        for i in range(n):
            if bad_images[i]:
                continue
            lines.append(f'{{"path": {json.dumps(chunk.paths[i])}, "uid": {json.dumps(chunk.uids[i])}, "kept": {{'
                         f'{", ".join(kept[kept_bounds[i]:kept_bounds[i + 1]])}}}, "labels": {{'
                         f'{", ".join(labels[bounds[i]:bounds[i + 1]])}}}}}\n')
        return "".join(lines)
