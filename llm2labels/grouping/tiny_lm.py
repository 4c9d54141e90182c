"""A tiny randomly initialised chat LLM, built offline, for tests and CPU dry runs of `grouper=llm`.

Same code path as a checkpoint after `from_pretrained` (LlamaForCausalLM, a fast tokenizer with a chat
template), with ~0.2 M random weights. The byte-level BPE tokenizer is trained on the fly on the grouping
prompts and on JSON-shaped grouping answers over label words, so that the prompts take few tokens and random
answers are made of label pieces and `{ } [ ] " : ,`. Builds are deterministic (a forked RNG, so the
caller's global RNG state is untouched) and cached per process: deep-copy before changing one.
"""

from __future__ import annotations

import json
from functools import cache

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedModel, PreTrainedTokenizerFast

from llm2labels.grouping.prompts import DEFAULT_CORRECTION, DEFAULT_SYSTEM, DEFAULT_USER

FAMILIES = ("llama",)
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>"]
VOCAB_SIZE = 1024  # 256 byte symbols + specials + merges learnt from the corpus
CONTEXT = 1024  # positions the tiny model is configured for (RoPE: longer inputs run, just untrained)
# Each message is <|role|>, a newline, its content and </s>; the answer starts after "<|assistant|>\n".
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}"
    "{{ eos_token }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
LABELS = (
    "person man woman tree palm tree sky road street car automobile building house grass lawn wall floor "
    "ceiling window door table chair seat bed lamp light cabinet sidewalk pavement mountain hill water sea "
    "river sand plant flower fence rock stone pole sign bus truck bicycle bike motorcycle motorbike bird dog "
    "cat horse boat ship airplane plane train bottle cup mug bowl shelf book painting picture curtain sofa "
    "couch pillow rug carpet stairs bench umbrella bridge field cloud snow roof vehicle animal furniture"
).split()


def _corpus() -> list[str]:
    """The prompts and grouping-shaped answers over label words: deterministic, a few kilobytes."""
    lines = [DEFAULT_SYSTEM, DEFAULT_USER, DEFAULT_CORRECTION]
    n = len(LABELS)
    for start in range(0, n, 2):
        words = [LABELS[(start + k * 5) % n] for k in range(4)]
        lines.append(json.dumps({"synsets": {words[0]: words[:2], words[2]: [words[2]]},
                                 "hierarchy": {words[3]: {words[0]: {}}}}))
        lines.append(json.dumps(words))
    return lines * 3


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE (every byte encodable, so any label round-trips) with the chat template above."""
    from llm2labels.proposers.tiny_tokenizers import byte_bpe

    return byte_bpe(_corpus(), VOCAB_SIZE, SPECIALS, full_alphabet=True,
                    additional_special_tokens=SPECIALS[4:], chat_template=CHAT_TEMPLATE)


@cache
def build_tiny_lm(family: str = "llama") -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """The tiny causal LM (eval mode, float32, CPU) and its tokenizer; cached per process."""
    if family not in FAMILIES:
        raise ValueError(f"unknown tiny LM family {family!r}; choose one of {', '.join(FAMILIES)}")
    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=CONTEXT,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=0.1,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    return model.eval(), tokenizer
