"""Loading real checkpoints: a model id that is neither cached nor reachable fails fast, in one line."""

from __future__ import annotations

import time

import pytest

from llm2labels.proposers.base import MissingWeightsError
from llm2labels.proposers.hf_vlm import HFVLMProposer


def uncached(model_id: str) -> str:
    """`model_id`, skipping the test on a machine whose cache has it (setup would load 7B weights)."""
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(model_id, "config.json"), str):
        pytest.skip(f"{model_id} is in this machine's Hugging Face cache")
    return model_id


def test_missing_weights_offline_is_one_line_and_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(MissingWeightsError) as info:
        HFVLMProposer(model=uncached("Salesforce/blip2-opt-2.7b")).setup()
    message = str(info.value)
    assert "\n" not in message and "Salesforce/blip2-opt-2.7b" in message
    assert "hf download Salesforce/blip2-opt-2.7b" in message and "HF_HOME" in message
    assert time.monotonic() - start < 10


def test_missing_weights_without_offline_flag_fails_fast_when_hub_unreachable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://127.0.0.1:9")  # nothing listens: refused at once
    start = time.monotonic()
    with pytest.raises(MissingWeightsError, match="llava-hf/llava-1.5-7b-hf"):
        HFVLMProposer(model=uncached("llava-hf/llava-1.5-7b-hf")).setup()
    assert time.monotonic() - start < 10
