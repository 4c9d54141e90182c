"""Per-image filters on hand-computed cases, plus the `both` = intersection property."""

import math
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from llm2labels.errors import ConfigError
from llm2labels.scoring.filters import BothFilter, NoFilter, PercentileFilter, ThresholdFilter, quantile

FIVE = {"a": 0.1, "b": 0.2, "c": 0.3, "d": 0.4, "e": 0.5}


def test_percentile_default_68() -> None:
    # linear quantile: position (5-1)*0.68 = 2.72 -> 0.3 + 0.72*(0.4-0.3) = 0.372
    f = PercentileFilter()
    assert f.cut(FIVE) == pytest.approx(0.372)
    assert f.cut(FIVE) == float(np.quantile(list(FIVE.values()), 0.68))
    assert f(FIVE) == {"d": 0.4, "e": 0.5}


def test_percentile_keeps_ties_at_the_cut() -> None:
    # q=50: position 2 -> exactly 0.3, and c (0.3) is kept because the test is >=
    assert PercentileFilter(50)(FIVE) == {"c": 0.3, "d": 0.4, "e": 0.5}
    # three labels tied at 0.5: position 3*0.68 = 2.04 falls between two 0.5s -> cut 0.5, all three kept
    tied = {"a": 0.2, "b": 0.5, "c": 0.5, "d": 0.5}
    assert PercentileFilter(68)(tied) == {"b": 0.5, "c": 0.5, "d": 0.5}
    assert PercentileFilter(100)({"a": 0.7, "b": 0.7, "c": 0.1}) == {"a": 0.7, "b": 0.7}


def test_percentile_edges() -> None:
    assert PercentileFilter(0)(FIVE) == FIVE
    assert PercentileFilter(100)(FIVE) == {"e": 0.5}
    assert PercentileFilter(99.9)({"x": 0.01}) == {"x": 0.01}  # a single label is its own quantile
    assert PercentileFilter()({}) == {}


@given(st.dictionaries(st.text(max_size=3), st.floats(0, 1), min_size=1, max_size=12), st.floats(0, 100))
def test_percentile_matches_numpy(scores: dict[str, float], q: float) -> None:
    cut = np.quantile(np.array(list(scores.values())), q / 100)
    assert PercentileFilter(q)(scores) == {k: v for k, v in scores.items() if v >= cut}


def test_threshold() -> None:
    scores = {"a": 0.68, "b": 0.679, "c": 0.9}
    assert ThresholdFilter()(scores) == {"a": 0.68, "c": 0.9}  # default t = 0.68, >= keeps a
    assert ThresholdFilter(0)(scores) == scores
    assert ThresholdFilter(1)({"a": 1.0, "b": 0.99}) == {"a": 1.0}
    assert ThresholdFilter(0.5)({}) == {}


def test_both_hand_case() -> None:
    # percentile 68 keeps d, e (cut 0.372); threshold 0.45 keeps e; both -> e
    assert BothFilter(q=68, t=0.45)(FIVE) == {"e": 0.5}
    # the quantile is over all five scores, not over those above t: with t=0.35 (d, e pass) the cut stays
    # 0.372, so d survives; a quantile over {d, e} only would have cut at 0.468 and dropped d
    assert BothFilter(q=68, t=0.35)(FIVE) == {"d": 0.4, "e": 0.5}
    assert BothFilter()({}) == {}


@given(
    st.dictionaries(st.text(max_size=3), st.floats(0, 1), max_size=12),
    st.floats(0, 100),
    st.floats(0, 1),
)
def test_both_is_intersection(scores: dict[str, float], q: float, t: float) -> None:
    p, th = PercentileFilter(q)(scores), ThresholdFilter(t)(scores)
    assert BothFilter(q, t)(scores) == {k: v for k, v in scores.items() if k in p and k in th}


def test_none_keeps_all_as_a_copy() -> None:
    out = NoFilter()(FIVE)
    assert out == FIVE and out is not FIVE
    assert NoFilter()({}) == {}


def test_names() -> None:
    assert [f.name for f in (PercentileFilter(), ThresholdFilter(), BothFilter(), NoFilter())] == [
        "percentile",
        "th",
        "both",
        "none",
    ]


@pytest.mark.parametrize(
    ("make", "param"),
    [
        (lambda: PercentileFilter(q=120), "q"),
        (lambda: PercentileFilter(q=-1), "q"),
        (lambda: PercentileFilter(q=math.nan), "q"),
        (lambda: PercentileFilter(q="68"), "q"),
        (lambda: ThresholdFilter(t=1.5), "t"),
        (lambda: ThresholdFilter(t=-0.1), "t"),
        (lambda: ThresholdFilter(t=True), "t"),
        (lambda: BothFilter(q=120), "q"),
        (lambda: BothFilter(t=-1), "t"),
    ],
)
def test_invalid_parameters_raise_config_error(make: Callable[[], object], param: str) -> None:
    with pytest.raises(ConfigError, match=rf"\b{param}\b.*must be a number in \["):
        make()


def test_int_parameters_accepted() -> None:
    assert PercentileFilter(q=50).q == 50.0 and ThresholdFilter(t=1).t == 1.0


FLOATS = st.floats(allow_nan=False) | st.sampled_from([0.0, 0.25, 0.5, 1.0, math.inf, -math.inf])


@given(st.lists(FLOATS, min_size=1, max_size=40), st.floats(0, 1) | st.sampled_from([0.0, 0.5, 0.68, 1.0]))
def test_quantile_is_numpys_bit_for_bit(values: list[float], q: float) -> None:
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf: numpy warns, Python does not
        expected = float(np.quantile(np.array(values, dtype=float), q))
    got = quantile(values, q)
    assert got == expected or (math.isnan(got) and math.isnan(expected))


def test_quantile_with_nan_is_numpys() -> None:
    assert math.isnan(quantile([0.2, math.nan, 0.4], 0.5))
    assert quantile([3, 1, 2], 0.5) == 2.0  # ints too
