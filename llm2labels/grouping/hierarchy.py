"""Hierarchies over synset names: the word-suffix rule, and lookups any grouper's hierarchy supports.

A hierarchy is a forest, `[{"name": "tree", "children": [{"name": "palm tree", "children": []}]}]`.
The suffix rule makes a name the child of the longest other name it ends with as whole words: "wooden bench"
under "bench", "red double-decker bus" under "double-decker bus" under "bus"; "skyscraper" is not under
"sky" and "t-shirt" not under "shirt" (words are split on whitespace only). Only trees with children are
kept: a name with no parent and no child is a singleton that the synset list already holds.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

Node = dict[str, Any]  # {"name": str, "children": [Node, ...]}


def suffix_parent(name: str, known: set[str] | frozenset[str]) -> str | None:
    """The longest name in `known` that `name` ends with as whole words (not `name` itself), else None."""
    words = name.split()
    for start in range(1, len(words)):  # longest proper suffix first
        candidate = " ".join(words[start:])
        if candidate in known:
            return candidate
    return None


def suffix_hierarchy(names: Sequence[str]) -> list[Node]:
    """The suffix-rule forest over `names` (rank order): roots and children keep that order."""
    known = frozenset(names)
    nodes: dict[str, Node] = {}
    parent_of: dict[str, str] = {}
    for name in dict.fromkeys(names):
        nodes[name] = {"name": name, "children": []}
        parent = suffix_parent(name, known)
        if parent is not None:
            parent_of[name] = parent
    return forest(nodes, parent_of)  # rank order, so children come out in rank order


def forest(nodes: dict[str, Node], parent_of: Mapping[str, str | None]) -> list[Node]:
    """Each node (in `nodes`' order) appended to its parent's children; the roots that have children
    (a name with no parent and no child is left out)."""
    for name, node in nodes.items():
        parent = parent_of.get(name)
        if parent is not None:
            nodes[parent]["children"].append(node)
    return [node for name, node in nodes.items() if parent_of.get(name) is None and node["children"]]


def walk(hierarchy: Sequence[Node]) -> Iterator[tuple[str, str | None, str]]:
    """(name, parent or None, root) for every node, depth first; a name met again is skipped with its subtree
    (an LLM's hierarchy may repeat names), so every name gets one parent and one root."""
    seen: set[str] = set()
    stack: list[tuple[Node, str | None, str | None]] = [(node, None, None) for node in reversed(hierarchy)]
    while stack:
        node, parent, root = stack.pop()
        name = node.get("name") if isinstance(node, dict) else None
        if not isinstance(name, str) or name in seen:
            continue
        seen.add(name)
        root = root or name
        yield name, parent, root
        children = node.get("children") or []
        stack.extend((child, name, root) for child in reversed(children))


def parents(hierarchy: Sequence[Node]) -> dict[str, str]:
    """child name -> parent name, for every non-root node."""
    return {name: parent for name, parent, _ in walk(hierarchy) if parent is not None}


def roots(hierarchy: Sequence[Node]) -> dict[str, str]:
    """name -> the root of its tree, for every node (a root maps to itself)."""
    return {name: root for name, _, root in walk(hierarchy)}
