"""Image-level, closed-set metrics (paper Table 3; docs/method.md, "Evaluation").

Each image's label scores are mapped to classes (labels matching no class are ignored; a class takes the
maximum score of its labels; a label matching several classes gives its score to each). Over the images:
- `mAP`: the mean over the classes present in the ground truth of these images of each class's average
  precision, ranking the images by the class's score (0 where the class was not predicted; scores are assumed
  >= 0). AP is the step sum over the distinct score thresholds, sum_n (R_n - R_{n-1}) P_n, with tied scores
  forming one threshold: sklearn's `average_precision_score`.
- `micro_AUC`: the same step-sum area for the micro-averaged precision-recall curve, i.e. the AP of all
  (image, present class) pairs pooled into one ranking: sklearn's `average_precision_score(average="micro")`
  restricted to the present classes. The step sum is used, not trapezoids, which over-estimate the area
  where precision drops.
Plain numpy, so it runs without sklearn.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

from llm2labels.evaluation.matching import ClassMatcher


def image_class_scores(label_scores: Mapping[str, float], matcher: ClassMatcher) -> dict[int, float]:
    """Class id -> the maximum score of the image's labels that match it."""
    out: dict[int, float] = {}
    for label, score in label_scores.items():
        for class_id in matcher.match(label):
            if class_id not in out or score > out[class_id]:
                out[class_id] = float(score)
    return out


def average_precision(scores: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Step-sum AP of each column of `scores` (n_items, n_cols) against binary `truth`; nan where no positive.

    AP = (1/P) * sum over positive items of the precision at the lowest threshold that still includes them
    (the end of their tie group in the descending order), which equals sum_n (R_n - R_{n-1}) P_n.
    """
    n = scores.shape[0]
    order = np.argsort(-scores, axis=0, kind="stable")
    s = np.take_along_axis(scores, order, axis=0)
    y = np.take_along_axis(truth, order, axis=0).astype(np.float64)
    precision = np.cumsum(y, axis=0) / np.arange(1, n + 1)[:, None]
    # Row index of the end of each row's tie group: a row ends a group when the next score differs.
    group_end = np.ones_like(s, dtype=bool)
    group_end[:-1] = s[:-1] != s[1:]
    end_index = np.where(group_end, np.arange(n)[:, None], n)
    end_index = np.minimum.accumulate(end_index[::-1], axis=0)[::-1]
    at_end = np.take_along_axis(precision, end_index, axis=0)
    positives = y.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(positives > 0, (y * at_end).sum(axis=0) / positives, np.nan)


def image_metrics(predictions: Sequence[Mapping[int, float]], truths: Sequence[Collection[int]],
                  num_classes: int) -> dict[str, Any]:
    """mAP and micro_AUC in percent over the classes present in `truths`.

    `num_classes` in the result is the number of present classes the mean is over; both figures are 0 when
    no class is present.
    """
    if len(predictions) != len(truths):
        raise ValueError(f"{len(predictions)} predictions for {len(truths)} ground truths")
    n = len(truths)
    scores = np.zeros((n, num_classes))
    truth = np.zeros((n, num_classes), dtype=bool)
    for i, (pred, gt) in enumerate(zip(predictions, truths)):
        for class_id, score in pred.items():
            _check_id(class_id, num_classes)
            scores[i, class_id] = score
        for class_id in gt:
            _check_id(class_id, num_classes)
            truth[i, class_id] = True
    present = np.flatnonzero(truth.any(axis=0))
    if not len(present):
        return {"mAP": 0.0, "micro_AUC": 0.0, "num_images": n, "num_classes": 0}
    per_class = average_precision(scores[:, present], truth[:, present])
    micro = average_precision(scores[:, present].reshape(-1, 1), truth[:, present].reshape(-1, 1))
    return {"mAP": 100 * float(per_class.mean()), "micro_AUC": 100 * float(micro[0]), "num_images": n,
            "num_classes": len(present)}


def _check_id(class_id: int, num_classes: int) -> None:
    if not 0 <= class_id < num_classes:
        raise ValueError(f"class id {class_id} is outside 0..{num_classes - 1}")
