"""Image-level closed-set metrics: by hand and against sklearn's average_precision_score."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from llm2labels.classes import ClassInfo
from llm2labels.evaluation.image import image_class_scores, image_metrics
from llm2labels.evaluation.matching import ClassMatcher

TOY = ClassMatcher([
    ClassInfo(0, "person", ("person", "man")),
    ClassInfo(1, "wardrobe", ("wardrobe", "closet")),
    ClassInfo(2, "closet", ("closet",)),
])


def test_image_class_scores_max_over_labels() -> None:
    scores = image_class_scores({"man": 0.4, "People": 0.7, "closets": 0.5, "sky": 0.9, "wardrobe": 0.2}, TOY)
    # person: max(0.4, 0.7); closet gives 0.5 to both classes it names; sky ignored (closed set)
    assert scores == {0: 0.7, 1: 0.5, 2: 0.5}
    assert image_class_scores({}, TOY) == {}


def test_ap_by_hand_with_ties() -> None:
    # class 0 over 3 images: scores 0.9, 0.5, 0.5; present in images 0 and 2.
    # thresholds 0.9: P 1, R 1/2; 0.5 (both tied images at once): P 2/3, R 1 -> AP = 1/2 + 1/2 * 2/3 = 5/6
    # class 1: present in image 1 only, score 0 there (absent), 0.3 in image 0:
    # threshold 0.3: P 0, R 0; threshold 0: P 1/3, R 1 -> AP = 1/3
    out = image_metrics([{0: 0.9, 1: 0.3}, {0: 0.5}, {0: 0.5}], [{0}, {1}, {0}], num_classes=3)
    assert out["mAP"] == pytest.approx(100 * (5 / 6 + 1 / 3) / 2)
    assert (out["num_images"], out["num_classes"]) == (3, 2)  # class 2 is not present: left out
    # micro: 6 pairs, scores (0.9, .3 | .5, 0 | .5, 0), truth (1, 0 | 0, 1 | 1, 0)
    # 0.9: P 1 R 1/3; 0.5: P 2/3 R 2/3; 0.3: P 2/4; 0: P 3/6 R 1 -> 1/3 + 1/3*2/3 + 1/3*1/2
    assert out["micro_AUC"] == pytest.approx(100 * (1 / 3 + 2 / 9 + 1 / 6))


def test_no_present_class() -> None:
    assert image_metrics([{0: 0.5}], [set()], num_classes=2) == {"mAP": 0.0, "micro_AUC": 0.0,
                                                                 "num_images": 1, "num_classes": 0}


def test_bad_ids() -> None:
    with pytest.raises(ValueError, match="outside"):
        image_metrics([{5: 0.5}], [{0}], num_classes=2)
    with pytest.raises(ValueError, match="predictions"):
        image_metrics([{}], [{0}, {1}], num_classes=2)


@pytest.mark.parametrize("seed", range(20))
def test_random_vs_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, c = int(rng.integers(1, 40)), int(rng.integers(1, 12))
    truth = rng.random((n, c)) < rng.uniform(0.05, 0.6)
    # coarse scores -> many ties; some predictions missing (score 0), some present with score 0
    scores = np.round(rng.random((n, c)), 1) * (rng.random((n, c)) < 0.7)
    predictions = [{j: float(scores[i, j]) for j in range(c) if scores[i, j] > 0 or rng.random() < 0.2}
                   for i in range(n)]
    truths = [set(np.flatnonzero(truth[i]).tolist()) for i in range(n)]
    out = image_metrics(predictions, truths, num_classes=c)
    present = np.flatnonzero(truth.any(axis=0))
    assert out["num_classes"] == len(present) and out["num_images"] == n
    if not len(present):
        assert out["mAP"] == 0.0
        return
    expected = np.mean([average_precision_score(truth[:, j], scores[:, j]) for j in present])
    assert out["mAP"] == pytest.approx(100 * expected, abs=1e-9)
    micro = average_precision_score(truth[:, present], scores[:, present], average="micro")
    assert out["micro_AUC"] == pytest.approx(100 * micro, abs=1e-9)
