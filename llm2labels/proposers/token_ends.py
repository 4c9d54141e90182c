"""Where each generated token ends in the answer's text, so a label's characters map back to its tokens.

Shared by the sampling backends: `decode_with_ends` for token ids and a local tokenizer (`hf_vlm`,
`vllm_offline`), `decode_pieces` for the UTF-8 bytes a server returns per token (`openai_api`). Both credit
a character split over several tokens to the token that completes it. No torch here: `openai_api` imports
this module and stays light.
"""

from __future__ import annotations

import codecs
import os
from typing import Any

from llm2labels.proposers.base import token_ends_from_pieces

DECODE_WINDOW = 8  # tokens of left context when decoding one token's piece (see decode_with_ends)


def decode_with_ends(tokenizer: Any, ids: list[int]) -> tuple[str, list[int]]:
    """The text of `ids` (special tokens skipped) and where each token ends in it.

    Each token's piece is what decoding it adds to the DECODE_WINDOW tokens before it: one batched decode
    of 2T short windows instead of T prefixes (quadratic in T), by the Rust tokenizer where there is one
    (the full text comes from the tokenizer's own `batch_decode`, all a tokenizer needs to have). The
    window gives SentencePiece spacing and word-piece joins their context. Where the pieces do not add up
    to the full text (a UTF-8 character split over byte-level tokens, a decoder that strips a window's
    leading space) the exact prefix method (`decode_with_ends_exact`) decides.
    """
    if not ids:
        return "", []
    starts = [max(0, j - DECODE_WINDOW) for j in range(len(ids))]
    windows = [ids[s : j + 1] for j, s in enumerate(starts)] + [ids[s:j] for j, s in enumerate(starts)]
    text = tokenizer.batch_decode([ids], skip_special_tokens=True, clean_up_tokenization_spaces=False)[0]
    backend = getattr(tokenizer, "backend_tokenizer", None)  # the Rust tokenizer: 4x faster on short windows
    if backend is not None:
        decoded = backend.decode_batch(windows, skip_special_tokens=True)
    else:
        decoded = tokenizer.batch_decode(windows, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    n = len(ids)
    pieces = []
    for with_token, without in zip(decoded[:n], decoded[n : 2 * n], strict=True):
        if not with_token.startswith(without):
            return decode_with_ends_exact(tokenizer, ids)
        pieces.append(with_token[len(without) :])
    if "".join(pieces) != text:
        return decode_with_ends_exact(tokenizer, ids)
    return token_ends_from_pieces(pieces)


def decode_with_ends_exact(tokenizer: Any, ids: list[int]) -> tuple[str, list[int]]:
    """`decode_with_ends` by prefixes: token j ends where the decoded prefix ids[:j+1] stops agreeing with
    the full text. Exact for SentencePiece spacing and for byte-level tokens that split a UTF-8 character
    (the character is credited to the token that completes it; the others get an empty piece); quadratic.
    """
    if not ids:
        return "", []
    prefixes = tokenizer.batch_decode(
        [ids[: j + 1] for j in range(len(ids))], skip_special_tokens=True, clean_up_tokenization_spaces=False
    )
    text, ends, end = prefixes[-1], [], 0
    for prefix in prefixes:
        end = max(end, len(os.path.commonprefix([prefix, text])))
        ends.append(end)
    return token_ends_from_pieces([text[a:b] for a, b in zip([0, *ends[:-1]], ends, strict=True)])


def decode_pieces(pieces: list[bytes]) -> tuple[str, list[int]]:
    """Decode tokens' UTF-8 bytes into the text and each token's end offset (in characters).

    The incremental decoder holds back an incomplete character until the token that completes it, so a
    token holding the first byte(s) of a character ends where the previous one did. Invalid bytes become
    U+FFFD, as in `bytes.decode("utf-8", "replace")` of the whole.
    """
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    parts, ends, end = [], [], 0
    for j, piece in enumerate(pieces):
        part = decoder.decode(piece, final=j == len(pieces) - 1)
        parts.append(part)
        end += len(part)
        ends.append(end)
    return "".join(parts), ends
