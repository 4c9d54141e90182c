"""Reading an LLM's grouping answer: synsets and a hierarchy out of whatever text came back.

Asked for `{"synsets": {"<canonical>": [members]}, "hierarchy": {"<root>": {"<child>": {}}}}`, models answer
with code fences, prose around the object, Python literals, trailing commas, lists instead of dicts, or stop
mid-object at their token limit. `parse_answer` tries candidate substrings with `json` and then
`ast.literal_eval` (never `eval`), repairs what it can, keeps the complete synsets before a cut, and returns
None (never raises) when nothing usable is left.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

Tree = tuple[str, list["Tree"]]  # (name, children)

MAX_CANDIDATES = 12  # substrings tried per answer
MAX_CUTS = 64  # truncation points tried per candidate, latest first
_FENCE = re.compile(r"```[ \t]*[\w+-]*[ \t]*\n?(.*?)(?:```|\Z)", re.S)
_THINK = re.compile(r"<think>.*?(?:</think>|\Z)", re.S | re.I)
_JSON_WORDS = re.compile(r"\b(true|false|null)\b")
_PAIRS = {"{": "}", "[": "]"}
SYNSET_KEYS = ("synsets", "synset", "synonyms", "groups")  # section names models use (not label-like)
HIERARCHY_KEYS = ("hierarchy", "hierarchies", "taxonomy")
NAME_KEYS = ("name", "canonical", "label", "key")
MEMBER_KEYS = ("members", "synonyms", "labels", "items", "words")


@dataclass
class ParsedGrouping:
    """Synsets as (canonical, members) with the canonical first among members; hierarchy as trees."""

    synsets: list[tuple[str, list[str]]] = field(default_factory=list)
    hierarchy: list[Tree] = field(default_factory=list)
    truncated: bool = False  # recovered from an answer cut short

    def names(self) -> list[str]:
        """Every label the answer mentions, once each: synset members, then hierarchy nodes depth first."""
        out = [m for _, members in self.synsets for m in members]
        stack = list(reversed(self.hierarchy))
        while stack:
            name, children = stack.pop()
            out.append(name)
            stack.extend(reversed(children))
        return list(dict.fromkeys(out))


    def respelled(self, labels: Iterable[str]) -> ParsedGrouping:
        """The same grouping with names that match a label up to case and spacing ("Palm  Tree") spelled
        as that label, so that a model's capitalisation does not turn labels into dropped + invented."""
        spelling = {_key(label): label for label in labels}

        def fix(name: str) -> str:
            return spelling.get(_key(name), name)

        def tree(t: Tree) -> Tree:
            return fix(t[0]), [tree(c) for c in t[1]]

        synsets = [(fix(n), list(dict.fromkeys(fix(m) for m in members))) for n, members in self.synsets]
        return ParsedGrouping(synsets, [tree(t) for t in self.hierarchy], self.truncated)


def _key(name: str) -> str:
    return " ".join(name.casefold().split())


def parse_answer(text: Any) -> ParsedGrouping | None:
    """The grouping in an LLM answer, or None when there is none. Never raises."""
    try:
        if not isinstance(text, str):
            return None
        for candidate in _candidates(text):
            loaded = _load(candidate)
            if loaded is not None:
                parsed = _interpret(loaded[0])
                if parsed is not None:
                    parsed.truncated = loaded[1]
                    return parsed
    except Exception:  # noqa: BLE001 - a parser of model output must not take the pipeline down
        return None
    return None


def _candidates(text: str) -> Iterator[str]:
    """Fenced blocks first, then the text, then spans from each opening bracket (outermost first)."""
    text = _THINK.sub("", text)
    seen: set[str] = set()
    pool = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    for block in pool:
        for cand in [block.strip(), *_spans(block)]:
            if cand and cand not in seen and len(seen) < MAX_CANDIDATES:
                seen.add(cand)
                yield cand


def _spans(text: str) -> Iterator[str]:
    """Each top-level bracketed span (to the end of the text if it never closes)."""
    start, depth = None, 0
    for i, ch, _ in _structure(text):
        if ch in _PAIRS:
            if depth == 0:
                start = i
            depth += 1
        elif depth > 0:
            depth -= 1
            if depth == 0 and start is not None:
                yield text[start:i + 1]
                start = None
    if start is not None:
        yield text[start:]


def _structure(text: str) -> Iterator[tuple[int, str, int]]:
    """(index, char, depth before it) of each bracket outside string literals ('...' or "..."); quotes
    count only inside brackets, so that an apostrophe in the prose around the object hides nothing."""
    quote, escaped, depth = "", False, 0
    for i, ch in enumerate(text):
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote or ch == "\n":  # a newline ends a runaway string (an apostrophe in prose)
                quote = ""
        elif ch in "\"'" and depth > 0:
            quote = ch
        elif ch in "{[]}":
            yield i, ch, depth
            depth = depth + 1 if ch in _PAIRS else max(depth - 1, 0)


def _literal(text: str) -> Any:
    """JSON, else a Python literal, else a Python literal with JSON's true/false/null; raises on failure."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        fixed = _JSON_WORDS.sub(lambda m: {"true": "True", "false": "False", "null": "None"}[m.group(1)], text)
        return ast.literal_eval(fixed)


def _load(candidate: str) -> tuple[Any, bool] | None:
    """(object, truncated) for a candidate: as is, else closed after its last complete element."""
    if candidate[0] not in _PAIRS:
        return None
    try:
        return _literal(candidate), False
    except Exception:  # noqa: BLE001
        pass
    stack: list[str] = []
    cuts: list[tuple[int, str]] = []  # (end index, closers needed after it)
    for i, ch, _ in _structure(candidate):
        if ch in _PAIRS:
            stack.append(_PAIRS[ch])
        elif stack and stack[-1] == ch:
            stack.pop()
            cuts.append((i + 1, "".join(reversed(stack))))
    for end, closers in reversed(cuts[-MAX_CUTS:]):
        if closers:
            try:
                return _literal(candidate[:end] + closers), True
            except Exception:  # noqa: BLE001
                continue
    return None


def _interpret(obj: Any) -> ParsedGrouping | None:
    """The grouping an answer object stands for, or None if it does not look like one."""
    if isinstance(obj, dict):
        keys = {str(k).strip().lower(): v for k, v in obj.items()}
        syn_key = next((k for k in SYNSET_KEYS if k in keys), None)
        hier_key = next((k for k in HIERARCHY_KEYS if k in keys), None)
        if syn_key or hier_key:
            synsets = _synsets(keys[syn_key]) if syn_key else []
            trees = _trees(keys[hier_key]) if hier_key else []
        elif obj and all(isinstance(v, dict) for v in obj.values()):
            synsets, trees = [], _trees(obj)  # the paper's prompt: a bare hierarchy dict
        else:
            synsets, trees = _synsets(obj), []
    elif isinstance(obj, (list, tuple)):
        if obj and all(isinstance(x, str) for x in obj):
            return None  # a flat list of labels: no grouping asked for was done
        synsets, trees = _synsets(obj), []
    else:
        return None
    if not synsets and trees:
        parsed = ParsedGrouping(hierarchy=trees)
        synsets = [(name, [name]) for name in parsed.names()]  # each named label stands alone
    if not synsets:
        return None
    return ParsedGrouping(synsets=synsets, hierarchy=trees)


def _text(x: Any) -> str:
    return x.strip() if isinstance(x, str) else ""


def _strings(x: Any) -> list[str]:
    """Strings in a member list (a bare string is a list of one); non-strings are skipped."""
    items = [x] if isinstance(x, str) else list(x) if isinstance(x, (list, tuple, set, dict)) else []
    return [s for s in (_text(i) for i in items) if s]


def _synset(name: str, members: list[str]) -> tuple[str, list[str]] | None:
    out = list(dict.fromkeys(([name] if name else []) + members))
    return (out[0], out) if out else None


def _synsets(obj: Any) -> list[tuple[str, list[str]]]:
    """{canonical: members} or [[canonical, ...], ...] or [{"name": .., "members": [..]}, ...]."""
    found: list[tuple[str, list[str]] | None] = []
    if isinstance(obj, dict):
        found = [_synset(_text(k), _strings(v)) for k, v in obj.items()]
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            if isinstance(item, dict):
                low = {str(k).strip().lower(): v for k, v in item.items()}
                name = next((_text(low[k]) for k in NAME_KEYS if k in low), "")
                members = next((_strings(low[k]) for k in MEMBER_KEYS if k in low), None)
                if members is None and not name and len(item) == 1:  # [{"car": ["auto"]}, ...]
                    found.extend(_synsets(item))
                    continue
                found.append(_synset(name, members or []))
            else:
                found.append(_synset("", _strings(item)))
    return [s for s in found if s]


def _trees(obj: Any, depth: int = 0) -> list[Tree]:
    """{root: {child: {}}}, {root: [children]}, [{"name", "children"}] or a list of names, as trees."""
    if depth > 50:
        return []
    if isinstance(obj, dict):
        low = {str(k).strip().lower(): v for k, v in obj.items()}
        name = next((_text(low[k]) for k in NAME_KEYS if k in low), "")
        if name:  # {"name": "vehicle", "children": [...]}
            return [(name, _trees(low.get("children", []), depth + 1))]
        return [(n, _trees(v, depth + 1)) for k, v in obj.items() if (n := _text(k))]
    if isinstance(obj, (list, tuple)):
        return [t for item in obj for t in _trees(item, depth + 1)]
    if isinstance(obj, str) and obj.strip():
        return [(obj.strip(), [])]
    return []


def forest(trees: list[Tree], canonical: dict[str, str], order: dict[str, int]) -> list[dict[str, Any]]:
    """The vocabulary's hierarchy from the answers' trees: nodes renamed to their synset's canonical name.

    A node that is no label (invented) or a synonym of its parent is contracted: its children move up to
    its parent. Each node keeps the first parent it is given and edges that would close a cycle are
    skipped, so the result is a forest; only nodes with a parent or a child appear. Siblings in rank order.
    """
    parent: dict[str, str] = {}

    def lineage(node: str) -> set[str]:
        seen = {node}
        while node in parent:
            node = parent[node]
            seen.add(node)
        return seen

    stack: list[tuple[Tree, str | None]] = [(t, None) for t in reversed(trees)]
    while stack:
        (name, children), up = stack.pop()
        node = canonical.get(name)
        if node is None or node == up:
            node = up
        elif up is not None and node not in parent and node not in lineage(up):
            parent[node] = up
        stack.extend((c, node) for c in reversed(children))
    kids: dict[str, list[str]] = {}
    for child, up in parent.items():
        kids.setdefault(up, []).append(child)

    def build(node: str) -> dict[str, Any]:
        return {"name": node, "children": [build(c) for c in sorted(kids.get(node, []), key=order.__getitem__)]}

    return [build(root) for root in sorted((p for p in kids if p not in parent), key=order.__getitem__)]
