"""Seeded, batch-independent sampling and per-token log-prob capture, as Hugging Face logits processors.

`generate(do_sample=True)` draws every row of a batch from one global RNG stream, so a sample would depend
on the batch it ran in. Instead the last processor draws the token itself: the argmax of log-softmax +
Gumbel(0, 1) noise is an exact sample from the softmax (the Gumbel-max trick), and the noise is a pure
function of (row seed, step, token id), so sample k of a crop depends only on the crop, the sampling
parameters and its own seed. It hands HF a distribution with all mass on that token, which HF's own
multinomial step can only return (greedy decoding would do too, but transformers 5 refuses greedy decoding
with num_return_sequences > 1). The processor list, in the order HF itself applies them:

    RawCapture -> RepetitionPenalty -> Temperature -> TopK -> TopP -> ProcessedCapture -> GumbelSampler

with only the capture named by the log-prob mode present. HF must add no processor of its own (the first one
then sees the raw logits): `call_generation_config` and `builtin_processors` see to that, with the model's
own generation defaults cleared (see `HFVLMProposer`).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList, PreTrainedModel
from transformers.generation import (
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

#: Bump when anything here changes which tokens a seed produces (it is part of every proposer fingerprint).
SAMPLING_CODE_VERSION = 1

_MASK64 = (1 << 64) - 1


def _signed(value: int) -> int:
    """A 64-bit pattern as the int64 torch stores it."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


_GAMMA = _signed(0x9E3779B97F4A7C15)  # splitmix64's increment (2^64 / golden ratio)
_MIX1 = _signed(0xBF58476D1CE4E5B9)
_MIX2 = _signed(0x94D049BB133111EB)
_STEP_SALT = _signed(0xD1B54A32D192ED03)


def _shr(x: Tensor, bits: int) -> Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic: mask off the copied sign bits)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def mix64(x: Tensor) -> Tensor:
    """splitmix64's finaliser on int64 tensors: a bijection of 64-bit patterns (multiplies wrap mod 2^64)."""
    x = (x ^ _shr(x, 30)) * _MIX1
    x = (x ^ _shr(x, 27)) * _MIX2
    return x ^ _shr(x, 31)


def seeds_tensor(seeds: list[int], device: torch.device | str = "cpu") -> Tensor:
    """User seeds (any Python ints; taken mod 2^64) as an int64 tensor."""
    return torch.tensor([_signed(s) for s in seeds], dtype=torch.int64, device=device)


def counter_uniform(row_seeds: Tensor, step: int, vocab: int) -> Tensor:
    """u[r, t] in (0, 1), float64 with 52 random bits, a pure function of (row_seeds[r], step, t).

    Each (seed, step) pair starts its own splitmix64 stream and token t takes its t-th output, so no two
    rows, steps or tokens share a draw and no row's noise depends on its position in the batch.
    """
    stream = mix64(mix64(row_seeds) + _signed((step + 1) * _STEP_SALT))  # [R]
    counters = torch.arange(1, vocab + 1, dtype=torch.int64, device=row_seeds.device) * _GAMMA  # [V], wraps
    bits = _shr(mix64(stream[:, None] + counters[None, :]), 12)  # top 52 bits, [R, V]
    return (bits.to(torch.float64) + 0.5) * 2.0**-52  # in [2^-53, 1 - 2^-53]: log(u) is finite


def gumbel_noise(row_seeds: Tensor, step: int, vocab: int) -> Tensor:
    """Standard Gumbel noise -log(-log(u)), [R, V] float64."""
    return -torch.log(-torch.log(counter_uniform(row_seeds, step, vocab)))


class SamplingState:
    """What the processors of one `generate` call share: each row's seed and the prompt length.

    Step s (0-based) is the call that scores the s-th new token; HF appends one token per call, so
    s = input_ids.shape[1] - (input_ids.shape[1] at the first call). That first length is the prompt as HF
    holds it: the prompt tokens for decoder-only models given input_ids, 0 when given only inputs_embeds, 1
    (the decoder start token) for encoder-decoders; `sequences[:, prompt_len:]` are the new tokens.
    """

    def __init__(self, row_seeds: Tensor) -> None:
        self.row_seeds = row_seeds
        self.prompt_len: int | None = None

    def step(self, input_ids: Tensor) -> int:
        if self.prompt_len is None:
            self.prompt_len = input_ids.shape[1]
        return input_ids.shape[1] - self.prompt_len


class LogprobCapture(LogitsProcessor):
    """Records log p(chosen token) under the scores it sees; passes the scores on unchanged.

    Memory: only the latest step's log-softmax [R, V] is kept. The token chosen from it is known one call
    later (the last column of input_ids), when its log-prob is gathered; `finish` gathers the last step.
    """

    def __init__(self) -> None:
        self.previous: Tensor | None = None
        self.chosen: list[Tensor] = []

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        if self.previous is not None:
            self.chosen.append(self.previous.gather(1, input_ids[:, -1:])[:, 0])
        self.previous = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def finish(self, new_tokens: Tensor) -> Tensor:
        """Log-probs [R, T] of the generated tokens [R, T] (rows after EOS hold pad: ignore them)."""
        steps = new_tokens.shape[1]
        columns = self.chosen[:steps]
        if len(columns) < steps and self.previous is not None:
            columns.append(self.previous.gather(1, new_tokens[:, steps - 1 :])[:, 0])
        if len(columns) != steps:
            raise RuntimeError(f"captured {len(columns)} steps for {steps} generated tokens")
        return (
            torch.stack(columns, dim=1)
            if columns
            else new_tokens.new_zeros(new_tokens.shape, dtype=torch.float)
        )


class GeneratedOnly(LogitsProcessor):
    """Runs `inner` on the generated tokens only, not the prompt (used for the repetition penalty).

    This is what the paper's runs did (older HF InstructBLIP generated from inputs_embeds alone, so the
    penalty never saw the prompt), and it treats every family alike whatever the prompt holds.
    """

    def __init__(self, inner: LogitsProcessor, state: SamplingState) -> None:
        self.inner, self.state = inner, state

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        step = self.state.step(input_ids)
        return self.inner(input_ids[:, input_ids.shape[1] - step :], scores)


class GumbelSampler(LogitsProcessor):
    """Last processor: draws argmax(scores + counter-based Gumbel noise) and returns a one-hot distribution
    (0 there, -inf elsewhere), so HF's own sampling step can only pick the token drawn here."""

    def __init__(self, state: SamplingState) -> None:
        self.state = state

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        # argmax(log_softmax(s) + g) == argmax(s + g): the normaliser is one constant per row.
        noise = gumbel_noise(
            self.state.row_seeds.to(scores.device), self.state.step(input_ids), scores.shape[1]
        )
        choice = (scores.double() + noise).argmax(dim=-1, keepdim=True)
        return torch.full_like(scores, float("-inf")).scatter_(1, choice, 0.0)


def build_processors(
    state: SamplingState,
    *,
    logprobs: str,
    repetition_penalty: float,
    temperature: float,
    top_k: int,
    top_p: float,
) -> tuple[LogitsProcessorList, LogprobCapture]:
    """The processor list for one generate call, and the capture that will hold the chosen log-probs."""
    capture = LogprobCapture()
    chain: list[LogitsProcessor] = [capture] if logprobs == "raw" else []
    if repetition_penalty != 1.0:
        chain.append(GeneratedOnly(RepetitionPenaltyLogitsProcessor(repetition_penalty), state))
    if temperature != 1.0:
        chain.append(TemperatureLogitsWarper(temperature))
    if top_k != 0:
        chain.append(TopKLogitsWarper(top_k))
    if top_p < 1.0:
        chain.append(TopPLogitsWarper(top_p))
    if logprobs == "processed":
        chain.append(capture)
    chain.append(GumbelSampler(state))
    return LogitsProcessorList(chain), capture


def call_generation_config(base: GenerationConfig, samples: int, max_new_tokens: int) -> GenerationConfig:
    """The config of one generate call (`base`: the special-token ids): `samples` rows per input and no
    processors but ours.

    do_sample=True (HF's multinomial step then returns GumbelSampler's token) with its warpers set to
    their off values explicitly: left unset, HF would fill in its global default top_k=50.
    """
    config = copy.deepcopy(base)
    config.update(
        do_sample=True,
        num_beams=1,
        num_return_sequences=samples,
        max_new_tokens=max_new_tokens,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        typical_p=1.0,
        repetition_penalty=1.0,
        length_penalty=1.0,
        return_dict_in_generate=True,
        output_scores=False,
        output_logits=False,
    )
    return config


def builtin_processors(model: PreTrainedModel, call_config: GenerationConfig) -> list[str]:
    """Names of the processors HF itself would add for `call_config` on `model` (must be empty)."""
    # HF internals: `_prepare_generation_config`, `_prepare_special_tokens` and `_get_logits_processor`, the
    # steps by which `generate` builds its own processor list (their arguments are transformers 5.24's).
    prepared, _ = model._prepare_generation_config(call_config)
    model._prepare_special_tokens(prepared, device=model.device)  # EOS-based ones (min_length) need it
    built = model._get_logits_processor(
        generation_config=prepared,
        input_ids_seq_length=1,
        logits_processor=LogitsProcessorList(),
        device=str(model.device),
        model_kwargs={},
    )
    return [type(p).__name__ for p in built]
