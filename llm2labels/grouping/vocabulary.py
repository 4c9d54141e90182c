"""The vocabulary every grouper returns, and the coverage rule they share (docs/method.md, "Stage 2").

vocabulary.json:
    {"synsets": [{"name", "members", "score", "occ", "images"}],   # rank order (by best-ranked member)
     "hierarchy": [{"name", "children": [...]}],                   # trees; roots are dominant labels
     "dropped": [...],      # input labels the grouper left out; each came back as a singleton synset
     "invented": [...],     # labels the grouper returned that were not in its input; removed
     "grouper": {...}}      # name, settings and figures of the grouper that made it
A synset's score, occ and images are those of its best-ranked member (the figures of a union of members would
need per-image data the ranking no longer has).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from llm2labels.scoring.rank import RankedLabel


class Grouper(Protocol):
    """What the pipeline calls a grouper: the ranked list in, the vocabulary.json object out (every input
    label in exactly one synset: `build_vocabulary` enforces it)."""

    name: str

    def __call__(self, ranked: list[RankedLabel]) -> dict[str, Any]: ...


def enforce_coverage(labels: Sequence[str], synsets: Iterable[tuple[str, Sequence[str]]]
                     ) -> tuple[list[tuple[str, list[str]]], list[str], list[str]]:
    """Make every input label a member of exactly one synset.

    Members not in `labels` are removed (invented); a label claimed twice stays in its first synset; labels
    left out come back as singletons (dropped). Synsets left empty disappear; a synset whose canonical name
    was invented is renamed after its first member. Returns (synsets, dropped, invented).
    """
    known, seen = set(labels), set()
    out: list[tuple[str, list[str]]] = []
    invented: list[str] = []
    for name, members in synsets:
        kept = []
        for m in members:
            if m not in known:
                if m not in invented:
                    invented.append(m)
            elif m not in seen:
                seen.add(m)
                kept.append(m)
        if kept:
            out.append((name if name in kept else kept[0], kept))
    dropped = [label for label in labels if label not in seen]
    out.extend((label, [label]) for label in dropped)
    return out, dropped, invented


def build_vocabulary(ranked: Sequence[RankedLabel], synsets: Iterable[tuple[str, Sequence[str]]],
                     hierarchy: list[dict[str, Any]] | None = None, grouper: dict[str, Any] | None = None
                     ) -> dict[str, Any]:
    """The vocabulary.json object: coverage enforced, synsets in the rank order of their best member."""
    by_label = {r.label: r for r in ranked}
    covered, dropped, invented = enforce_coverage([r.label for r in ranked], synsets)
    rows = []
    for name, members in covered:
        members = sorted(members, key=lambda m: by_label[m].rank)
        best = by_label[members[0]]
        rows.append({"name": name, "members": members, "score": best.score, "occ": best.occ,
                     "images": best.images, "_rank": best.rank})
    rows.sort(key=lambda r: r["_rank"])
    for r in rows:
        del r["_rank"]
    info = {**(grouper or {}), "dropped": len(dropped), "invented": len(invented)}
    return {"synsets": rows, "hierarchy": hierarchy or [], "dropped": dropped, "invented": invented,
            "grouper": info}
