"""`grouper=none`: every ranked label is its own synset, and there is no hierarchy."""

from __future__ import annotations

from typing import Any

from llm2labels.scoring.rank import RankedLabel


class NoGrouper:
    """One synset per label, in rank order."""

    name = "none"

    def __call__(self, ranked: list[RankedLabel]) -> dict[str, Any]:
        synsets = [{"name": r.label, "members": [r.label], "score": r.score, "occ": r.occ, "images": r.images}
                   for r in ranked]
        return {"synsets": synsets, "hierarchy": [], "dropped": [], "invented": [], "grouper": {"name": self.name}}
