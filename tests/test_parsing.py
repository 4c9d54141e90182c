"""Label extraction: a corpus of real-looking model outputs, exact spans, token mapping, and fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm2labels.parsing import MAX_WORDS, Span, parse_labels, token_indices

# (generated text, exact labels expected in order). Each mimics something VLMs write for the list prompt.
CORPUS: list[tuple[str, list[str]]] = [
    ("['sky', 'tree', \"car\"]", ["sky", "tree", "car"]),
    ("['sky', 'tree', 'ca", ["sky", "tree", "ca"]),  # cut by max_new_tokens: the fragment counts
    ("['sky', 'tree', '", ["sky", "tree"]),  # cut right after an opening quote: nothing left
    ("['sky', 'tree', ", ["sky", "tree"]),
    ("[['sky'], ['tree', 'road']]", ["sky", "tree", "road"]),
    ("Here is the list: ['a', 'b']. Hope this helps!", ["a", "b"]),
    ("1. sky\n2. tree", ["sky", "tree"]),
    ("- sky\n* tree", ["sky", "tree"]),
    ("sky, trees, a red car", ["sky", "trees", "a red car"]),
    ("sky, trees, and a red car.", ["sky", "trees", "a red car"]),
    ("['sky', 'tree'] The image also shows a car. ['sky', 'tree']", ["sky", "tree", "sky", "tree"]),
    ("['sky', 'tree']['sky', 'tree']['sky', 'tr", ["sky", "tree", "sky", "tree", "sky", "tr"]),
    ("[\"people's hats\", 'sky']", ["people's hats", "sky"]),
    ("['people\\'s hats', 'sky']", ["people's hats", "sky"]),  # escaped quote, unescaped in Span.text
    ("['people's hats', 'sky']", ["people's hats", "sky"]),  # unescaped apostrophe inside single quotes
    ("['café', 'árbol', '天空']", ["café", "árbol", "天空"]),
    ("['', 'sky', '']", ["sky"]),
    ("['...', '!!', '-', 'sky']", ["sky"]),  # punctuation-only items are skipped
    ("['The image shows a busy street with many cars and people', 'car']", ["car"]),  # sentence > 6 words
    ("[sky, tree, car]", ["sky", "tree", "car"]),
    (
        "Here are the labels:\n1. Sky: the blue area\n2. Trees\n3. Road\nThese are all.",
        ["Sky", "Trees", "Road"],
    ),
    ("{'labels': ['sky', 'tree']}", ["sky", "tree"]),
    ("```python\nlabels = ['building', 'window']\n```", ["building", "window"]),
    ("['sky' 'tree']", ["sky", "tree"]),  # missing comma
    ("['sky',\n 'tree',\n 'car'", ["sky", "tree", "car"]),
    ("“sky”, “tree”", ["sky", "tree"]),  # curly quotes
    ("The labels are 'sky' and 'tree'.", ["sky", "tree"]),
    ("Labels: sky, tree, road", ["sky", "tree", "road"]),
    ("[]", []),
    ("[] There are no labels.", []),  # a list was written: prose around it is commentary
    ("", []),
    ("sky", ["sky"]),
    ("The image shows a street at night with cars.", []),  # one 9-word sentence
    ("['3.5 inch floppy', '1. grass', '2) palm trees']", ["3.5 inch floppy", "grass", "palm trees"]),
    ("['traffic light', 'traffic light', 'traffic light']", ["traffic light"] * 3),  # duplicates kept
    ("1. Sky [background]\n2. Tree", ["Sky [background]", "Tree"]),  # a bracketed aside is not a list
    ("['sky.', ' tree ', 'car,']", ["sky", "tree", "car"]),
    ('["sky", "tree", "car"], ["grass"', ["sky", "tree", "car", "grass"]),
]


@pytest.mark.parametrize(("text", "expected"), CORPUS)
def test_corpus(text: str, expected: list[str]) -> None:
    assert [span.text for span in parse_labels(text)] == expected


def test_corpus_is_large() -> None:
    assert len(CORPUS) >= 25


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("['sky', 'palm tree']", [Span("sky", 2, 5), Span("palm tree", 9, 18)]),
        ("['sky', 'ca", [Span("sky", 2, 5), Span("ca", 9, 11)]),
        ("1. sky\n2. tree", [Span("sky", 3, 6), Span("tree", 10, 14)]),
        ("Here: sky, and a car.", [Span("sky", 6, 9), Span("a car", 15, 20)]),
        ("[['a'], ['b c']]", [Span("a", 3, 4), Span("b c", 10, 13)]),
    ],
)
def test_exact_spans(text: str, expected: list[Span]) -> None:
    assert parse_labels(text) == expected


def test_span_slices_equal_label_text() -> None:
    for text, _ in CORPUS:
        for span in parse_labels(text):
            if "\\" not in text:
                assert text[span.start : span.end] == span.text
            else:  # escaped quote: the slice holds the written form
                assert text[span.start : span.end].replace("\\'", "'") == span.text


def test_max_words_is_configurable() -> None:
    text = "['a b c d e f g', 'sky']"
    assert MAX_WORDS == 6
    assert [s.text for s in parse_labels(text)] == ["sky"]
    assert [s.text for s in parse_labels(text, max_words=7)] == ["a b c d e f g", "sky"]


def test_long_text_is_linear_enough() -> None:
    text = "[" + ", ".join(f"'label {i}'" for i in range(20_000))
    spans = parse_labels(text)
    assert len(spans) == 20_000
    assert spans[-1].text == "label 19999"


def _naive_token_indices(token_ends: list[int], start: int, end: int) -> list[int]:
    """Reference: token i's character set intersected with the span's, character by character."""
    starts = [0, *token_ends][: len(token_ends)]
    return [
        i
        for i, (a, b) in enumerate(zip(starts, token_ends, strict=True))
        if set(range(a, b)) & set(range(start, end))
    ]


# Tokens: "['" [0,2) "sky" [2,5) "'," [5,7) "" [7,7) " '" [7,9) "tree" [9,13) "']" [13,15)
ENDS = [2, 5, 7, 7, 9, 13, 15]


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (2, 5, [1]),  # "sky" is exactly token 1: the quote tokens around it are not included
        (9, 13, [5]),
        (0, 1, [0]),  # first token
        (14, 15, [6]),  # last token
        (13, 15, [6]),
        (4, 8, [1, 2, 4]),  # crosses boundaries; the zero-width token 3 shares no character
        (5, 7, [2]),  # touches tokens 1 and 4 without sharing a character
        (3, 3, []),  # empty span
        (7, 7, []),
        (15, 20, []),  # past the end
        (0, 15, [0, 1, 2, 4, 5, 6]),
    ],
)
def test_token_indices_by_hand(start: int, end: int, expected: list[int]) -> None:
    assert token_indices(ENDS, start, end) == expected
    assert _naive_token_indices(ENDS, start, end) == expected


def test_token_indices_no_tokens() -> None:
    assert token_indices([], 0, 5) == []


@settings(max_examples=300, deadline=None)
@given(
    widths=st.lists(st.integers(0, 4), max_size=12),
    start=st.integers(0, 40),
    length=st.integers(0, 10),
)
def test_token_indices_matches_reference(widths: list[int], start: int, length: int) -> None:
    ends, position = [], 0
    for width in widths:
        position += width
        ends.append(position)
    assert token_indices(ends, start, start + length) == _naive_token_indices(ends, start, start + length)


LISTISH = st.text(alphabet=list("[]'\",\n0123456789. -*:;()\\“”abc xyz"), max_size=80)


def _check_spans(text: str) -> None:
    for span in parse_labels(text):
        assert 0 <= span.start <= span.end <= len(text)
        assert text[span.start : span.end].strip()
        assert span.text.strip()


@settings(max_examples=400, deadline=None)
@given(LISTISH)
def test_parse_never_raises_on_listish_text(text: str) -> None:
    _check_spans(text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=120))
def test_parse_never_raises_on_any_text(text: str) -> None:
    _check_spans(text)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(blacklist_characters="'\\\n"), min_size=1, max_size=12)))
def test_well_formed_lists_round_trip(labels: list[str]) -> None:
    """A well-formed list whose items have a letter and no edge punctuation comes back item for item."""
    items = [x for x in labels if x.strip() == x and x.isalnum() and len(x.split()) <= MAX_WORDS]
    text = "[" + ", ".join(f"'{x}'" for x in items) + "]"
    assert [s.text for s in parse_labels(text)] == items


_item_text = st.text(alphabet="abcXYZé09 -_.'\"", min_size=0, max_size=12)
_quoted = st.tuples(st.sampled_from(["'", '"']), _item_text).map(lambda q: q[0] + q[1] + q[0])


@settings(max_examples=400, deadline=None)
@given(items=st.lists(_quoted, max_size=8), sep=st.sampled_from([", ", ",", " , ", ",\n"]),
       pad=st.sampled_from(["", " ", "\n"]), trailing=st.sampled_from(["", ",", ", "]), close=st.booleans())
def test_the_clean_list_fast_path_reads_exactly_like_the_scanner(items, sep, pad, trailing, close):
    from llm2labels.parsing import _parse

    text = pad + "[" + sep.join(items) + trailing + ("]" if close else "") + pad
    assert parse_labels(text) == _parse(text, MAX_WORDS)
