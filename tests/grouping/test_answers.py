"""Reading messy LLM grouping answers: exact synsets for a corpus of real-world shapes; never raising."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm2labels.grouping.answers import ParsedGrouping, forest, parse_answer

CAR = ("car", ["car", "automobile"])
TREE = ("tree", ["tree"])
BOTH = [CAR, TREE]

CORPUS: list[tuple[str, list[tuple[str, list[str]]] | None]] = [
    ('{"synsets": {"car": ["car", "automobile"], "tree": ["tree"]}, "hierarchy": {}}', BOTH),
    ('```json\n{"synsets": {"car": ["car", "automobile"], "tree": ["tree"]}}\n```', BOTH),
    ("```python\n{'synsets': {'car': ['car', 'automobile'], 'tree': ['tree']}}\n```", BOTH),
    ('Sure! Here is the grouping:\n{"synsets": {"car": ["car", "automobile"], "tree": ["tree"]}}\nHope it helps.',
     BOTH),
    ("Here's the dictionary you asked for: {'synsets': {'car': ['car', 'automobile'], 'tree': ['tree']}} Enjoy",
     BOTH),
    ('{"synsets": {"car": ["car", "automobile",], "tree": ["tree"],},}', BOTH),
    ('{"synsets": {"car": ["car", "automobile"], "tree": ["tree"]}, "hierarchy": {"car": {}}, "ok": true}', BOTH),
    ("{'synsets': {'car': ['car', 'automobile'], 'tree': ['tree']}, 'done': True, 'note': None}", BOTH),
    # truncated at the token limit: the complete synsets before the cut survive
    ('{"synsets": {"car": ["car", "automobile"], "tree": ["tree"], "sky": ["sky", "clou', BOTH),
    ('```json\n{"synsets": {"car": ["car", "automobile"], "tree": ["tree"]}, "hierarchy": {"plant": {"tr', BOTH),
    ('[["car", "automobile"], ["tree"]]', BOTH),
    ('[{"name": "car", "members": ["automobile"]}, {"name": "tree", "members": []}]', BOTH),
    ('{"synsets": [{"canonical": "car", "synonyms": ["car", "automobile"]}, {"label": "tree"}]}', BOTH),
    ('{"synsets": [["car", "automobile"], "tree"]}', BOTH),
    ('{"car": ["automobile"], "tree": []}', BOTH),
    ('{"synsets": {"car": "automobile", "tree": ["tree"]}}', BOTH),
    ('{"Synsets": {" car ": ["car", " automobile"], "tree": ["tree", "tree"]}}', BOTH),
    ('<think>maybe {"x": ["y"]}</think>\n{"synsets": {"car": ["car", "automobile"], "tree": ["tree"]}}', BOTH),
    ('Groups:\n```\n[["car", "automobile"], ["tree"]]\n```', BOTH),
    ('{"synsets": {"car": ["car", "automobile"], "tree": ["tree"]}}\n{"synsets": {"x": ["y"]}}', BOTH),
    ('{"synsets": [{"car": ["automobile"]}, {"tree": []}]}', BOTH),
    # the paper's prompt asks for a bare hierarchy: each named label stands alone, in the order named
    ('{"plant": {"tree": {}}, "car": {}}', [("plant", ["plant"]), ("tree", ["tree"]), ("car", ["car"])]),
    ('{"hierarchy": {"plant": {"tree": {}}}}', [("plant", ["plant"]), ("tree", ["tree"])]),
    # nonsense: nothing usable
    ("I cannot help with that.", None),
    ('["car", "automobile", "tree"]', None),
    ("{}", None),
    ("[[], []]", None),
    ('listperslistpers {"}: [[ hierarchy', None),
    ('{"synsets": {', None),
    ("", None),
    ("42", None),
]


@pytest.mark.parametrize(("text", "expected"), CORPUS)
def test_corpus(text: str, expected: list[tuple[str, list[str]]] | None) -> None:
    parsed = parse_answer(text)
    if expected is None:
        assert parsed is None
    else:
        assert parsed is not None and parsed.synsets == expected


def test_truncated_answers_are_flagged_and_keep_their_hierarchy() -> None:
    parsed = parse_answer('{"synsets": {"tree": ["tree"], "plant": ["plant"]}, '
                          '"hierarchy": {"plant": {"tree": {}, "palm tree": {}}, "car": {"wh')
    assert parsed is not None and parsed.truncated
    assert parsed.synsets == [("tree", ["tree"]), ("plant", ["plant"])]
    assert parsed.hierarchy == [("plant", [("tree", []), ("palm tree", [])])]
    assert not parse_answer('{"synsets": {"tree": ["tree"]}}').truncated  # type: ignore[union-attr]


def test_respelled_matches_labels_up_to_case_and_spacing() -> None:
    parsed = parse_answer('{"synsets": {"Car": ["Car", "car", "AUTOMOBILE"], "Palm  Tree": []}, '
                          '"hierarchy": {"TREE": {"palm tree": {}}}}')
    fixed = parsed.respelled(["car", "automobile", "palm tree", "tree"])  # type: ignore[union-attr]
    assert fixed.synsets == [("car", ["car", "automobile"]), ("palm tree", ["palm tree"])]
    assert fixed.hierarchy == [("tree", [("palm tree", [])])]


def test_hierarchy_forms() -> None:
    nested = parse_answer('{"synsets": {"a": ["a"]}, "hierarchy": {"a": {"b": {"c": {}}}}}')
    listed = parse_answer('{"synsets": {"a": ["a"]}, "hierarchy": {"a": ["b", {"name": "c", "children": []}]}}')
    named = parse_answer('{"synsets": {"a": ["a"]}, "hierarchy": [{"name": "a", "children": [{"name": "b"}]}]}')
    assert nested.hierarchy == [("a", [("b", [("c", [])])])]  # type: ignore[union-attr]
    assert listed.hierarchy == [("a", [("b", []), ("c", [])])]  # type: ignore[union-attr]
    assert named.hierarchy == [("a", [("b", [])])]  # type: ignore[union-attr]


def test_forest_renames_contracts_and_breaks_cycles() -> None:
    canonical = {"plant": "plant", "tree": "tree", "trees": "tree", "palm tree": "palm tree", "car": "car"}
    order = {"car": 0, "tree": 1, "plant": 2, "palm tree": 3, "trees": 4}
    trees = [("vegetation", [("plant", [("trees", [("palm tree", [])]), ("tree", [])])]),  # invented root
             ("tree", [("plant", [])]),  # would close a cycle: skipped
             ("car", [("car", [("palm tree", [])])])]  # palm tree already has a parent: first one wins
    assert forest(trees, canonical, order) == [
        {"name": "plant", "children": [{"name": "tree", "children": [{"name": "palm tree", "children": []}]}]}]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([*'{}[]"\':,` \n\\abc', "json", "True", "null", "```", "<think>"]),
                max_size=120).map("".join))
def test_never_raises_on_bracket_soup(text: str) -> None:
    parsed = parse_answer(text)
    assert parsed is None or all(name in members for name, members in parsed.synsets)


def _well_formed(parsed: ParsedGrouping | None) -> bool:
    """None, or synsets of strings with the canonical name among its members and hierarchy trees of strings."""
    if parsed is None:
        return True
    synsets_ok = all(isinstance(name, str) and isinstance(members, list) and name in members
                     and all(isinstance(m, str) for m in members) for name, members in parsed.synsets)
    return synsets_ok and isinstance(parsed.truncated, bool) and all(isinstance(n, str) for n in parsed.names())


# Any text, and JSON-like text with noise around it (so that some of it parses), cut anywhere.
NOISY = st.builds(lambda pre, body, post, cut: (pre + body + post)[:cut], st.text(max_size=20),
                  st.sampled_from([c[0] for c in CORPUS]), st.text(max_size=20), st.integers(0, 400))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300) | NOISY)
def test_any_text_gives_none_or_a_well_formed_grouping(text: str) -> None:
    assert _well_formed(parse_answer(text))


def test_the_well_formed_check_can_fail() -> None:
    assert not _well_formed(ParsedGrouping([("car", ["automobile"])]))  # canonical name missing
    assert not _well_formed(ParsedGrouping([("car", ["car", 3])]))  # type: ignore[list-item]


def test_deep_nesting_and_non_text_do_not_raise() -> None:
    assert parse_answer("[" * 5000 + "]" * 5000) is None
    assert parse_answer("{" * 3000) is None
    assert parse_answer(None) is None  # type: ignore[arg-type]
