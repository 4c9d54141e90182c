"""Tiny randomly initialised VLMs + processors, built offline from config objects, for tests and CI.

They run the same code path as a checkpoint after `from_pretrained` (same model classes, same processors),
just with a few hundred thousand random weights, a byte-level BPE tokenizer trained on the fly on a small
corpus of label words (so random outputs look list-like) and 32 px images. Builds are deterministic (their
own RNG fork, so the caller's global RNG state is untouched) and cached per process.
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any

import torch
from transformers import (
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2Processor,
    BlipImageProcessorPil,
    CLIPImageProcessorPil,
    InstructBlipConfig,
    InstructBlipForConditionalGeneration,
    InstructBlipProcessor,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedModel,
    ProcessorMixin,
)

from llm2labels.proposers.tiny_tokenizers import IMAGE_ID, SPECIALS, lm_tokenizer, qformer_tokenizer

FAMILIES = ("instructblip", "instructblip_t5", "blip2", "llava")
IMAGE_PX = 32  # input side of every tiny vision tower, in pixels
PATCH_PX = 8  # ViT patch side: (32/8)^2 = 16 patches
NUM_QUERY_TOKENS = 4  # Q-Former queries (real checkpoints: 32)
# Raw logit added to end-of-sequence, per family, so that sampled answers end by EOS sometimes and run to
# max_new_tokens other times (random weights alone give EOS either almost never or all the time).
EOS_BIAS = {"instructblip": 0.1, "instructblip_t5": -0.5, "blip2": -0.6, "llava": 1.2}

def _vision(**extra: Any) -> dict[str, Any]:
    """The tiny ViT config; `extra` adds or overrides fields."""
    return dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=IMAGE_PX,
        patch_size=PATCH_PX,
        initializer_range=0.05,  # InstructBLIP's default (1e-10) would make the answer ignore the image
    ) | extra


def _llama(vocab: int, **extra: Any) -> dict[str, Any]:
    """The tiny Llama text config; `extra` adds or overrides fields."""
    return dict(
        model_type="llama",
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
        initializer_range=0.1,
    ) | extra


def _qformer(vocab: int) -> dict[str, Any]:
    return dict(
        vocab_size=vocab,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        encoder_hidden_size=32,
        cross_attention_frequency=1,
    )


def _blip_image_processor() -> BlipImageProcessorPil:
    return BlipImageProcessorPil(size={"height": IMAGE_PX, "width": IMAGE_PX})


def _instructblip(t5: bool) -> tuple[PreTrainedModel, ProcessorMixin]:
    tok, qtok = lm_tokenizer(add_bos=not t5), qformer_tokenizer()
    vocab = len(tok)
    if t5:
        text = dict(
            model_type="t5",
            vocab_size=vocab,
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_decoder_layers=2,
            num_heads=4,
            pad_token_id=3,
            eos_token_id=2,
            decoder_start_token_id=3,
            bos_token_id=None,
        )
    else:
        text = _llama(vocab)
    config = InstructBlipConfig(
        vision_config=_vision(),
        qformer_config=_qformer(len(qtok)),
        text_config=text,
        num_query_tokens=NUM_QUERY_TOKENS,
        image_token_index=IMAGE_ID,
    )
    model = InstructBlipForConditionalGeneration(config)
    processor = InstructBlipProcessor(_blip_image_processor(), tok, qtok, num_query_tokens=NUM_QUERY_TOKENS)
    return model, processor


def _blip2() -> tuple[PreTrainedModel, ProcessorMixin]:
    tok = lm_tokenizer(add_bos=True)
    text = dict(
        model_type="opt",
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=2,
        ffn_dim=64,
        num_attention_heads=4,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
        word_embed_proj_dim=32,
        init_std=0.1,
    )
    config = Blip2Config(
        vision_config=_vision(),
        qformer_config=_qformer(30),
        text_config=text,
        num_query_tokens=NUM_QUERY_TOKENS,
        image_token_index=IMAGE_ID,
    )
    model = Blip2ForConditionalGeneration(config)
    processor = Blip2Processor(_blip_image_processor(), tok, num_query_tokens=NUM_QUERY_TOKENS)
    return model, processor


def _llava(image_px: int = IMAGE_PX, **text: Any) -> tuple[PreTrainedModel, ProcessorMixin]:
    tok = lm_tokenizer(add_bos=True)
    config = LlavaConfig(
        vision_config=dict(model_type="clip_vision_model", projection_dim=32, **_vision(image_size=image_px)),
        text_config=_llama(len(tok), **text),
        image_token_index=IMAGE_ID,
        image_seq_length=(image_px // PATCH_PX) ** 2,
        vision_feature_layer=-1,
    )
    model = LlavaForConditionalGeneration(config)  # on torch's default device (see sized_llava)
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_px}, crop_size={"height": image_px, "width": image_px}
    )
    processor = LlavaProcessor(
        image_processor,
        tok,
        patch_size=PATCH_PX,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    return model, processor


def _set_output_bias(model: PreTrainedModel, eos_bias: float) -> None:
    """Give the output layer a bias (tied weights stay tied): `eos_bias` on EOS, -100 on `<image>`, else 0.

    Random weights put EOS anywhere from "never" to "every few tokens"; the bias is tuned per family so
    that, at the default sampling settings, some answers end by EOS and others run to max_new_tokens.
    Like trained checkpoints, the model then never emits its image placeholder (a generated one would make
    a teacher-forced forward pass with pixel_values miscount the image slots).
    """
    head = model.get_output_embeddings()
    biased = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    biased.weight = head.weight
    with torch.no_grad():
        biased.bias.zero_()
        biased.bias[SPECIALS.index("</s>")] = eos_bias
        biased.bias[IMAGE_ID] = -100.0
    model.set_output_embeddings(biased)


@cache
def build_tiny(family: str) -> tuple[PreTrainedModel, ProcessorMixin]:
    """The tiny model (eval mode, float32, CPU) and its processor for one of FAMILIES; cached per process."""
    if family not in FAMILIES:
        raise ValueError(f"unknown tiny family {family!r}; choose one of {', '.join(FAMILIES)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if family == "blip2":
            model, processor = _blip2()
        elif family == "llava":
            model, processor = _llava()
        else:
            model, processor = _instructblip(t5=family == "instructblip_t5")
        _set_output_bias(model, EOS_BIAS[family])
    return model.eval(), processor


def sized_llava(
    hidden_size: int,
    layers: int,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    image_tokens: int = (IMAGE_PX // PATCH_PX) ** 2,
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """A random LLaVA whose Llama decoder has the width and depth of a real one (64-wide heads, a Llama-sized
    MLP), with the tiny vision tower, tokenizer and vocabulary: for throughput benchmarks on a GPU, where the
    bytes each decode step reads matter and the answers do not. `image_tokens` (a square; LLaVA-1.5: 576)
    sets the prompt's length. Built directly on `device`."""
    side = math.isqrt(image_tokens)
    if side * side != image_tokens:
        raise ValueError(f"image_tokens must be a square number, got {image_tokens}")
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(0)
        heads = hidden_size // 64
        intermediate = -(-hidden_size * 8 // 3 // 256) * 256  # Llama's 8/3 x width, rounded up to 256
        model, processor = _llava(
            image_px=side * PATCH_PX,
            hidden_size=hidden_size,
            intermediate_size=intermediate,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=heads,
            max_position_embeddings=2048,
            initializer_range=0.02,
        )
        _set_output_bias(model, EOS_BIAS["llava"])
    return model.to(dtype).eval(), processor
