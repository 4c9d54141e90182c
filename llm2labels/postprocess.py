"""From stored samples to the ranked candidate list, with no model in sight (method.md, Stages 1-1b).

Per image: parse every sample into labels with token spans, score each occurrence from its own tokens
(the token aggregator), pool the occurrences over the image's samples and crops, and filter. Then pool the
surviving labels over the dataset with a streaming ranker, one image at a time, so memory stays flat.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from llm2labels.normalize import normalize_label
from llm2labels.parsing import parse_labels, token_indices
from llm2labels.scoring.aggregate import pool_image
from llm2labels.scoring.rank import DatasetRanker


@dataclass
class ImageResult:
    """One image after filtering: every label's (image score, sample count), and the labels that survived."""

    uid: str
    path: str
    labels: dict[str, tuple[float, int]]
    kept: dict[str, float]
    surface: dict[str, list[str]] = field(default_factory=dict)


def sample_occurrences(record: Mapping[str, Any], aggregate: Callable[[list[float]], float]
                       ) -> Iterator[tuple[str, str, float]]:
    """(normalised label, surface form, label probability) for every label occurrence in one sample."""
    text, ends, logprobs = record["text"], record["token_ends"], record["logprobs"]
    for span in parse_labels(text):
        label = normalize_label(span.text)
        if label:
            tokens = token_indices(ends, span.start, span.end)
            yield label, span.text, aggregate([logprobs[t] for t in tokens])


def score_image(uid: str, path: str, samples: Iterable[Mapping[str, Any]],
                aggregate: Callable[[list[float]], float], pool: str,
                image_filter: Callable[[dict[str, float]], dict[str, float]]) -> ImageResult:
    """Pool one image's samples (each sample gets its own id) and apply the per-image filter."""
    occurrences: list[tuple[str, int, float]] = []
    surface: dict[str, list[str]] = defaultdict(list)
    for sample_id, record in enumerate(samples):
        for label, form, p in sample_occurrences(record, aggregate):
            occurrences.append((label, sample_id, p))
            surface[label].append(form)
    labels = pool_image(occurrences, pool=pool)
    kept = image_filter({label: score for label, (score, _) in labels.items()})
    return ImageResult(uid, path, labels, kept, dict(surface))


def rank_images(results: Iterable[ImageResult], ranker: DatasetRanker | None = None) -> DatasetRanker:
    """Feed filtered images into a (new or given) dataset ranker; the ranker keeps per-label sums only."""
    ranker = ranker or DatasetRanker()
    for r in results:
        ranker.add_image(r.kept, {label: r.surface.get(label, []) for label in r.kept})
    return ranker
