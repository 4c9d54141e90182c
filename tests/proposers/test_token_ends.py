"""Token ends: where each generated token ends in the answer's text, for every way the backends decode."""

from __future__ import annotations

import random
from typing import Any

import pytest

from llm2labels.proposers import token_ends
from llm2labels.proposers.tiny import FAMILIES, build_tiny
from llm2labels.proposers.token_ends import decode_pieces

TEXTS = ["['car', 'road', 'tree']", "a man riding a red motorcycle", "café 東京 naïve – ok ✓", "  two  spaces\n"]


def sentencepiece_style_tokenizer() -> Any:
    """A Llama-style tokenizer: "▁" for spaces, BPE with byte fallback (<0xNN> tokens for unseen
    characters), and a decoder that fuses bytes and strips the text's first space."""
    from tokenizers import Tokenizer, decoders, models, normalizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    corpus = ["['car', 'road', 'tree', 'sky']", "a man riding a red motorcycle on a dirt road"] * 20
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=specials))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def tokenizer_named(name: str) -> Any:
    if name == "minilm":  # a trained WordPiece tokenizer (the packaged sentence-embedding model's)
        from llm2labels.grouping.embedding import load_encoder

        return load_encoder("all-MiniLM-L6-v2", "cpu").tokenizer
    if name == "sentencepiece":
        return sentencepiece_style_tokenizer()
    return build_tiny(name)[1].tokenizer


@pytest.mark.parametrize("name", [*FAMILIES, "minilm", "sentencepiece"])
def test_windowed_token_ends_equal_the_exact_prefix_method(name: str) -> None:
    tokenizer = tokenizer_named(name)
    rng = random.Random(0)
    sequences = [tokenizer(t, add_special_tokens=False).input_ids for t in TEXTS]
    sequences += [rng.choices(range(len(tokenizer)), k=rng.randint(1, 40)) for _ in range(150)]
    for ids in sequences:
        assert token_ends.decode_with_ends(tokenizer, ids) == token_ends.decode_with_ends_exact(tokenizer, ids)


@pytest.mark.parametrize("name", [*FAMILIES, "minilm", "sentencepiece"])
def test_plain_answers_take_the_windowed_path(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    tokenizer = tokenizer_named(name)
    ids = tokenizer(TEXTS[0] * 6, add_special_tokens=False).input_ids  # longer than the window

    def refuse(*args: Any) -> None:
        raise AssertionError("fell back to the prefix method")

    expected = token_ends.decode_with_ends_exact(tokenizer, ids)
    monkeypatch.setattr(token_ends, "decode_with_ends_exact", refuse)
    assert len(ids) > token_ends.DECODE_WINDOW and token_ends.decode_with_ends(tokenizer, ids) == expected


def test_decode_pieces_credits_a_split_character_to_the_token_that_completes_it() -> None:
    assert decode_pieces([b"a\xe2\x82", b"\xac", b"b"]) == ("a€b", [1, 2, 3])  # € = e2 82 ac
    assert decode_pieces([b"x", b"\xe2"]) == ("x\ufffd", [1, 2])  # cut off mid-character: replaced
    assert decode_pieces([]) == ("", [])
