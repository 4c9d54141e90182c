"""Label extraction from generated text, with character offsets so each label keeps its own tokens.

The prompt asks for a Python list, but models wander. ``parse_labels`` reads the text in the first of four
modes that applies, because each later mode is a weaker reading of the text:

1. **List**: the text opens a ``[`` (with a quoted item, two items, or as its first character). Every item inside brackets (any depth, so nested lists work) is a label,
   quoted (``'sky'``) or bare (``[sky, tree]``); text outside brackets is commentary ("Here is the list:")
   and is ignored, even when the list turns out empty. An unterminated list or string is read to the end of
   the text: the cut-off fragment (``['sky', 'ca`` -> ``ca``) is kept as a label, because its tokens were
   generated and its low probability will filter it if it is junk.
2. **Lines**: numbered (``1. sky``, ``2) tree``) or bulleted (``- sky``, ``* tree``) lines; other lines are
   commentary. A line is split at commas; ``Sky: the blue area`` keeps the part before the colon.
3. **Quoted**: at least two quoted strings outside brackets (``The labels are 'sky' and 'tree'.``).
4. **Prose**: the text split at commas, semicolons, newlines and sentence ends; ``Labels: sky`` keeps the part
   after the colon, and a leading "and"/"or" (``sky, trees, and a car``) is dropped.

Every item is trimmed of whitespace, quotes, numbering, bullets and edge punctuation; items without a letter
or digit are skipped, and so are items longer than ``max_words`` words (default 6): those are sentences, not
labels. Duplicates are kept, in text order, since each occurrence has its own tokens and probability.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

MAX_WORDS = 6  # longer candidates are sentences ("The image shows a busy street at night")

_QUOTE_PAIRS = {"'": "'", '"': '"', "“": "”", "‘": "’"}
_OPEN_AFTER = "[,(:{;"  # a quote opens a string at a line start, after whitespace or after one of these
_CLOSE_BEFORE = ",]}):;.!?'\"”’"  # a quote closes a string at the end, before whitespace or one of these
_SEPARATORS = "[],;\n"  # item separators inside a list
_LEAD = "'\"`‘’“”«»-–—*•·.,;:!?/\\|#>=~_"
_TRAIL = "'\"`‘’“”«»*.,;:!?…/\\|~_-–"
_BRACKET_PAIRS = {"(": ")", "[": "]", "{": "}", "<": ">"}
_NUMBER = re.compile(r"\d{1,3}[.)](?=\s|[^\W\d_]|$)")  # "1. sky", "2)tree"; not "3.5 inch"
_LINE_ITEM = re.compile(r"^[ \t]*(?:\d{1,3}[.)]|[-*•])(?=\s)[ \t]*([^\n]*)", re.MULTILINE)
_PROSE_SPLIT = re.compile(r"[,;\n]|[.!?](?=\s|$)")
_CONJUNCTION = re.compile(r"(?:and|or)\s+", re.IGNORECASE)
_ESCAPE = re.compile(r"\\([\\'\"])")
# The common case, a clean list of plainly quoted labels (["sky", 'palm tree', "t-shirt"]): items made of
# letters, digits, inner spaces and hyphens, which the trimming rules leave as they are. Read by one regex.
_SAFE = r"[^\W_](?:[^\W_]|[ -](?=[^\W_ -]))*"
_CLEAN_ITEM = rf"(?:'({_SAFE})'|\"({_SAFE})\")"
_CLEAN_LIST = re.compile(rf"\s*\[\s*(?:{_CLEAN_ITEM}(?:\s*,\s*{_CLEAN_ITEM})*\s*,?)?\s*\]\s*")
_CLEAN_ITEMS = re.compile(_CLEAN_ITEM)


@dataclass(frozen=True)
class Span:
    """A label as written (unescaped when it was a quoted string) and its character range in the text."""

    text: str
    start: int
    end: int


@dataclass(frozen=True)
class _Piece:
    start: int
    end: int
    quoted: bool


def _opens(text: str, i: int) -> bool:
    """Whether the quote at ``i`` opens a string (not an apostrophe inside a word: "people's")."""
    return i == 0 or text[i - 1].isspace() or text[i - 1] in _OPEN_AFTER


def _closing(text: str, i: int) -> int:
    """Index of the quote closing the string opened at ``i``, or of the line end if it is unterminated.

    A matching quote closes only when followed by a delimiter, so apostrophes survive inside single-quoted
    labels ('people's hats'); backslash-escaped quotes never close.
    """
    closer, n = _QUOTE_PAIRS[text[i]], len(text)
    line_end = text.find("\n", i + 1)
    line_end = n if line_end < 0 else line_end
    j = text.find(closer, i + 1, line_end)
    while j >= 0:
        k = j
        while k > i + 1 and text[k - 1] == "\\":  # an odd run of backslashes escapes the quote
            k -= 1
        if (j - k) % 2 == 0 and (j + 1 == n or text[j + 1].isspace() or text[j + 1] in _CLOSE_BEFORE):
            return j
        j = text.find(closer, j + 1, line_end)
    return line_end


def _scan(text: str) -> tuple[list[_Piece], list[_Piece], bool]:
    """Split the text into list items and quoted strings outside lists, and say whether a list was opened."""
    in_list: list[_Piece] = []
    outside: list[_Piece] = []
    depth, bare, i, n, saw_list = 0, 0, 0, len(text), False
    while i < n:
        c = text[i]
        if c in _QUOTE_PAIRS and _opens(text, i):
            if depth > 0 and bare < i:
                in_list.append(_Piece(bare, i, False))
            close = _closing(text, i)
            (in_list if depth > 0 else outside).append(_Piece(i + 1, close, True))
            i = bare = close + 1 if close < n and text[close] != "\n" else close
            continue
        if c in _SEPARATORS:
            if depth > 0 and bare < i:
                in_list.append(_Piece(bare, i, False))
            if c == "[":
                depth, saw_list = depth + 1, True
            elif c == "]":
                depth = max(depth - 1, 0)
            bare = i + 1
        i += 1
    if depth > 0 and bare < n:
        in_list.append(_Piece(bare, n, False))
    return in_list, outside, saw_list


def _strip_brackets(text: str, start: int, end: int) -> tuple[int, int]:
    """Drop an edge bracket that is unmatched inside the item, or a pair that wraps the whole item."""
    first, last = text[start], text[end - 1]
    match = _BRACKET_PAIRS.get(first)
    if match is not None and last == match and end - start >= 2:
        return start + 1, end - 1
    if match is not None and text.count(first, start, end) > text.count(match, start, end):
        return start + 1, end
    for opener, closer in _BRACKET_PAIRS.items():
        if last == closer and text.count(closer, start, end) > text.count(opener, start, end):
            return start, end - 1
    return start, end


def _trim(text: str, start: int, end: int, bare: bool) -> tuple[int, int]:
    """Shrink [start, end) past whitespace, quotes, numbering, bullets, edge punctuation (and "and"/"or")."""
    previous = None
    while (start, end) != previous and start < end:
        previous = (start, end)
        while start < end and (text[start].isspace() or text[start] in _LEAD):
            start += 1
        while end > start and (text[end - 1].isspace() or text[end - 1] in _TRAIL):
            end -= 1
        if start < end:
            start, end = _strip_brackets(text, start, end)
        number = _NUMBER.match(text, start, end)
        conjunction = _CONJUNCTION.match(text, start, end) if bare else None
        start = max(start, number.end() if number else start, conjunction.end() if conjunction else start)
    return start, end


def _span(text: str, piece: _Piece, max_words: int) -> Span | None:
    """The trimmed label of a piece, or None when it is empty, punctuation only, or longer than max_words."""
    start, end = _trim(text, piece.start, piece.end, bare=not piece.quoted)
    label = text[start:end]
    if not any(ch.isalnum() for ch in label) or len(label.split()) > max_words:
        return None
    if piece.quoted and "\\" in label:
        label = _ESCAPE.sub(r"\1", label)
    return Span(label, start, end)


def _line_pieces(text: str) -> Iterator[_Piece]:
    """Items of numbered or bulleted lines: the part before a colon, else each comma-separated part."""
    for match in _LINE_ITEM.finditer(text):
        start, end = match.span(1)
        colon = text.find(":", start, end)
        if colon > start and text[start:colon].strip():
            yield _Piece(start, colon, False)
            continue
        for part in re.finditer(r"[^,;]+", text[start:end]):
            yield _Piece(start + part.start(), start + part.end(), False)


def _prose_pieces(text: str) -> Iterator[_Piece]:
    """Parts of free text between separators; after a colon only the rest counts ("Labels: sky")."""
    start = 0
    for match in _PROSE_SPLIT.finditer(text):
        yield _prose_piece(text, start, match.start())
        start = match.end()
    yield _prose_piece(text, start, len(text))


def _prose_piece(text: str, start: int, end: int) -> _Piece:
    colon = text.rfind(":", start, end)
    return _Piece(start if colon < 0 else colon + 1, end, False)


def _clean_list(text: str, max_words: int) -> list[tuple[str, int, int]] | None:
    """The labels of a clean quoted list (what the prompt asks for) as (text, start, end), read with two
    regular expressions; None for any other text. Same result as the scanner (tested)."""
    if not _CLEAN_LIST.fullmatch(text):
        return None
    spans = []
    for m in _CLEAN_ITEMS.finditer(text):
        group = 1 if m[1] else 2
        label = m[group]
        if label.count(" ") < max_words:  # _SAFE items have single inner spaces: words = spaces + 1
            spans.append((label, m.start(group), m.end(group)))
    return spans


def parse_labels(text: str, *, max_words: int = MAX_WORDS) -> list[Span]:
    """Every label occurrence in a generated text, in order, duplicates kept; never raises on a str.

    See the module docstring for the four reading modes and the trimming rules.
    """
    clean = _clean_list(text, max_words)
    if clean is not None:
        return [Span(*span) for span in clean]
    return _parse(text, max_words)


def label_spans(text: str, max_words: int = MAX_WORDS) -> list[tuple[str, int, int]]:
    """`parse_labels(text)` as plain (label, start, end) tuples: what post-processing reads for millions of
    samples, where building Span objects would cost more than reading a clean list."""
    clean = _clean_list(text, max_words)
    if clean is not None:
        return clean
    return [(s.text, s.start, s.end) for s in _parse(text, max_words)]


def _parse(text: str, max_words: int) -> list[Span]:
    """The general reader: scan, pick a reading mode, trim each piece."""
    in_list, outside, saw_list = _scan(text)
    # A single bare bracketed aside ("1. Sky [background]") is not a list; a quote, two items or a leading
    # "[" make one.
    if saw_list and (len(in_list) >= 2 or any(p.quoted for p in in_list) or text.lstrip().startswith("[")):
        pieces: Iterator[_Piece] | list[_Piece] = in_list
    elif _LINE_ITEM.search(text):
        pieces = _line_pieces(text)
    elif len(outside) >= 2:
        pieces = outside
    else:
        pieces = _prose_pieces(text)
    spans = (_span(text, piece, max_words) for piece in pieces)
    return [span for span in spans if span is not None]


def token_indices(token_ends: Sequence[int], start: int, end: int) -> list[int]:
    """Indices of the tokens sharing at least one character with [start, end).

    Token ``i`` covers ``[token_ends[i-1], token_ends[i])`` (``token_ends[-1]`` read as 0), so ``token_ends``
    must be non-decreasing. Zero-width tokens (e.g. a special token that decodes to '') share no character
    and are never returned; an empty span returns no tokens.
    """
    if end <= start:
        return []
    first = bisect_right(token_ends, start)  # first token ending after `start`
    stop = min(bisect_left(token_ends, end) + 1, len(token_ends))  # tokens starting before `end`
    return [i for i in range(first, stop) if token_ends[i] > (token_ends[i - 1] if i else 0)]
