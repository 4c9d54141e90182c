"""Hugging Face vision-language models as label proposers: InstructBLIP (Vicuna, Flan-T5), BLIP-2, LLaVA-1.5.

One `generate` call per batch of crops asks for `len(seeds)` answers per crop. Sampling is done by our own
processors (see `sampling`), so sample k of a crop depends only on (crop, fingerprint, seeds[k]). Each crop
is encoded once and, with `shared_prefill`, its prompt prefilled once, optionally into a static KV cache
(see `prefill`).

The noise is batch-independent by construction; the logits are so only up to the last bits of floating
point. On CPU in float32 they match exactly (tested); on a GPU, a different batch can pick other matmul
kernels, and in bfloat16 a near-tie between two tokens may then flip a draw. Keep batch_size fixed across
a resumed run (or use float32) where bit-exact samples matter.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch
from torch import Tensor
from transformers import GenerationConfig, PreTrainedModel, ProcessorMixin

from llm2labels.errors import ConfigError, int_at_least
from llm2labels.proposers.base import CropRequest, Generation
from llm2labels.proposers.hf_hub import DTYPES, load_pretrained
from llm2labels.proposers.prefill import merged_embeds, prefix_cache
from llm2labels.proposers.sampling import (
    SAMPLING_CODE_VERSION,
    SamplingState,
    build_processors,
    builtin_processors,
    call_generation_config,
    seeds_tensor,
)
from llm2labels.proposers.settings import SamplingProposer
from llm2labels.proposers.token_ends import decode_with_ends

log = logging.getLogger(__name__)
TINY_PREFIX = "tiny:"  # model ids "tiny:<family>" build a random tiny model (llm2labels.proposers.tiny)
FAMILY_OF_MODEL_TYPE = {"instructblip": "instructblip", "blip-2": "blip2", "llava": "llava"}


class HFVLMProposer(SamplingProposer):
    """Samples label lists from a Hugging Face VLM, keeping each token's log-probability.

    The sampling settings (prompt, template, top_p, ...) are `SamplingProposer`'s. `template` wraps the
    prompt in the model's chat format. The repetition penalty applies to generated tokens only (see
    `sampling.GeneratedOnly`); top_k=50 is HF's default, which the paper's sampled runs inherited.
    """

    empty_prompt_ok = True  # BLIP-2 captions the image alone (proposer=blip2_caption)

    def __init__(
        self,
        model: str,
        *,
        dtype: str = "float32",
        batch_size: int = 8,
        revision: str | None = None,
        trust_remote_code: bool = False,
        shared_prefill: bool = True,
        kv_cache: str = "dynamic",
        compile: bool = False,
        **sampling: Any,
    ) -> None:
        super().__init__(**sampling)
        self.model_id, self.revision, self.trust_remote_code = model, revision, trust_remote_code
        self.dtype, self.batch_size = dtype, batch_size
        self.shared_prefill, self.kv_cache, self.compile = shared_prefill, kv_cache, compile
        self._validate()
        self._model: PreTrainedModel | None = None
        self._processor: ProcessorMixin | None = None
        self._family = ""
        self._eos_ids: list[int] = []
        self._told: set[str] = set()

    def _validate(self) -> None:
        tiny = str(self.model_id).startswith(TINY_PREFIX)
        tiny_ids: list[str] = []
        if tiny:  # imported only here: tiny models are for tests and dry runs
            from llm2labels.proposers.tiny import FAMILIES

            tiny_ids = [TINY_PREFIX + family for family in FAMILIES]
        model = {  # message -> holds
            "model must be a model id or tiny:<family>": bool(self.model_id),
            f"tiny models are {', '.join(tiny_ids)}, got {self.model_id}": not tiny or self.model_id in tiny_ids,
        }
        engine = {
            f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}": self.dtype in DTYPES,
            f"batch_size must be an int >= 1, got {self.batch_size}": int_at_least(self.batch_size, 1),
            f"shared_prefill must be true or false, got {self.shared_prefill!r}": isinstance(
                self.shared_prefill, bool
            ),
            f"kv_cache must be dynamic or static, got {self.kv_cache!r}": self.kv_cache in ("dynamic", "static"),
            f"compile must be true or false, got {self.compile!r}": isinstance(self.compile, bool),
            "kv_cache=static needs shared_prefill=true (the static cache is filled from the shared prefill)": (
                self.kv_cache == "dynamic" or self.shared_prefill is True
            ),
            "compile=true needs kv_cache=static (HF compiles the decode step only with a static cache)": (
                self.compile is False or self.kv_cache == "static"
            ),
        }
        self.check(model, engine)

    def fingerprint(self) -> dict[str, Any]:
        """What changes a sample. Its keys and values name the sample store's folder: keep them as they are."""
        return {
            "backend": "hf_vlm",
            "model": self.model_id,
            "revision": self.revision,
            "prompt": self.prompt,
            "template": self.template,
            "top_p": self.top_p,
            "temperature": self.temperature,
            "repetition_penalty": self.repetition_penalty,
            "top_k": self.top_k,
            "max_new_tokens": self.max_new_tokens,
            "logprobs": self.logprob_mode,
            "dtype": self.dtype,
            "sampling_code": SAMPLING_CODE_VERSION,
        }

    def setup(self, device: str = "cpu") -> None:
        if self._model is not None and self._model.device == torch.device(device):
            return  # already loaded here (e.g. a second predict loop in the same process)
        if self.model_id.startswith(TINY_PREFIX):
            from llm2labels.proposers.tiny import build_tiny

            model, processor = copy.deepcopy(build_tiny(self.model_id[len(TINY_PREFIX) :]))
            if self.dtype != "auto":
                model = model.to(DTYPES[self.dtype])
        else:
            model, processor = load_pretrained(
                self.model_id, self.revision, self.dtype, self.trust_remote_code
            )
        self.attach(model.to(device), processor)

    def attach(self, model: PreTrainedModel, processor: ProcessorMixin) -> None:
        """Use a model that is already built and placed (e.g. a random one of a chosen size, for throughput
        benchmarks) instead of loading `model`; `setup` ends here too."""
        self._family = FAMILY_OF_MODEL_TYPE.get(model.config.model_type, "")
        if not self._family:
            raise ConfigError(
                f"{self.model_id}: model type {model.config.model_type!r} is not supported "
                "(use InstructBLIP, BLIP-2 or LLaVA-1.5)"
            )
        if getattr(processor, "num_query_tokens", 0) is None:  # BLIP processors: image slots in the prompt
            processor.num_query_tokens = model.config.num_query_tokens  # (older hub configs leave it unset)
        self._model, self._processor = model.eval(), processor
        self._eos_ids = self._install_generation_config()
        if not self._generator().config.is_encoder_decoder:
            processor.tokenizer.padding_side = "left"  # new tokens must follow every prompt directly

    @property
    def hf_model(self) -> PreTrainedModel:
        """The loaded model (after `setup`)."""
        assert self._model is not None, "call setup() first"
        return self._model

    @property
    def hf_processor(self) -> ProcessorMixin:
        """The loaded processor (after `setup`)."""
        assert self._processor is not None, "call setup() first"
        return self._processor

    def _generator(self) -> PreTrainedModel:
        """The module whose `generate` runs the decoding loop (BLIP models: their language model)."""
        return self.hf_model if self._family == "llava" else self.hf_model.language_model

    def _install_generation_config(self) -> list[int]:
        """Replace the checkpoint's generation defaults by a config holding only its special-token ids.

        HF fills every field a generate call leaves unset from `generation_config`, so a checkpoint's
        defaults (a repetition penalty, min_length, suppress_tokens, ...) would otherwise put processors of
        their own in front of ours. Returns the EOS ids.
        """
        generator, tokenizer = self._generator(), self.hf_processor.tokenizer
        fallbacks = {
            "bos_token_id": None,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
            "decoder_start_token_id": None,
        }
        ids = {}
        for name, fallback in fallbacks.items():  # the language model's, else the composite model's, else ...
            values = (
                getattr(generator.generation_config, name, None),
                getattr(self.hf_model.generation_config, name, None),
            )
            ids[name] = next((v for v in values if v is not None), fallback)
        if ids["pad_token_id"] is None:  # finished rows are filled with pad; it is cut off with the EOS
            ids["pad_token_id"] = ids["eos_token_id"]
        generator.generation_config = GenerationConfig(**ids)
        self.hf_model.generation_config = GenerationConfig(**ids)
        added = builtin_processors(generator, self._call_config(1))
        if added:  # then the first of our processors would not see the raw logits
            raise RuntimeError(f"{self.model_id}: generate() would add processors of its own: {added}")
        eos = ids["eos_token_id"]
        return [eos] if isinstance(eos, int) else list(eos or [])

    def _call_config(self, samples: int) -> GenerationConfig:
        config = call_generation_config(self._generator().generation_config, samples, self.max_new_tokens)
        # HF compiles the decode step by itself when given a static cache, unless told not to: the
        # `disable_compile` field, read by `generate`'s internal `_valid_auto_compile_criteria`.
        config.disable_compile = not self.compile
        return config

    def propose(self, requests: list[CropRequest]) -> list[list[Generation]]:
        """Batches crops that want the same number of samples, `batch_size` crops per generate call."""
        out: list[list[Generation]] = [[] for _ in requests]
        by_count: dict[int, list[int]] = {}
        for index, request in enumerate(requests):
            if request.seeds:
                by_count.setdefault(len(request.seeds), []).append(index)
        for indices in by_count.values():
            for start in range(0, len(indices), self.batch_size):
                batch = indices[start : start + self.batch_size]
                for index, generations in zip(
                    batch, self._propose_batch([requests[i] for i in batch]), strict=True
                ):
                    out[index] = generations
        return out

    def _propose_batch(self, requests: list[CropRequest]) -> list[list[Generation]]:
        samples = len(requests[0].seeds)
        state = SamplingState(seeds_tensor([s for r in requests for s in r.seeds], self.hf_model.device))
        processors, capture = build_processors(
            state,
            logprobs=self.logprob_mode,
            repetition_penalty=self.repetition_penalty,
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
        )
        # fork_rng: HF's multinomial step draws from the global RNG (its outcome is fixed by GumbelSampler)
        device = self.hf_model.device
        cuda = [device.index or 0] if device.type == "cuda" else []
        with torch.inference_mode(), torch.random.fork_rng(devices=cuda):
            inputs = self._model_inputs([r.image for r in requests])
            if self.shared_prefill:
                inputs.update(self._shared_prefix(inputs, samples))
            output = self._generator().generate(
                **inputs, generation_config=self._call_config(samples), logits_processor=processors
            )
            new_tokens = output.sequences[:, state.prompt_len :]
            logprobs = capture.finish(new_tokens)
        rows = [
            self._generation(ids, lps)
            for ids, lps in zip(new_tokens.tolist(), logprobs.tolist(), strict=True)
        ]
        return [rows[i * samples : (i + 1) * samples] for i in range(len(requests))]

    def _model_inputs(self, images: list[Any]) -> dict[str, Tensor]:
        """The language model's inputs for a batch of crops: prompt embeddings with the image features merged
        in, and the attention mask (the prompt left-padded for decoder-only models)."""
        inputs = self.hf_processor(
            images=[im.convert("RGB") for im in images],
            text=[self.prompt_text] * len(images),
            return_tensors="pt",
            padding=True,
        )
        inputs = {k: v.to(self.hf_model.device) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(self.hf_model.dtype)
        return merged_embeds(self.hf_model, inputs)

    def _shared_prefix(self, inputs: dict[str, Tensor], samples: int) -> dict[str, Any]:
        """`{"cache": ...}`: the prompt prefilled once per crop (see `prefill.prefix_cache`); {} where there
        is nothing to share, which is said once per reason when a static cache was asked for."""
        static_len = inputs["inputs_embeds"].shape[1] + self.max_new_tokens if self.kv_cache == "static" else None
        cache, why = prefix_cache(self._generator(), inputs, samples, static_len)
        if cache is not None:
            return {"cache": cache}
        if self.kv_cache == "static" and why not in self._told:
            self._told.add(why)
            log.warning("%s: kv_cache=static is not used with %s (the dynamic cache is)", self.model_id, why)
        return {}

    def _generation(self, ids: list[int], logprobs: list[float]) -> Generation:
        """Cut at the first EOS (excluded), decode, and locate each token's end in the text."""
        cut = next((j for j, token in enumerate(ids) if token in self._eos_ids), len(ids))
        ids, logprobs = ids[:cut], logprobs[:cut]
        text, ends = decode_with_ends(self.hf_processor.tokenizer, ids)
        return Generation(text=text, token_ids=ids, token_ends=ends, logprobs=logprobs)


