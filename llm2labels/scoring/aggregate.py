"""Label probability from its tokens (paper eq. 3) and pooling of a label's occurrences within one image."""

from __future__ import annotations

import math
from collections.abc import Sequence

from llm2labels.errors import ConfigError

#: Ways to combine token probabilities (aggregator) or occurrence probabilities (image pooling).
HOWS = ("product", "avg", "min", "max")


def _check_how(name: str, value: object) -> str:
    if not isinstance(value, str) or value not in HOWS:
        raise ConfigError(f"{name} must be one of {', '.join(HOWS)}, got {value!r}")
    return value


def _clean_logprob(lp: float) -> float:
    """Map a token log-probability to a usable one: NaN and +-inf mean p = 0 (-inf); p > 1 from rounding -> 1."""
    lp = float(lp)
    if math.isnan(lp) or math.isinf(lp):
        return -math.inf
    return min(lp, 0.0)


class TokenAggregator:
    """Turn a label's token log-probabilities into one probability in [0, 1] (paper eq. 3).

    `how`: "product" is the sequence probability exp(sum log p_i) (paper eq. 1, summed in log space so long
    labels do not underflow early); "avg", "min", "max" act on the token probabilities p_i = exp(log p_i).
    A label with no tokens gets 0.0 (no evidence for it). NaN or infinite log-probabilities count as p_i = 0;
    positive log-probabilities (float rounding in a log-softmax) are clipped to p_i = 1.
    """

    def __init__(self, how: str = "product") -> None:
        self.how = _check_how("TokenAggregator: how", how)

    def __call__(self, logprobs: Sequence[float]) -> float:
        # -inf < lp <= 0 is the usual case (and False for NaN): only the others go through _clean_logprob.
        logs = [lp if -math.inf < lp <= 0.0 else _clean_logprob(lp) for lp in map(float, logprobs)]
        if len(logs) <= 1:
            return math.exp(logs[0]) if logs else 0.0  # every `how` agrees on one token: exp(log p)
        if self.how == "product":
            return math.exp(math.fsum(logs))  # exp(-inf) == 0.0
        if self.how == "avg":
            return math.fsum(math.exp(x) for x in logs) / len(logs)
        if self.how == "min":
            return math.exp(min(logs))
        return math.exp(max(logs))

    def __repr__(self) -> str:
        return f"TokenAggregator(how={self.how!r})"


def _pool(probs: list[float], how: str) -> float:
    """Combine a non-empty list of probabilities the way `TokenAggregator` combines token probabilities."""
    if how == "max":
        return max(probs)
    if how == "min":
        return min(probs)
    if how == "avg":
        return math.fsum(probs) / len(probs)
    return math.prod(probs)


def check_probability(label: str, p: float) -> float:
    """An occurrence probability as pooled: NaN counts as 0; outside [0, 1] is a bug upstream (ValueError)."""
    if 0.0 <= p <= 1.0:
        return float(p)
    if math.isnan(p):
        return 0.0
    raise ValueError(f"probability of {label!r} must be in [0, 1], got {p}")


def pool_grouped(
    probs: dict[str, list[float]], counts: dict[str, int], pool: str
) -> dict[str, tuple[float, int]]:
    """Pool one image's label occurrences (over its crops and samples): label -> (image score, count).

    `probs` holds each label's occurrence probabilities (checked with `check_probability`), `counts` the
    number of distinct samples that produced it. The image score pools all occurrences with `pool` ("max",
    "avg", "min", "product"), so a label listed twice in one sample enters twice.
    """
    pool = _check_how("pool", pool)
    if pool == "max":  # the default, inlined: this runs once per label of every image
        return {label: (max(ps), counts[label]) for label, ps in probs.items()}
    return {label: (_pool(ps, pool), counts[label]) for label, ps in probs.items()}
