"""Work per crop, not per sample, for `hf_vlm`: image features merged once per crop, prompt prefilled once.

`merged_embeds` encodes each crop once and merges its features into the language model's `inputs_embeds`,
for every family, before `generate` expands the batch to its samples. `prefix_cache` prefills the prompt
once per crop: the language model runs over all prompt positions but the last at batch B, the cache is
repeated to the B x N sample rows, and `generate` resumes from it, computing only the last prompt position
per sample. Each sample row then sees the same keys and values it would have computed itself, so the
samples are those of the unshared path (up to float rounding in the last bits, as with any change of batch
shape). Encoder-decoder models (InstructBLIP-Flan-T5) need nothing of this: HF runs their encoder once per
crop and repeats its output.

`kv_cache="static"` copies the shared prefix into a cache preallocated for prompt + answer, so a decode step
writes one position instead of concatenating (copying) the whole cache, as HF's dynamic cache does; with
`compile=true` HF then compiles the decode step (on a GPU, with CUDA graphs). Same samples either way
(tested on CPU in float32).

These functions lean on Hugging Face internals that a transformers upgrade may change (the version is
pinned); each function's comment names the ones it uses, and tests/proposers/test_hf_vlm.py exercises them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from transformers import PreTrainedModel, StaticCache


def merged_embeds(model: PreTrainedModel, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
    """Encode each crop once and scatter its features over its image tokens (what HF's own forward or
    `generate` of each family does), giving the language model's `inputs_embeds` and attention mask.

    Handing `generate` merged embeddings keeps the vision tower (and the Q-Former) at one row per crop,
    whatever the transformers version does when it expands the batch for num_return_sequences.
    """
    # HF internals: `get_image_features(..., return_dict=True).pooler_output` (its output's layout per
    # family) and `config.image_token_id` (the placeholder token the processor repeats per feature).
    input_ids = inputs["input_ids"]
    embeds = model.get_input_embeddings()(input_ids)
    qformer = {k: inputs[k] for k in ("qformer_input_ids", "qformer_attention_mask") if k in inputs}
    features = model.get_image_features(
        pixel_values=inputs["pixel_values"], **qformer, return_dict=True
    ).pooler_output  # BLIP: [B, queries, D]; LLaVA: one [tokens, D] per image
    if not isinstance(features, Tensor):
        features = torch.cat(list(features), dim=0)
    features = features.reshape(-1, embeds.shape[-1]).to(embeds.dtype)
    is_image = input_ids == model.config.image_token_id
    if int(is_image.sum()) != features.shape[0]:
        raise RuntimeError(
            f"{int(is_image.sum())} image tokens in the prompt for {features.shape[0]} features"
        )
    embeds = embeds.masked_scatter(is_image[..., None], features)
    return {"inputs_embeds": embeds, "attention_mask": inputs["attention_mask"]}


def prefix_cache(
    generator: PreTrainedModel, inputs: dict[str, Tensor], samples: int, static_len: int | None
) -> tuple[Any, str]:
    """(cache, ""): the prompt's keys and values but its last position, computed once per crop and repeated
    to `samples` rows per crop; or (None, why) where there is nothing to share (one sample, an
    encoder-decoder model, a one-token prompt) or the model's cache cannot be repeated by row.

    `static_len`: None for HF's dynamic cache, else the length of a static cache to copy the prefix into
    (prompt + answer). `generate` then sees a cache covering all but the last prompt position and computes
    only that one, at B x N rows. The positions are those `generate` derives from the attention mask itself.
    """
    # HF internals: the forward's `logits_to_keep` and its output key "cache" (the name since transformers
    # 5.24), `Cache.batch_repeat_interleave` and `Cache.is_linear` (recurrent layers, which cannot be
    # repeated by row), and `generate` resuming from a cache shorter than `inputs_embeds`.
    embeds, mask = inputs["inputs_embeds"], inputs["attention_mask"]
    if samples == 1:
        return None, "one sample per crop"
    if generator.config.is_encoder_decoder:
        return None, "an encoder-decoder model"
    if embeds.shape[1] < 2:
        return None, "a one-token prompt"
    positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
    output = generator(
        inputs_embeds=embeds[:, :-1],
        attention_mask=mask[:, :-1],
        position_ids=positions[:, :-1],
        use_cache=True,
        logits_to_keep=1,
    )
    cache = output.get("cache")
    if cache is None or not hasattr(cache, "batch_repeat_interleave") or any(
        getattr(cache, "is_linear", None) or []
    ):
        return None, "a cache that cannot be repeated by row"  # e.g. a recurrent state
    if static_len is None:
        cache.batch_repeat_interleave(samples)
        return cache, ""
    return static_copy(generator, cache, samples, static_len), ""


def static_copy(generator: PreTrainedModel, cache: Any, samples: int, length: int) -> StaticCache:
    """A static cache of `length` positions holding `cache`'s rows, each repeated `samples` times, filled
    layer by layer (so the B x N copy of the whole dynamic cache is never held beside it)."""
    # HF internals: `Cache.layers`, each layer's `keys` / `values` tensors, and `layer.update(keys, values)`
    # on a fresh `StaticCache(config=, max_cache_len=)` layer (it allocates the layer for the rows it is
    # given and writes them from position 0).
    static = StaticCache(config=generator.config, max_cache_len=length)
    for prefix, layer in zip(cache.layers, static.layers, strict=True):
        layer.update(prefix.keys.repeat_interleave(samples, 0), prefix.values.repeat_interleave(samples, 0))
    return static
