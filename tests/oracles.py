"""Plain readings of the method, kept beside the tests as references for the fast paths the package runs.

`sample_occurrences` and `pool_image` say in a few lines what `postprocess.score_image` does in one
optimised loop; the tests check the two agree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from llm2labels.normalize import normalize_label
from llm2labels.parsing import parse_labels, token_indices
from llm2labels.scoring.aggregate import check_probability, pool_grouped


def sample_occurrences(record: Mapping[str, Any], aggregate: Callable[[list[float]], float]
                       ) -> Iterator[tuple[str, str, float]]:
    """(normalised label, surface form, label probability) for every label occurrence in one sample."""
    text, ends, logprobs = record["text"], record["token_ends"], record["logprobs"]
    for span in parse_labels(text):
        label = normalize_label(span.text)
        if label:
            tokens = token_indices(ends, span.start, span.end)
            yield label, span.text, aggregate([logprobs[t] for t in tokens])


def pool_image(occurrences: Iterable[tuple[str, int, float]], pool: str = "max") -> dict[str, tuple[float, int]]:
    """One image's occurrences (normalised label, sample id, probability) -> label -> (image score, count).

    The image score pools *all* occurrences of the label with `pool`, so a label listed twice in one sample
    enters twice; the count is the number of *distinct* samples that produced it. NaN counts as 0.
    """
    probs: dict[str, list[float]] = {}
    samples: dict[str, set[int]] = {}
    for label, sample_id, p in occurrences:
        probs.setdefault(label, []).append(check_probability(label, p))
        samples.setdefault(label, set()).add(sample_id)
    return pool_grouped(probs, {label: len(ids) for label, ids in samples.items()}, pool)
