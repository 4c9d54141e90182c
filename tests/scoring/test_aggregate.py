"""Token aggregator (paper eq. 3) and per-image pooling, on hand-computed cases."""

import math

import pytest
from oracles import pool_image

from llm2labels.errors import ConfigError
from llm2labels.scoring.aggregate import TokenAggregator

LP = [math.log(0.5), math.log(0.8)]


@pytest.mark.parametrize(
    ("how", "expected"),
    [("product", 0.4), ("avg", 0.65), ("min", 0.5), ("max", 0.8)],  # 0.5*0.8; (0.5+0.8)/2; min; max
)
def test_aggregator_two_tokens(how: str, expected: float) -> None:
    assert TokenAggregator(how)(LP) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("how", ["product", "avg", "min", "max"])
def test_aggregator_empty_is_zero(how: str) -> None:
    assert TokenAggregator(how)([]) == 0.0


@pytest.mark.parametrize("bad", [-math.inf, math.nan, math.inf])
@pytest.mark.parametrize(
    ("how", "expected"),
    [("product", 0.0), ("avg", 0.25), ("min", 0.0), ("max", 0.5)],  # tokens p = 0.5 and 0: avg (0.5+0)/2
)
def test_aggregator_non_finite_counts_as_zero(bad: float, how: str, expected: float) -> None:
    assert TokenAggregator(how)([math.log(0.5), bad]) == pytest.approx(expected, abs=1e-12)


def test_aggregator_single_token_and_rounding() -> None:
    assert TokenAggregator("product")([math.log(0.3)]) == pytest.approx(0.3)
    # a log-softmax can round to a tiny positive value: it means p = 1, never p > 1
    assert TokenAggregator("max")([1e-9, math.log(0.2)]) == 1.0
    assert TokenAggregator("product")([1e-9]) == 1.0


def test_product_in_log_space_keeps_long_labels() -> None:
    # 1000 tokens of p = 0.5: 0.5**1000 ~ 9.3e-302, still representable
    assert TokenAggregator("product")([math.log(0.5)] * 1000) == pytest.approx(0.5**1000, rel=1e-9)


def test_aggregator_default_is_product() -> None:
    assert TokenAggregator().how == "product"


@pytest.mark.parametrize("how", ["mean", "", "PRODUCT", None, 3])
def test_aggregator_rejects_unknown(how: object) -> None:
    with pytest.raises(ConfigError, match="how"):
        TokenAggregator(how)  # type: ignore[arg-type]


# car: three occurrences, two of them in sample 0; tree: one occurrence in sample 2
OCC = [("car", 0, 0.9), ("car", 0, 0.5), ("car", 1, 0.7), ("tree", 2, 0.4)]


@pytest.mark.parametrize(
    ("pool", "car_score"),
    [("max", 0.9), ("min", 0.5), ("avg", 0.7), ("product", 0.315)],  # avg (0.9+0.5+0.7)/3; 0.9*0.5*0.7
)
def test_pool_image_scores_and_distinct_sample_counts(pool: str, car_score: float) -> None:
    out = pool_image(OCC, pool=pool)
    assert set(out) == {"car", "tree"}
    assert out["car"][0] == pytest.approx(car_score, abs=1e-12)
    assert out["car"][1] == 2  # samples 0 and 1; the repeat within sample 0 counts once
    assert out["tree"] == (pytest.approx(0.4), 1)


def test_pool_image_default_is_max_and_accepts_generators() -> None:
    out = pool_image(o for o in OCC)
    assert out["car"] == (0.9, 2)


def test_pool_image_empty_and_nan() -> None:
    assert pool_image([]) == {}
    assert pool_image([("a", 0, math.nan), ("a", 1, 0.5)], pool="min") == {"a": (0.0, 2)}


def test_pool_image_rejects_bad_pool_and_probability() -> None:
    with pytest.raises(ConfigError, match="pool"):
        pool_image(OCC, pool="median")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pool_image([("a", 0, 1.5)])
