"""Evaluation of ranked label lists against ground-truth class lists with synonyms (docs/method.md).

Usable on its own, for the pipeline's labels.csv / vocabulary.json and for any other tagger's ranked list:
`matching` (label -> classes), `vocabulary` (P@K, R@K, AUC(PR@K), #L), `image` (closed-set mAP and micro
AUC), `plots` (the PR@K figure); the CLI is `python -m llm2labels.evaluate`.
"""

from llm2labels.evaluation.image import image_class_scores, image_metrics
from llm2labels.evaluation.matching import ClassMatcher
from llm2labels.evaluation.plots import plot_pr_curves
from llm2labels.evaluation.vocabulary import (
    VocabResult,
    evaluate_ranked,
    evaluate_with_curves,
    read_ranked,
    vocabulary_metrics,
)

__all__ = [
    "ClassMatcher",
    "VocabResult",
    "evaluate_ranked",
    "evaluate_with_curves",
    "image_class_scores",
    "image_metrics",
    "plot_pr_curves",
    "read_ranked",
    "vocabulary_metrics",
]
