"""BLIP2 + SP baseline (paper §4): BLIP-2 captions each crop, a semantic parser pulls the noun phrases out.

Sampling is `HFVLMProposer`'s (N seeded samples per crop, per-token log-probs); each sampled caption is then
turned into a Python-list `Generation` of its noun phrases (`nouns.NounExtractor`) by `labels_generation`.

How a phrase keeps its probability. The new text is built from pieces, one per caption token under the
phrase: the piece is the part of the phrase that this token wrote, and it carries the token's id and
log-prob. Quotes and separators are glued onto the first/last piece of their phrase, so no extra token is
made. For the caption "a man riding a red motorcycle", written as (say) the tokens "a", " man",
" riding", " a", " red", " motor", "cycle", the text is ``['man', 'red motorcycle']``, from the pieces
``['man'`` | ``, 'red`` | `` motor`` | ``cycle']``: `parse_labels` finds "red motorcycle" over exactly
the pieces of " red", " motor", "cycle", so the token aggregator gives it p(" red") p(" motor") p("cycle")
("product"): the tokens that parsing the caption itself at that span would have given it (the
`parsing.token_indices` rule: tokens sharing a character with the span; a zero-width token, e.g. the first
byte of a split UTF-8 character, counts for neither). Phrases that `parse_labels` would not read back
unchanged (both kinds of quote or a newline inside, more than `parsing.MAX_WORDS` words, numbering at the
start, ...) are dropped rather than mis-scored.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from llm2labels.parsing import parse_labels, token_indices
from llm2labels.proposers.base import CropRequest, Generation, token_ends_from_pieces
from llm2labels.proposers.hf_vlm import HFVLMProposer
from llm2labels.proposers.nouns import DEFAULT_MODEL, DEFAULT_SKIP, NounExtractor

LABELS_CODE_VERSION = 1  # bump when the caption -> label-list conversion changes (it is in the fingerprint)


def first_line(text: str) -> str:
    """The text up to its first newline: BLIP-2's OPT ends an answer with a newline (LAVIS stops there),
    and whatever it writes after one ("Question: ...") is not part of the caption."""
    return text.split("\n", 1)[0]


def list_quote(label: str) -> str | None:
    """A quote character under which `parse_labels` reads `label` back unchanged from a list, or None."""
    for quote in ("'", '"'):
        if quote in label:
            continue
        spans = parse_labels(f"[{quote}{label}{quote}]")
        if len(spans) == 1 and (spans[0].text, spans[0].start, spans[0].end) == (label, 2, 2 + len(label)):
            return quote
    return None


def labels_generation(source: Generation, spans: Iterable[tuple[int, int]]) -> Generation:
    """A Python-list Generation of `source.text[start:end]` for each span, each label carrying exactly the
    source tokens under its span (see the module docstring). No readable span: an empty Generation."""
    pieces: list[str] = []
    ids: list[int] = []
    logprobs: list[float] = []
    for start, end in spans:
        tokens = token_indices(source.token_ends, start, end)
        quote = list_quote(source.text[start:end])
        if not tokens or quote is None:
            continue
        opener = (", " if pieces else "[") + quote
        for n, t in enumerate(tokens):
            lo = max(start, source.token_ends[t - 1] if t else 0)  # token t writes text[ends[t-1]:ends[t]]
            piece = source.text[lo : min(end, source.token_ends[t])]
            pieces.append((opener if n == 0 else "") + piece + (quote if n == len(tokens) - 1 else ""))
            ids.append(source.token_ids[t])
            logprobs.append(source.logprobs[t])
    if not pieces:
        return Generation("", [], [], [])
    pieces[-1] += "]"
    text, ends = token_ends_from_pieces(pieces)
    return Generation(text, ids, ends, logprobs)


class CaptionParseProposer(HFVLMProposer):
    """BLIP-2 (or any `HFVLMProposer` model) captions; `NounExtractor` turns each caption into labels.

    `nouns`: sng | spacy, `phrase`: head | chunk, `skip`: frame words, `spacy_model`: the English pipeline
    (see `nouns`). Every other argument is `HFVLMProposer`'s (model, prompt, template, sampling, ...).
    """

    def __init__(self, nouns: str = "sng", phrase: str = "head", skip: Sequence[str] = DEFAULT_SKIP,
                 spacy_model: str = DEFAULT_MODEL, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.extractor = NounExtractor(nouns, phrase, skip, spacy_model)

    def fingerprint(self) -> dict[str, Any]:
        return {**super().fingerprint(), "backend": "hf_vlm+caption_parse", **self.extractor.fingerprint(),
                "labels_code": LABELS_CODE_VERSION}

    def setup(self, device: str = "cpu") -> None:
        self.extractor.load()  # first: a missing parser fails before minutes of model loading
        super().setup(device)

    def propose(self, requests: list[CropRequest]) -> list[list[Generation]]:
        return [[self.caption_labels(g) for g in gens] for gens in super().propose(requests)]

    def caption_labels(self, caption: Generation) -> Generation:
        """The label-list Generation of one sampled caption (its first line)."""
        return labels_generation(caption, self.extractor(first_line(caption.text)))
