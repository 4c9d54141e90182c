"""The seeded sampler and log-prob captures, checked against independent references."""

from __future__ import annotations

import pytest
import torch
from transformers import GenerationConfig, LogitsProcessorList

from llm2labels.proposers.sampling import (
    GeneratedOnly,
    GumbelSampler,
    LogprobCapture,
    SamplingState,
    build_processors,
    builtin_processors,
    call_generation_config,
    counter_uniform,
    mix64,
    seeds_tensor,
)
from llm2labels.proposers.tiny import build_tiny

M64 = (1 << 64) - 1


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def reference_mix64(x: int) -> int:
    """splitmix64's finaliser in plain Python integers (the published constants)."""
    x &= M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def test_mix64_matches_python_reference_including_wrapping_and_sign_bits() -> None:
    values = [0, 1, 2, 12345, (1 << 63) - 1, 1 << 63, M64, 0x9E3779B97F4A7C15, 987654321987654321]
    got = mix64(seeds_tensor(values)).tolist()
    assert [g & M64 for g in got] == [reference_mix64(v) for v in values]


def test_counter_uniform_range_determinism_and_position_independence() -> None:
    u = counter_uniform(seeds_tensor([7, 8, 9]), step=3, vocab=1000)
    assert u.dtype == torch.float64 and u.shape == (3, 1000)
    assert 0.0 < u.min().item() and u.max().item() < 1.0
    assert abs(u.mean().item() - 0.5) < 0.02  # 3000 draws: std of the mean is 0.005
    alone = counter_uniform(seeds_tensor([8]), step=3, vocab=1000)
    torch.testing.assert_close(u[1:2], alone, rtol=0, atol=0)  # row 8 is the same wherever it sits
    assert not torch.equal(u[0], u[1])  # different seeds
    assert not torch.equal(u[1:2], counter_uniform(seeds_tensor([8]), step=4, vocab=1000))  # different steps


def _draw(seeds: list[int], logits: torch.Tensor, step_prefix: int) -> torch.Tensor:
    """Run GumbelSampler on one step; returns the drawn token per row."""
    state = SamplingState(seeds_tensor(seeds))
    state.prompt_len = 0
    input_ids = torch.zeros(len(seeds), step_prefix, dtype=torch.long)
    onehot = GumbelSampler(state)(input_ids, logits.expand(len(seeds), -1).clone())
    assert torch.isfinite(onehot).sum(dim=1).eq(1).all()  # all mass on one token per row
    return onehot.argmax(dim=1)


def test_gumbel_sampler_frequencies_match_the_distribution_over_20k_seeds() -> None:
    probs = torch.tensor([0.5, 0.25, 0.15, 0.07, 0.03, 0.0])
    logits = probs.log()[None] + 3.0  # unnormalised scores, one -inf (never drawn)
    n = 20_000
    for step in (0, 5):
        counts = torch.bincount(_draw(list(range(n)), logits, step), minlength=6).double()
        assert counts[5] == 0
        expected = probs[:5].double() * n
        chi2 = ((counts[:5] - expected) ** 2 / expected).sum().item()
        assert chi2 < 18.47, (step, counts.tolist())  # chi-square, 4 dof, p = 0.001
        assert (counts[:5] / n - probs[:5].double()).abs().max() < 0.02


def test_gumbel_sampler_row_draw_does_not_depend_on_row_position() -> None:
    logits = torch.randn(1, 50, generator=torch.Generator().manual_seed(0))
    seeds = list(range(100, 140))
    batch = _draw(seeds, logits, step_prefix=2)
    reversed_batch = _draw(seeds[::-1], logits, step_prefix=2).flip(0)
    single = torch.cat([_draw([s], logits, step_prefix=2) for s in seeds])
    assert torch.equal(batch, reversed_batch) and torch.equal(batch, single)
    assert len(set(batch.tolist())) > 5  # and the seeds do spread the draws


def test_logprob_capture_gathers_each_chosen_token_keeping_one_step() -> None:
    capture = LogprobCapture()
    steps = [torch.randn(2, 7, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    tokens = torch.tensor([[3, 1, 6], [0, 5, 2]])
    prompt = torch.zeros(2, 4, dtype=torch.long)
    for s, scores in enumerate(steps):
        out = capture(torch.cat([prompt, tokens[:, :s]], dim=1), scores)
        assert out is scores  # passes the scores on untouched
    got = capture.finish(tokens)
    expected = torch.stack([torch.log_softmax(steps[s], -1)[[0, 1], tokens[:, s]] for s in range(3)], dim=1)
    torch.testing.assert_close(got, expected)


def test_repetition_penalty_sees_generated_tokens_only() -> None:
    from transformers.generation import RepetitionPenaltyLogitsProcessor

    state = SamplingState(seeds_tensor([0]))
    penalty = GeneratedOnly(RepetitionPenaltyLogitsProcessor(2.0), state)
    scores = torch.tensor([[1.0, 1.0, -1.0, 1.0]])
    first = penalty(torch.tensor([[0, 1]]), scores.clone())  # step 0: the prompt (0, 1) is not penalised
    torch.testing.assert_close(first, scores)
    later = penalty(torch.tensor([[0, 1, 2, 3]]), scores.clone())  # generated 2 and 3
    torch.testing.assert_close(later, torch.tensor([[1.0, 1.0, -2.0, 0.5]]))


def test_processor_order_and_capture_position() -> None:
    state = SamplingState(seeds_tensor([0]))
    raw, _ = build_processors(
        state, logprobs="raw", repetition_penalty=2.0, temperature=0.3, top_k=50, top_p=0.9
    )
    names = [type(p).__name__ for p in raw]
    assert names == [
        "LogprobCapture",
        "GeneratedOnly",
        "TemperatureLogitsWarper",
        "TopKLogitsWarper",
        "TopPLogitsWarper",
        "GumbelSampler",
    ]
    processed, _ = build_processors(
        state, logprobs="processed", repetition_penalty=1.0, temperature=1.0, top_k=0, top_p=1.0
    )
    assert [type(p).__name__ for p in processed] == ["LogprobCapture", "GumbelSampler"]


def test_hf_adds_no_processor_of_its_own_once_defaults_are_cleared() -> None:
    model = build_tiny("llava")[0]
    ids = GenerationConfig(eos_token_id=2, pad_token_id=3)
    saved = model.generation_config
    try:
        # A checkpoint whose defaults would slip processors in front of ours ...
        model.generation_config = GenerationConfig(
            eos_token_id=2,
            pad_token_id=3,
            repetition_penalty=1.3,
            top_k=5,
            min_new_tokens=3,
            suppress_tokens=[7],
        )
        # (our call config sets repetition_penalty and top_k explicitly, so only the others get through)
        assert builtin_processors(model, call_generation_config(ids, 4, 10)) == [
            "MinNewTokensLengthLogitsProcessor",
            "SuppressTokensLogitsProcessor",
        ]
        # ... and with them cleared (what HFVLMProposer.setup does): none, so ours comes first.
        model.generation_config = ids
        assert builtin_processors(model, call_generation_config(ids, 4, 10)) == []
    finally:
        model.generation_config = saved


def test_first_processor_receives_hf_raw_logits() -> None:
    """Our first processor sees exactly what generate(output_logits=True) reports as the raw logits."""
    model, processor = build_tiny("llava")
    seen: list[torch.Tensor] = []

    def record(input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        seen.append(scores.clone())
        return scores

    state = SamplingState(seeds_tensor([1, 2]))
    ours, _ = build_processors(
        state, logprobs="raw", repetition_penalty=2.0, temperature=0.3, top_k=50, top_p=0.9
    )
    config = call_generation_config(GenerationConfig(eos_token_id=2, pad_token_id=3), 2, 6)
    config.output_logits = True
    from PIL import Image

    inputs = processor(
        images=[Image.new("RGB", (40, 40), "red")],
        text=["USER: <image>\nlist ASSISTANT:"],
        return_tensors="pt",
    )
    saved = model.generation_config
    model.generation_config = GenerationConfig(eos_token_id=2, pad_token_id=3)
    try:
        with torch.inference_mode():
            out = model.generate(
                **inputs, generation_config=config, logits_processor=LogitsProcessorList([record, *ours])
            )
    finally:
        model.generation_config = saved
    assert len(seen) == len(out.logits) >= 1
    for recorded, raw in zip(seen, out.logits, strict=True):
        torch.testing.assert_close(recorded, raw, rtol=0, atol=0)
