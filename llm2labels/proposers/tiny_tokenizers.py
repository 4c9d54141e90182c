"""The tokenizers of the tiny test models: byte-level BPE trained in well under a second on a small corpus of
label words (so random outputs look list-like), and a small WordPiece for InstructBLIP's Q-Former.
Deterministic, so the "same" tiny model is the same model in every process."""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Any

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
IMAGE_ID = SPECIALS.index("<image>")

LABELS = (
    "person tree sky road car building grass wall floor ceiling window door table chair bed lamp cabinet "
    "sidewalk mountain water sea sand plant flower fence rock pole sign bus truck bicycle motorcycle bird "
    "dog "
    "cat horse cow sheep boat airplane train bottle cup bowl shelf book painting curtain mirror sofa pillow "
    "rug stairs railing bench umbrella light street river bridge field cloud snow hill house roof café piñata"
).split()


def corpus() -> list[str]:
    """Python-list-shaped lines of label words, deterministic, a few kilobytes."""
    lines = []
    for start in range(0, len(LABELS), 3):
        words = [LABELS[(start + k * 7) % len(LABELS)] for k in range(5)]
        lines.append("[" + ", ".join(f"'{w}'" for w in words) + "]")
    lines.append("Analyze the image and provide a Python list containing all semantic segmentation labels.")
    lines.append("USER: \n ASSISTANT: " + string.ascii_letters + string.digits + string.punctuation)
    return lines * 4


def byte_bpe(corpus: list[str], vocab_size: int, specials: list[str], full_alphabet: bool,
             post_processor: Any = None, **extra: Any) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on `corpus` in well under a second: ids 0.. are `specials` (the
    first four: <unk>, <s>, </s>, <pad>). `full_alphabet` makes every byte encodable; `extra` goes to
    PreTrainedTokenizerFast (a chat template, more special tokens). The tiny test models' tokenizers."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    alphabet = {"initial_alphabet": pre_tokenizers.ByteLevel.alphabet()} if full_alphabet else {}
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False, **alphabet)
    tok.train_from_iterator(corpus, trainer)
    if post_processor is not None:
        tok.post_processor = post_processor
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", **extra, clean_up_tokenization_spaces=False)


def lm_tokenizer(add_bos: bool) -> PreTrainedTokenizerFast:
    """Byte-level BPE with a few hundred entries; ids 0..4 are SPECIALS, in that order.

    No full byte alphabet: only the corpus' bytes (incl. the 2-byte UTF-8 of "é", "ñ"), so that random
    outputs are mostly word pieces and list punctuation, while split multi-byte characters still occur.
    """
    if add_bos:  # Llama/OPT prepend BOS; T5 appends EOS instead
        post = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    else:
        post = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 2)])
    return byte_bpe(corpus(), 384, SPECIALS, full_alphabet=False, post_processor=post)


def qformer_tokenizer() -> PreTrainedTokenizerFast:
    """A small uncased WordPiece, the same kind as the bert-base-uncased tokenizer of real InstructBLIP.

    Its vocabulary is built explicitly (not trained): WordPiece training breaks ties differently in every
    process, which would make the "same" tiny model a different model in each run.
    """
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    text = " ".join(corpus()).lower()
    chars = sorted({c for c in text if not c.isspace()})
    words = Counter(re.findall(r"[a-z]+", text))
    frequent = sorted(words, key=lambda w: (-words[w], w))[: max(0, 200 - len(specials) - 2 * len(chars))]
    pieces = specials + chars + ["##" + c for c in chars] + [w for w in frequent if len(w) > 1]
    vocab = {piece: i for i, piece in enumerate(dict.fromkeys(pieces))}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        cls_token="[CLS]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        unk_token="[UNK]",
        mask_token="[MASK]",
        model_input_names=["input_ids", "attention_mask"],
    )
