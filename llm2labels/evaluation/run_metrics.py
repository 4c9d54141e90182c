"""Metrics at the end of a run whose dataset has ground truth: metrics.json, pr_curve.csv, pr_curve.png.

Vocabulary level: the ranked list (labels, or synsets after grouping: `evaluation.entries`) against the
dataset's class list, for the classes seen in the evaluated images and for the full list.
Image level (closed set): an image's score for a label is the run's own scorer applied to the label's
image occurrence (share of the image's samples that produced it) and image score, for the labels the
per-image filter kept (others score 0); a class takes the best score among its labels.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from llm2labels.evaluation.image import image_class_scores, image_metrics
from llm2labels.evaluation.matching import ClassMatcher
from llm2labels.evaluation.plots import plot_pr_curves
from llm2labels.evaluation.vocabulary import evaluate_with_curves
from llm2labels.runfiles import image_records

Scorer = Callable[[float, float], float]


def image_label_scores(line: Mapping[str, Any], samples: int, scorer: Scorer) -> dict[str, float]:
    """One images.jsonl row -> label -> the scorer's value on the image's kept labels."""
    labels = line["labels"]
    return {label: scorer(labels[label][1] / samples, score) for label, score in line["kept"].items()}


def evaluate_run(out_dir: Path, entries: Sequence[str | Sequence[str]], class_list: str,
                 truth: Mapping[str, Sequence[int]], samples_per_image: int, scorer: Scorer,
                 k: int | None = None, max_k: int = 5000, precision_divisor: str = "k") -> dict[str, Any]:
    """Write pr_curve.csv and pr_curve.png into `out_dir`; return the metrics (the caller writes metrics.json).

    `precision_divisor`: what P@K divides by, "k" or "min_k_len" (evaluation.vocabulary).
    """
    matcher = ClassMatcher.from_name(class_list)
    predictions, truths = [], []
    for line in image_records(out_dir / "images.jsonl"):
        if line["path"] in truth:
            predictions.append(image_class_scores(image_label_scores(line, samples_per_image, scorer), matcher))
            truths.append(set(truth[line["path"]]))
    seen = sorted(set().union(*truths)) if truths else []
    metrics, curves = evaluate_with_curves(entries, class_list, k=k, seen=seen or None, max_k=max_k,
                                           precision_divisor=precision_divisor)
    metrics["image"] = image_metrics(predictions, truths, len(matcher.classes))
    rows = [pd.DataFrame({"set": name, "K": c.ks, "precision": c.precision, "recall": c.recall})
            for name, c in curves.items()]
    pd.concat(rows).to_csv(out_dir / "pr_curve.csv", index=False)
    plot_pr_curves({f"{name} ({class_list})": c for name, c in curves.items()}, out_dir / "pr_curve.png",
                   k_mark=metrics["k"], title=f"PR@K on {class_list}")
    return metrics
