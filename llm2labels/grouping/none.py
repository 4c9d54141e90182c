"""`grouper=none`: every ranked label is its own synset, and there is no hierarchy."""

from __future__ import annotations

from typing import Any

from llm2labels.grouping.vocabulary import build_vocabulary
from llm2labels.scoring.rank import RankedLabel


class NoGrouper:
    """One synset per label, in rank order."""

    name = "none"

    def __call__(self, ranked: list[RankedLabel]) -> dict[str, Any]:
        return build_vocabulary(ranked, [(r.label, [r.label]) for r in ranked], grouper={"name": self.name})
