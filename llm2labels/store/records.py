"""What a stored record is: its key, what makes a sample record well-formed, and the store's fixed names."""

from __future__ import annotations

import hashlib
import json
from typing import Any

DAMAGED = "damaged.jsonl"  # lines of sample files found damaged, left out of the index
KEY_PREFIX = b'{"key":"'  # every record's line starts so: readers find keys without parsing the JSON


def sample_key(image: str, crop: str, sample: int) -> str:
    return f"{image}|{crop}|{sample}"


def skip_key(image: str, max_pixels: int | None = None) -> str:
    """The key of an unusable file's record: a fact about the file, or (with `max_pixels`) a skip that
    holds only under that pixel limit."""
    return f"{image}|skip" if max_pixels is None else f"{image}|skip|max_pixels={max_pixels}"


class DamagedRecord(ValueError):
    """A stored line that is complete but not a well-formed sample (a flipped byte, a cut, a wrong type)."""


def fingerprint_digest(fingerprint: dict[str, Any]) -> str:
    text = json.dumps(fingerprint, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def sample_problem(sample: Any) -> str | None:
    """Why `sample` is not a usable sample record, or None: text a string; token_ends increasing integers
    and logprobs numbers, one per token."""
    if not isinstance(sample, dict):
        return "not a JSON object"
    text, ends, logprobs = sample.get("text"), sample.get("token_ends"), sample.get("logprobs")
    if not isinstance(text, str):
        return "text is not a string"
    if not (isinstance(ends, list) and isinstance(logprobs, list)) or len(ends) != len(logprobs):
        return "token_ends and logprobs are not two lists of one length"
    if not all(type(e) is int for e in ends) or any(b < a for a, b in zip(ends, ends[1:])):
        return "token_ends are not increasing integers"
    if not all(type(x) is float or type(x) is int for x in logprobs):
        return "logprobs are not numbers"
    return None
