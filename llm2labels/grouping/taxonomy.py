"""A hierarchy from WordNet's hypernyms, restricted to one vocabulary.

Each synset of the vocabulary sits at its WordNet synset; a synset WordNet does not know sits just below the
sense of its head word ("wooden bench" below bench.n.01). Its parent is the nearest ancestor, along
`Lexicon.chain`, that is either
- another synset of the vocabulary ("tree" for "palm tree" when the vocabulary has "tree"), or
- a WordNet concept where the vocabulary branches: two or more of its synsets lie below it through different
  children (e.g. "tree" for "palm tree" and "oak" when the vocabulary lacks "tree"; "tree" under "plant").
Such a concept enters the hierarchy as a node of its own, marked `"implicit": true`, named after its first
lemma ("woody plant"), with its synset name added in brackets when that name is taken. Concepts shallower
than `min_depth` (entity, physical entity, object, whole, ...) are never nodes. Every node carries its
WordNet synset (`"wordnet"`, null for a synset WordNet does not know). As in every hierarchy of this package,
only trees with children are kept.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from llm2labels.grouping.hierarchy import Node, forest
from llm2labels.grouping.lexicon import Lexicon


@dataclass(frozen=True)
class Placed:
    """One synset of the vocabulary: its name, its WordNet synset (or None), and for an unknown one the
    synset it sits below (its head word's sense), else None."""

    name: str
    synset: str | None
    below: str | None = None


def _paths(groups: Sequence[Placed], lexicon: Lexicon) -> list[tuple[str, ...]]:
    """Each group's way up: its own synset first when it has one, then the ancestors ("" = none)."""
    paths = []
    for g in groups:
        if g.synset is not None:
            paths.append(lexicon.chain(g.synset))
        elif g.below is not None:
            paths.append((f"\0{g.name}", *lexicon.chain(g.below)))  # a private leaf below its head's sense
        else:
            paths.append(())
    return paths


def wordnet_hierarchy(groups: Sequence[Placed], lexicon: Lexicon, min_depth: int = 6) -> list[Node]:
    """The forest over `groups` (rank order): roots and children in the order of their best synset."""
    paths = _paths(groups, lexicon)
    owner = {g.synset: g.name for g in groups if g.synset is not None}
    branches: dict[str, set[str]] = defaultdict(set)
    for path in paths:
        for below, above in zip(path, path[1:]):
            branches[above].add(below)
    implicit = {a for a, children in branches.items()
                if a not in owner and len(children) >= 2 and lexicon.depth(a) >= min_depth}

    def parent_on(path: Sequence[str], start: int) -> str | None:
        for a in path[start:]:
            if a in owner or a in implicit:
                return a
        return None

    parent: dict[str, str | None] = {}  # node id (a synset, or "\0name") -> parent node id
    order: list[str] = []
    for path in paths:
        if not path:
            continue
        node = path[0]
        while node not in parent:
            up = parent_on(lexicon.chain(node) if not node.startswith("\0") else path, 1)
            parent[node] = up
            order.append(node)
            if up is None:
                break
            node = up
    names = _names(order, owner, implicit, lexicon)
    nodes: dict[str, Node] = {}
    for node in order:
        nodes[node] = {"name": names[node], "wordnet": None if node.startswith("\0") else node, "children": []}
        if node in implicit:
            nodes[node]["implicit"] = True
    return forest(nodes, parent)  # the order nodes were met walking up from the groups in rank order


def _names(order: Sequence[str], owner: dict[str, str], implicit: set[str], lexicon: Lexicon) -> dict[str, str]:
    taken = set(owner.values())
    names: dict[str, str] = {}
    for node in order:
        if node.startswith("\0"):
            names[node] = node[1:]
        elif node in owner:
            names[node] = owner[node]
    for node in order:
        if node in implicit:
            name = lexicon.lemma(node)
            names[node] = name if name not in taken else f"{name} ({node})"
            taken.add(names[node])
    return names
