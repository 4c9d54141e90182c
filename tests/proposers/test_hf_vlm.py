"""HFVLMProposer end to end on tiny random models: outputs, log-probs vs a teacher-forced pass, seeding."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from llm2labels.errors import ConfigError
from llm2labels.proposers import hf_vlm
from llm2labels.proposers.base import CropRequest, Generation
from llm2labels.proposers.hf_vlm import HFVLMProposer
from llm2labels.proposers.tiny import FAMILIES, build_tiny

SAMPLES = Path(__file__).parents[2] / "llm2labels" / "assets" / "samples"
LLAVA_TEMPLATE = "USER: <image>\n{prompt} ASSISTANT:"
_proposers: dict[tuple[str, str], HFVLMProposer] = {}

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def image(name: str) -> Image.Image:
    return Image.open(SAMPLES / f"{name}.jpg").convert("RGB")


def proposer(family: str, logprobs: str = "raw", batch_size: int = 8) -> HFVLMProposer:
    """A set-up tiny proposer with the default (paper) sampling settings, built once per test session."""
    key = (family, logprobs)
    if key not in _proposers:
        template = LLAVA_TEMPLATE if family == "llava" else "{prompt}"
        _proposers[key] = HFVLMProposer(model=f"tiny:{family}", template=template, logprobs=logprobs)
        _proposers[key].setup("cpu")
    _proposers[key].batch_size = batch_size
    return _proposers[key]


def teacher_forced_logits(p: HFVLMProposer, crop: Image.Image, tokens: list[int]) -> torch.Tensor:
    """[len(tokens), V] logits predicting each generated token, from one ordinary forward pass of the model
    on (prompt + image, generated tokens): HF's own forward, pixel_values included, no generate()."""
    text = p.template.replace("{prompt}", p.prompt)
    inputs = dict(p.hf_processor(images=[crop], text=[text], return_tensors="pt"))
    generated = torch.tensor([tokens])
    with torch.inference_mode():
        if p.hf_model.config.text_config.is_encoder_decoder:
            start = torch.tensor([[p.hf_model.config.text_config.decoder_start_token_id]])
            return p.hf_model(**inputs, decoder_input_ids=torch.cat([start, generated[:, :-1]], 1)).logits[0]
        prompt_len = inputs["input_ids"].shape[1]
        inputs["input_ids"] = torch.cat([inputs["input_ids"], generated], dim=1)
        inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
        return p.hf_model(**inputs).logits[0, prompt_len - 1 : -1]


def processed_by_hand(logits: torch.Tensor, tokens: list[int], p: HFVLMProposer) -> torch.Tensor:
    """Log-probs of `tokens` after repetition penalty (generated tokens only), temperature, top-k, top-p."""
    out = []
    for j, scores in enumerate(logits.double()):
        scores = scores.clone()
        for seen in set(tokens[:j]):
            scores[seen] = (
                scores[seen] / p.repetition_penalty
                if scores[seen] > 0
                else scores[seen] * p.repetition_penalty
            )
        scores = scores / p.temperature
        scores[scores < scores.topk(p.top_k).values[-1]] = float("-inf")
        probs = scores.softmax(-1)
        order = probs.argsort(descending=True)
        mass_before = probs[order].cumsum(0) - probs[order]  # mass of the strictly better tokens
        drop = order[mass_before >= p.top_p]
        scores[drop] = float("-inf")
        out.append(scores.log_softmax(-1)[tokens[j]])
    return torch.stack(out).float()


def check_generation(g: Generation) -> None:
    assert len(g.token_ids) == len(g.logprobs) == len(g.token_ends)
    assert all(lp <= 0 for lp in g.logprobs)
    assert g.token_ends == sorted(g.token_ends)
    if g.token_ids:
        assert g.text[: g.token_ends[-1]] == g.text and g.token_ends[-1] == len(g.text)
    assert 2 not in g.token_ids  # EOS (id 2 in every tiny tokenizer) is cut off, never kept


@pytest.mark.parametrize("family", FAMILIES)
def test_end_to_end_and_raw_logprobs_equal_a_teacher_forced_pass(family: str) -> None:
    p = proposer(family)
    crops = [image("coffee"), image("astronaut")]
    out = p.propose([CropRequest(crops[0], [1, 2, 3]), CropRequest(crops[1], [4, 5, 6])])
    assert [len(gs) for gs in out] == [3, 3]
    texts = [g.text for gs in out for g in gs]
    assert max(len(t) for t in texts) >= 20 and len(set(texts)) == 6
    tokenizer = p.hf_processor.tokenizer
    for crop, generations in zip(crops, out, strict=True):
        for g in generations:
            check_generation(g)
            assert g.text == tokenizer.decode(g.token_ids, skip_special_tokens=True)
            if not g.token_ids:
                continue
            logits = teacher_forced_logits(p, crop, g.token_ids)
            expected = logits.log_softmax(-1)[torch.arange(len(g.token_ids)), g.token_ids]
            torch.testing.assert_close(torch.tensor(g.logprobs), expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("family", ["instructblip", "llava"])
def test_processed_logprobs_are_the_distribution_sampled_from(family: str) -> None:
    raw, processed = proposer(family), proposer(family, logprobs="processed")
    crop = image("chelsea")
    request = [CropRequest(crop, [11, 12])]
    raw_out, processed_out = raw.propose(request)[0], processed.propose(request)[0]
    for r, q in zip(raw_out, processed_out, strict=True):
        # same draws: the mode only changes which log-probs are kept
        assert q.token_ids == r.token_ids and q.text == r.text
        check_generation(q)
        by_hand = processed_by_hand(
            teacher_forced_logits(processed, crop, q.token_ids), q.token_ids, processed
        )
        torch.testing.assert_close(torch.tensor(q.logprobs), by_hand, rtol=0, atol=1e-4)
        gaps = [abs(a - b) for a, b in zip(q.logprobs, r.logprobs, strict=True)]
        assert max(gaps) > 0.5  # temperature 0.3 sharpens the distribution a lot


@pytest.mark.parametrize("family", FAMILIES)
def test_a_sample_does_not_depend_on_its_batch(family: str) -> None:
    p = proposer(family, batch_size=3)
    target = CropRequest(image("rocket"), [42, 7])
    alone = p.propose([target])[0]
    others = [CropRequest(image("camera"), [1, 2]), CropRequest(image("motorcycle"), [3, 4])]
    in_batch = p.propose([others[0], target, others[1]])[1]
    for a, b in zip(alone, in_batch, strict=True):
        assert a.token_ids == b.token_ids
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), rtol=0, atol=1e-5)
    again = p.propose([target])[0]
    assert [g.token_ids for g in again] == [g.token_ids for g in alone]
    other_seeds = p.propose([CropRequest(target.image, [43, 8])])[0]
    assert [g.token_ids for g in other_seeds] != [g.token_ids for g in alone]


def test_mixed_sample_counts_come_back_in_request_order() -> None:
    p = proposer("blip2", batch_size=2)
    requests = [
        CropRequest(image("coffee"), [1]),
        CropRequest(image("rocket"), [2, 3]),
        CropRequest(image("chelsea"), []),
        CropRequest(image("camera"), [4]),
    ]
    out = p.propose(requests)
    assert [len(gs) for gs in out] == [1, 2, 0, 1]
    assert out[1][1].token_ids == p.propose([requests[1]])[0][1].token_ids


@pytest.mark.parametrize("family", FAMILIES)
def test_vision_tower_sees_one_row_per_crop_not_per_sample(family: str) -> None:
    p = proposer(family, batch_size=8)
    model = p.hf_model
    tower = model.model.vision_tower if family == "llava" else model.vision_model
    rows: list[int] = []
    handle = tower.register_forward_hook(
        lambda mod, args, kwargs, out: rows.append((args[0] if args else kwargs["pixel_values"]).shape[0]),
        with_kwargs=True,
    )
    try:
        p.propose([CropRequest(image(n), [1, 2, 3, 4]) for n in ("coffee", "rocket", "camera")])
    finally:
        handle.remove()
    assert rows == [3]  # 3 crops x 4 samples: one call, 3 rows


def prompt_calls(p: HFVLMProposer) -> tuple[list[tuple[int, int]], Any]:
    """(rows, positions) of every forward call of the stack that reads the prompt (the decoder of a
    decoder-only language model, the encoder of an encoder-decoder one), and the hook's handle."""
    generator = p.hf_model if p.hf_model.config.model_type == "llava" else p.hf_model.language_model
    stack = generator.get_encoder() if generator.config.is_encoder_decoder else generator.get_decoder()
    calls: list[tuple[int, int]] = []

    def hook(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        x = kwargs.get("inputs_embeds")
        x = kwargs.get("input_ids") if x is None else x
        x = args[0] if x is None else x
        calls.append((int(x.shape[0]), int(x.shape[1])))

    return calls, stack.register_forward_pre_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("family", FAMILIES)
def test_shared_prefill_reads_the_prompt_once_per_crop_and_samples_as_before(family: str) -> None:
    p = proposer(family, batch_size=8)
    requests = [CropRequest(image(n), list(range(10 * i, 10 * i + 8))) for i, n in enumerate(["rocket", "coffee"])]
    out, prompt_rows = {}, {}
    for shared in (False, True):
        p.shared_prefill = shared
        calls, handle = prompt_calls(p)
        try:
            out[shared] = p.propose(requests)
        finally:
            handle.remove()
            p.shared_prefill = True
        prompt_rows[shared] = [rows for rows, positions in calls if positions > 1]
        if not shared and family != "instructblip_t5":
            assert calls[0][0] == 16  # 2 crops x 8 samples: the unshared prefill's rows
    if family == "instructblip_t5":  # HF encodes once per crop and repeats the encoder output either way
        assert prompt_rows == {False: [2], True: [2]}
    else:
        assert prompt_rows == {False: [16], True: [2]}
    for unshared_crop, shared_crop in zip(out[False], out[True], strict=True):
        for a, b in zip(unshared_crop, shared_crop, strict=True):
            assert (a.text, a.token_ids, a.token_ends) == (b.text, b.token_ids, b.token_ends)
            torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), rtol=0, atol=1e-5)


@pytest.mark.parametrize("family", ["instructblip", "blip2", "llava"])
def test_a_static_kv_cache_samples_as_the_dynamic_one(family: str, monkeypatch: pytest.MonkeyPatch) -> None:
    p = proposer(family, batch_size=8)
    requests = [CropRequest(image(n), list(range(5 * i, 5 * i + 5))) for i, n in enumerate(["camera", "chelsea"])]
    dynamic = p.propose(requests)
    p.kv_cache = "static"
    caches: list[str] = []
    original = hf_vlm.prefix_cache

    def recording(*args: Any) -> tuple[Any, str]:
        cache, why = original(*args)
        if cache is not None:
            caches.append(type(cache).__name__)
        return cache, why

    monkeypatch.setattr(hf_vlm, "prefix_cache", recording)
    try:
        static = p.propose(requests)
    finally:
        p.kv_cache = "dynamic"
    assert caches == ["StaticCache"]
    for dynamic_crop, static_crop in zip(dynamic, static, strict=True):
        for a, b in zip(dynamic_crop, static_crop, strict=True):
            assert (a.text, a.token_ids) == (b.text, b.token_ids)
            torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), rtol=0, atol=1e-5)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"shared_prefill": "yes"}, "shared_prefill must be true or false"),
    ({"kv_cache": "paged"}, "kv_cache must be dynamic or static"),
    ({"kv_cache": "static", "shared_prefill": False}, "kv_cache=static needs shared_prefill=true"),
    ({"compile": 1}, "compile must be true or false"),
])
def test_prefill_and_cache_options_are_validated(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        HFVLMProposer(model="tiny:llava", **kwargs)


def test_compile_is_refused_with_the_dynamic_cache_it_would_not_change() -> None:
    for shared_prefill in (True, False):  # kv_cache=dynamic is the default
        with pytest.raises(ConfigError) as info:
            HFVLMProposer(model="tiny:llava", compile=True, shared_prefill=shared_prefill)
        assert str(info.value).startswith("compile=true needs kv_cache=static") and "\n" not in str(info.value)
    assert HFVLMProposer(model="tiny:llava", compile=True, kv_cache="static").compile is True


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_answers_sometimes_end_by_eos_and_sometimes_run_to_max_new_tokens(family: str) -> None:
    p = proposer(family)
    names = ("coffee", "astronaut", "chelsea", "rocket")
    out = p.propose([CropRequest(image(n), list(range(8 * i, 8 * i + 8))) for i, n in enumerate(names)])
    lengths = [len(g.token_ids) for gs in out for g in gs]
    assert 100 in lengths and min(lengths) < 100


def test_fingerprint_has_what_changes_a_sample_and_not_batch_size() -> None:
    a = HFVLMProposer(model="tiny:llava", batch_size=2)
    b = HFVLMProposer(model="tiny:llava", batch_size=16)
    assert a.fingerprint() == b.fingerprint()
    fp = a.fingerprint()
    assert fp["temperature"] == 0.3 and fp["top_p"] == 0.9 and fp["top_k"] == 50 and fp["sampling_code"] >= 1
    assert "batch_size" not in fp
    assert HFVLMProposer(model="tiny:llava", temperature=0.5).fingerprint() != fp
    assert pickle.loads(pickle.dumps(a)).fingerprint() == fp  # cheap and picklable before setup


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"top_p": 0.0}, "top_p must be in (0, 1]"),
        ({"top_p": 1.5}, "top_p must be in (0, 1]"),
        ({"temperature": 0}, "temperature must be > 0"),
        ({"logprobs": "softmax"}, "logprobs must be raw or processed"),
        ({"dtype": "float8"}, "dtype must be one of"),
        ({"top_k": -1}, "top_k must be an int >= 0"),
        ({"max_new_tokens": 0}, "max_new_tokens must be an int >= 1"),
        ({"batch_size": 0}, "batch_size must be an int >= 1"),
        ({"template": "USER: <image>"}, "template must contain {prompt}"),
    ],
)
def test_invalid_values_raise_config_error_at_construction(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        HFVLMProposer(model="tiny:llava", **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_unknown_tiny_family_fails_at_construction() -> None:
    with pytest.raises(ConfigError, match="tiny models are tiny:instructblip, tiny:instructblip_t5"):
        HFVLMProposer(model="tiny:gpt5")


@pytest.mark.parametrize("family", ["blip2", "llava"])
def test_from_pretrained_path_on_a_saved_checkpoint_with_stale_defaults(
    family: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real loading code (a local folder as model id) on a checkpoint whose generation defaults would
    add HF processors in front of ours (LLaVA's generate reads them; setup must clear them) and, for
    BLIP-2, whose processor config lacks num_query_tokens: raw log-probs must still be the model's own."""
    import copy
    import json


    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, processor = copy.deepcopy(build_tiny(family))
    model.generation_config.update(repetition_penalty=1.5, min_new_tokens=5, top_k=3, do_sample=True)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "processor_config.json").read_text())
    config.pop("num_query_tokens", None)
    (tmp_path / "processor_config.json").write_text(json.dumps(config))
    p = HFVLMProposer(
        model=str(tmp_path), dtype="auto", template=LLAVA_TEMPLATE if family == "llava" else "{prompt}"
    )
    p.setup("cpu")
    stale = ("repetition_penalty", "min_new_tokens", "top_k", "do_sample")
    assert all(getattr(p.hf_model.generation_config, name) is None for name in stale)
    crop = image("coffee")
    generations = p.propose([CropRequest(crop, [5, 6])])[0]
    for g in generations:
        check_generation(g)
    if family == "llava":  # (the reloaded model lacks the tiny output bias, so it may emit <image>)
        return
    assert p.hf_processor.num_query_tokens == 4
    for g in generations:
        logits = teacher_forced_logits(p, crop, g.token_ids)
        expected = logits.log_softmax(-1)[torch.arange(len(g.token_ids)), g.token_ids]
        torch.testing.assert_close(torch.tensor(g.logprobs), expected, rtol=0, atol=1e-4)


CONFIGS = {
    "instructblip": ("Salesforce/instructblip-vicuna-7b", "{prompt}"),
    "instructblip_t5": ("Salesforce/instructblip-flan-t5-xl", "{prompt}"),
    "blip2": ("Salesforce/blip2-opt-2.7b", "Question: {prompt} Answer:"),
    "llava": ("llava-hf/llava-1.5-7b-hf", LLAVA_TEMPLATE),
    "tiny_instructblip": ("tiny:instructblip", "{prompt}"),
    "tiny_blip2": ("tiny:blip2", "Question: {prompt} Answer:"),
    "tiny_llava": ("tiny:llava", LLAVA_TEMPLATE),
}


def test_every_proposer_config_instantiates_with_the_paper_settings() -> None:
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=str(Path(__file__).parents[2] / "conf"), version_base="1.3"):
        for name, (model_id, template) in CONFIGS.items():
            p = instantiate(compose(overrides=[f"+proposer={name}"]).proposer)
            assert isinstance(p, HFVLMProposer) and (p.model_id, p.template) == (model_id, template), name
            assert (p.top_p, p.temperature, p.repetition_penalty, p.top_k, p.max_new_tokens) == (
                0.9,
                0.3,
                2.0,
                50,
                32 if name.startswith("tiny") else 100,  # tiny models keep smoke runs short
            )
            assert p.prompt.startswith("Analyze the image and provide a Python list")
            assert p.dtype == ("float32" if name.startswith("tiny") else "bfloat16")


def test_a_static_cache_that_cannot_be_used_is_reported_once(caplog: pytest.LogCaptureFixture) -> None:
    p = HFVLMProposer(model="tiny:llava", template=LLAVA_TEMPLATE, kv_cache="static", max_new_tokens=3)
    p.setup("cpu")
    with caplog.at_level("WARNING", logger="llm2labels.proposers.hf_vlm"):
        for _ in range(2):
            p.propose([CropRequest(image("coffee"), [1]), CropRequest(image("rocket"), [2])])
    assert [r.getMessage() for r in caplog.records] == [
        "tiny:llava: kv_cache=static is not used with one sample per crop (the dynamic cache is)"
    ]
