"""`grouper=hybrid`'s second step: merge WordNet's groups by sentence embeddings, under WordNet's vetoes.

Groups merge best pair first (average linkage: the mean cosine similarity of their members) while that
similarity reaches a threshold, with these rules:
- two groups of WordNet senses only: `known_threshold`, and never when two of their senses are sisters
  (share a direct hypernym: car / truck, sea / ocean);
- a group holding a compound WordNet lacks ("wooden bench", read as a kind of its head, bench.n.01) merges
  only with a group of no sense at all, or with one tied to exactly the same concepts (the head's own
  synset "bench", or another compound of that head): never with another concept (the "seat" synset, "tile
  wall" for "tile floor");
- two compounds of one head whose modifiers are different WordNet concepts stay apart unless the head's
  own synset is in the group ("ceiling tile" / "floor tile"; "red car" and "blue car" both join "car");
- otherwise (a label WordNet does not know at all): `threshold`.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from llm2labels.grouping.lexicon import Lexicon


@dataclass
class Group:
    """One synset under construction: members in rank order and the WordNet concepts it is tied to.
    `synset`: its sense, for a group of known terms; `below`: for an unknown compound, its head's sense
    (the hierarchy puts it there); `modifier`: that compound's modifier's first sense, if WordNet has one."""

    members: list[str]
    synset: str | None = None
    below: str | None = None
    modifier: str | None = None
    senses: set[str] = field(default_factory=set)  # every known sense merged in
    heads: dict[str, set[str]] = field(default_factory=dict)  # head sense -> modifier senses

    def __post_init__(self) -> None:
        if self.synset is not None:
            self.senses.add(self.synset)
        if self.below is not None:
            self.heads.setdefault(self.below, set()).update({self.modifier} - {None})

    def concepts(self) -> set[str]:
        return self.senses | set(self.heads)


def sisters(a: str, b: str, lexicon: Lexicon) -> bool:
    """Two synsets with a direct hypernym in common (car and truck under motor vehicle)."""
    def up(name: str) -> set[str]:
        synset = lexicon.synset(name)
        return {p.name() for p in synset.hypernyms() + synset.instance_hypernyms()}

    return a != b and bool(up(a) & up(b))


def allowed(x: Group, y: Group, lexicon: Lexicon) -> bool:
    """The vetoes of the module docstring."""
    if x.heads or y.heads:
        if x.concepts() and y.concepts() and x.concepts() != y.concepts():
            return False
        for head in set(x.heads) & set(y.heads):
            if head in x.senses or head in y.senses:
                continue
            if any(a != b for a in x.heads[head] for b in y.heads[head]):
                return False
        return True
    return not any(sisters(a, b, lexicon) for a in x.senses for b in y.senses)


def _join(x: Group, y: Group) -> None:
    """y into x; x takes y's WordNet sense (or head) when it had none."""
    x.members.extend(y.members)
    x.synset = x.synset or y.synset
    x.below = x.below or y.below
    x.senses |= y.senses
    for head, modifiers in y.heads.items():
        x.heads.setdefault(head, set()).update(modifiers)


def merge_by_embedding(groups: Sequence[Group], vectors: dict[str, np.ndarray], threshold: float,
                       known_threshold: float, lexicon: Lexicon) -> list[Group]:
    """Merge `groups` (rank order) as the module docstring says; the better-ranked group absorbs the other.
    Returns the surviving groups in their order."""
    if not groups:
        return []
    groups = list(groups)
    sums = [np.sum([vectors[m] for m in g.members], axis=0) for g in groups]
    sizes = [len(g.members) for g in groups]
    alive = [True] * len(groups)
    means = np.stack(sums) / np.asarray(sizes, dtype=np.float32)[:, None]
    floor = min(threshold, known_threshold)
    neighbours: list[set[int]] = [set() for _ in groups]
    heap: list[tuple[float, int, int]] = []
    for start in range(0, len(groups), 1024):  # blocks bound the memory of the similarity matrix
        block = means[start:start + 1024] @ means.T
        for r, c in zip(*np.nonzero(block >= floor)):
            i, j = start + int(r), int(c)
            if i < j:
                neighbours[i].add(j)
                neighbours[j].add(i)
                heap.append((-float(block[r, c]), i, j))
    heapq.heapify(heap)

    def similarity(i: int, j: int) -> float:
        return float(sums[i] @ sums[j]) / (sizes[i] * sizes[j])

    while heap:
        negative, i, j = heapq.heappop(heap)
        if not (alive[i] and alive[j]):
            continue
        sim = similarity(i, j)
        if abs(sim + negative) > 1e-6:  # stale: one of the two grew since the pair was pushed
            heapq.heappush(heap, (-sim, i, j))
            continue
        x, y = groups[i], groups[j]
        needed = known_threshold if (x.senses and y.senses and not x.heads and not y.heads) else threshold
        if sim < needed or not allowed(x, y, lexicon):
            continue
        _join(x, y)
        sums[i], sizes[i], alive[j] = sums[i] + sums[j], sizes[i] + sizes[j], False
        neighbours[i] = (neighbours[i] | neighbours[j]) - {i, j}
        for k in neighbours[i]:
            neighbours[k].discard(j)
            neighbours[k].add(i)
            a, b = min(i, k), max(i, k)
            heapq.heappush(heap, (-similarity(a, b), a, b))
    return [g for g, keep in zip(groups, alive) if keep]
