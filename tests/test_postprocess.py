import math

import pytest

from llm2labels.postprocess import rank_images, sample_occurrences, score_image
from llm2labels.proposers.base import token_ends_from_pieces
from llm2labels.scoring import NoFilter, PercentileFilter, TokenAggregator, occ_prob


def _record(pieces: list[str], probs: list[float]) -> dict:
    text, ends = token_ends_from_pieces(pieces)
    return {"text": text, "token_ends": ends, "logprobs": [math.log(p) for p in probs]}


# "['Trees', 'sky']" as tokens: "['", "Tre", "es", "', '", "sky", "']"
TREES_SKY = _record(["['", "Tre", "es", "', '", "sky", "']"], [0.9, 0.5, 0.8, 0.9, 0.6, 0.9])


def test_each_label_is_scored_from_its_own_tokens():
    occ = list(sample_occurrences(TREES_SKY, TokenAggregator("product")))
    assert [(label, form) for label, form, _ in occ] == [("tree", "Trees"), ("sky", "sky")]
    assert occ[0][2] == pytest.approx(0.5 * 0.8) and occ[1][2] == pytest.approx(0.6)
    mins = [p for *_, p in sample_occurrences(TREES_SKY, TokenAggregator("min"))]
    assert mins == pytest.approx([0.5, 0.6])


def test_image_pools_over_samples_then_filters():
    second = _record(["['", "tree", "', '", "car", "']"], [0.9, 0.7, 0.9, 0.2, 0.9])
    r = score_image("u", "a.jpg", [TREES_SKY, second], TokenAggregator("product"), "max", NoFilter())
    # tree: max(0.4, 0.7) from 2 samples; sky 0.6 from 1; car 0.2 from 1
    assert r.labels["tree"] == (pytest.approx(0.7), 2)
    assert r.labels["sky"] == (pytest.approx(0.6), 1) and r.labels["car"] == (pytest.approx(0.2), 1)
    assert r.surface["tree"] == ["Trees", "tree"]
    # 68th percentile of [0.7, 0.6, 0.2] (linear) = 0.6 + 0.36 * 0.1 = 0.636 -> only tree survives
    kept = score_image("u", "a.jpg", [TREES_SKY, second], TokenAggregator("product"), "max", PercentileFilter(68))
    assert kept.kept == {"tree": pytest.approx(0.7)}


def test_dataset_ranking_from_two_images():
    a = score_image("u1", "a", [TREES_SKY], TokenAggregator("product"), "max", NoFilter())
    b = score_image("u2", "b", [_record(["['", "sky", "']"], [1.0, 0.8, 1.0])], TokenAggregator("product"),
                    "max", NoFilter())
    ranked = rank_images([a, b]).rank(occ_prob)
    # sky: occ 2/2, prob mean(0.6, 0.8) = 0.7 -> 0.7; tree: occ 1/2, prob 0.4 -> 0.2
    assert [(r.label, r.score) for r in ranked] == [("sky", pytest.approx(0.7)), ("tree", pytest.approx(0.2))]
