"""Per-image label filters (docs/method.md, "Stage 1b"): image scores in, the kept subset out.

Each filter is a small class built from plain keyword arguments (Hydra `_target_`), validated at construction,
with a `name` for logging. Calling it on {label: image score} returns the kept labels with their scores, in
the input order. Scores are expected to be finite (image scores from `pool_grouped` are in [0, 1]).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Protocol

import numpy as np

from llm2labels.errors import ConfigError


class ImageFilter(Protocol):
    """What the pipeline calls a filter: {label: image score} in, the kept labels with their scores out."""

    name: str

    def __call__(self, scores: Mapping[str, float]) -> dict[str, float]: ...


def _in_range(owner: str, param: str, value: object, lo: float, hi: float) -> float:
    """Return `value` as a float if it is a number in [lo, hi]; raise ConfigError naming the parameter otherwise."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not ok or math.isnan(float(value)) or not lo <= float(value) <= hi:  # type: ignore[arg-type]
        raise ConfigError(f"{owner}: {param} must be a number in [{lo:g}, {hi:g}], got {value!r}")
    return float(value)  # type: ignore[arg-type]


def quantile(values: list[float], q: float) -> float:
    """`float(np.quantile(values, q))` (linear method) bit for bit, without numpy's ~40 us of call overhead.

    numpy's steps, as float64 operations in the same order: sort; virtual index v = (n - 1) * q; neighbours
    floor(v) and floor(v) + 1, or the last value twice (weight v + 1) when v >= n - 1; then `_lerp`, which
    works from the upper neighbour when the weight is >= 0.5. NaN (which numpy sorts last) goes to numpy.
    """
    if any(x != x for x in values):
        return float(np.quantile(np.asarray(values, dtype=float), q))
    ordered = sorted(map(float, values))
    n = len(ordered)
    v = (n - 1) * q
    if v >= n - 1:
        a = b = ordered[-1]
        t = v + 1  # numpy's weight against its index -1
    else:
        below = math.floor(v)
        a, b, t = ordered[below], ordered[below + 1], v - below
    diff = b - a
    return b - diff * (1 - t) if t >= 0.5 else a + diff * t


def percentile_cut(scores: Mapping[str, float], q: float) -> float:
    """The q-th percentile (q in percent) of a non-empty `scores`: the cut of the percentile filters."""
    return quantile(list(scores.values()), q / 100.0)


class _Filter:
    """What the filters here share: a `name` and a repr of their settings."""

    name: str = "base"

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({params})"


class PercentileFilter(_Filter):
    """Keep labels whose score is >= the q-th percentile of this image's scores (paper default, q = 68).

    `q` is in percent (68 keeps roughly the top 32%; note 0.68 would mean the 0.68th percentile). The cut is
    `np.quantile(scores, q / 100)` with numpy's default linear interpolation; labels tied at the cut are kept,
    so a single label, or an image whose labels all score the same, keeps everything.
    """

    name = "percentile"

    def __init__(self, q: float = 68.0) -> None:
        self.q = _in_range("PercentileFilter", "q (percent)", q, 0.0, 100.0)

    def cut(self, scores: Mapping[str, float]) -> float:
        """The score a label needs to be kept (the q-quantile); only for a non-empty `scores`."""
        return percentile_cut(scores, self.q)

    def __call__(self, scores: Mapping[str, float]) -> dict[str, float]:
        if not scores:
            return {}
        cut = self.cut(scores)
        return {label: s for label, s in scores.items() if s >= cut}


class ThresholdFilter(_Filter):
    """Keep labels whose image score is >= t (method `th`)."""

    name = "th"

    def __init__(self, t: float = 0.68) -> None:
        self.t = _in_range("ThresholdFilter", "t", t, 0.0, 1.0)

    def __call__(self, scores: Mapping[str, float]) -> dict[str, float]:
        return {label: s for label, s in scores.items() if s >= self.t}


class BothFilter(_Filter):
    """Keep labels that pass both the percentile and the threshold filter (method `both`).

    The quantile is computed over the image's *full* score set, before the threshold removes anything, so
    the order does not matter: the result is the intersection of the two filters applied on their own.
    """

    name = "both"

    def __init__(self, q: float = 68.0, t: float = 0.68) -> None:
        self.q = _in_range("BothFilter", "q (percent)", q, 0.0, 100.0)
        self.t = _in_range("BothFilter", "t", t, 0.0, 1.0)

    def __call__(self, scores: Mapping[str, float]) -> dict[str, float]:
        if not scores:
            return {}
        cut = percentile_cut(scores, self.q)
        return {label: s for label, s in scores.items() if s >= cut and s >= self.t}


class NoFilter(_Filter):
    """Keep every label (method `none`)."""

    name = "none"

    def __call__(self, scores: Mapping[str, float]) -> dict[str, float]:
        return dict(scores)
