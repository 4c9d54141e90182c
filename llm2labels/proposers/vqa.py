"""BLIP2 VQA baseline (paper §4): ask BLIP-2 what objects the crop holds and split its answer into labels.

Sampling is `HFVLMProposer`'s; the question is the config's `prompt` (null: DEFAULT_QUESTION) in BLIP-2's
"Question: ... Answer:" template. `parse_labels` alone would not do for the answers: it splits "a man, a dog
and a frisbee" at the comma only (-> "a man", "a dog and a frisbee") and keeps the articles, which label
normalisation keeps too. So `answer_spans` splits the answer's first line at commas, semicolons, sentence ends, "and", "or",
"&" and "+", and drops lead-ins ("there are"), articles, numerals and quantifiers from each item:
"there are two cats and a dog." -> "cats", "dog". The items become a label list whose labels keep their own
answer tokens, as in the caption baseline (`caption_parse.labels_generation`).
"""

from __future__ import annotations

import re
from typing import Any

from llm2labels.proposers.base import CropRequest, Generation
from llm2labels.proposers.caption_parse import first_line, labels_generation
from llm2labels.proposers.hf_vlm import HFVLMProposer

SPLIT_CODE_VERSION = 1  # bump when `answer_spans` changes (it is in the fingerprint)
DEFAULT_QUESTION = "What objects are in this image?"

_SEPARATOR = re.compile(r"[,;]|[.!?](?=\s|$)|\s+(?:and|or|&|\+)(?=\s|$)", re.IGNORECASE)
_LEAD_IN = re.compile(
    r"(?:(?:and|or|there|these|those|they|it|this)\s+(?:is|are|was|were)\s+|(?:there|it)['’]s\s+|(?:and|or)\s+)",
    re.IGNORECASE,
)
_DETERMINER = re.compile(
    r"(?:lots\s+of|a\s+lot\s+of|a|an|the|some|any|many|several|few|various|one|two|three|four|five|six|seven|"
    r"eight|nine|ten|\d+)\s+",
    re.IGNORECASE,
)


def answer_spans(answer: str) -> list[tuple[int, int]]:
    """Character spans of the items of a VQA answer (its first line), in order, trimmed as described above."""
    text = first_line(answer)
    spans, start = [], 0
    for cut in [*_SEPARATOR.finditer(text), None]:
        stop = cut.start() if cut else len(text)
        span = _item(text, start, stop)
        if span is not None:
            spans.append(span)
        start = cut.end() if cut else stop
    return spans


def _item(text: str, start: int, stop: int) -> tuple[int, int] | None:
    """[start, stop) less whitespace, edge punctuation, a lead-in and leading determiners; None if empty."""
    while start < stop and not text[start].isalnum():
        start += 1
    lead = _LEAD_IN.match(text, start, stop)
    start = lead.end() if lead else start
    while (det := _DETERMINER.match(text, start, stop)) is not None:
        start = det.end()
    while start < stop and not text[start].isalnum():
        start += 1
    while stop > start and not text[stop - 1].isalnum():
        stop -= 1
    return (start, stop) if stop > start else None


class VQAProposer(HFVLMProposer):
    """`HFVLMProposer` asked `prompt` (default: which objects are in the image), answers split into labels."""

    default_prompt = DEFAULT_QUESTION

    def fingerprint(self) -> dict[str, Any]:
        return {**super().fingerprint(), "backend": "hf_vlm+vqa_split", "split_code": SPLIT_CODE_VERSION}

    def propose(self, requests: list[CropRequest]) -> list[list[Generation]]:
        return [[self.answer_labels(g) for g in gens] for gens in super().propose(requests)]

    @staticmethod
    def answer_labels(answer: Generation) -> Generation:
        """The label-list Generation of one sampled answer."""
        return labels_generation(answer, answer_spans(answer.text))
