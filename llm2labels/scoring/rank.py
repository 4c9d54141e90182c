"""Dataset-level ranking of filtered image labels into the candidate list L (docs/method.md, "Dataset ranking").

Streaming: `DatasetRanker` keeps only per-label accumulators (image count, score sum, surface-form counts),
never per-image data, so any number of images fits. Images are added in dataset order by one process (the
scoring workers hand their results back to it), so the sums, and the ranking, do not depend on the workers.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import pandas as pd

Scorer = Callable[[float, float], float]


def occ_prob(occ: float, prob: float) -> float:
    """occ * prob: the paper's default dataset score ("LLM2Label")."""
    return occ * prob


def occ(occ: float, prob: float) -> float:
    """occ alone: the share of images where the label survived ("LLM2Label_occ")."""
    return occ


def prob(occ: float, prob: float) -> float:
    """prob alone: the mean image score over the images where the label survived."""
    return prob


@dataclass
class RankedLabel:
    """One row of the candidate list L; `rank` is 1-based, `surface_forms` most frequent first."""

    rank: int
    label: str
    score: float
    occ: float
    prob: float
    images: int
    surface_forms: list[str] = field(default_factory=list)


class DatasetRanker:
    """Accumulate filtered image labels one image at a time, then rank them over the dataset."""

    def __init__(self) -> None:
        self.n_images = 0  # every add_image call, also those where nothing survived
        self._images: dict[str, int] = {}  # label -> images where it survived
        self._score_sum: dict[str, float] = {}  # label -> sum of its image scores over those images
        self._surface: dict[str, Counter[str]] = {}  # label -> surface form -> times given

    def add_image(
        self, kept: Mapping[str, float], surface: Mapping[str, Iterable[str]] | None = None
    ) -> None:
        """Count one image: `kept` maps each label that survived its filter to its image score.

        `surface` optionally maps a label to the raw strings that produced it in this image; each string is
        counted as often as it is given (pass a set to count images instead of occurrences). Surface forms of
        labels not in `kept` are ignored. An image with nothing kept still counts in n.
        """
        for label, score in kept.items():
            if math.isnan(score):
                raise ValueError(f"DatasetRanker: image score of {label!r} is NaN")
        self.n_images += 1
        images, sums = self._images, self._score_sum
        for label, score in kept.items():
            images[label] = images.get(label, 0) + 1
            sums[label] = sums.get(label, 0.0) + float(score)
        for label, forms in (surface or {}).items():
            if label in kept:
                counts = self._surface.get(label)
                if counts is None:
                    counts = self._surface[label] = Counter()
                counts.update(forms)

    def rank(self, scorer: Scorer = occ_prob) -> list[RankedLabel]:
        """Score every label with `scorer(occ, prob)` and sort: score desc, then image count desc, then label.

        occ = images where the label survived / images added; prob = mean image score over those images.
        """
        n = self.n_images
        rows = []
        for label, count in self._images.items():
            share, mean = count / n, self._score_sum[label] / count
            rows.append((scorer(share, mean), count, label, share, mean))
        rows.sort(key=lambda r: (-r[0], -r[1], r[2]))
        return [
            RankedLabel(i, label, score, share, mean, count, self._surface_order(label))
            for i, (score, count, label, share, mean) in enumerate(rows, start=1)
        ]

    def _surface_order(self, label: str) -> list[str]:
        forms = self._surface.get(label, Counter())
        return sorted(forms, key=lambda f: (-forms[f], f))


COLUMNS = ["rank", "label", "score", "occ", "prob", "images", "surface_forms"]


def to_frame(ranked: list[RankedLabel]) -> pd.DataFrame:
    """The ranked list as a table, surface forms joined with "|"."""
    rows = [[r.rank, r.label, r.score, r.occ, r.prob, r.images, "|".join(r.surface_forms)] for r in ranked]
    return pd.DataFrame(rows, columns=COLUMNS)
