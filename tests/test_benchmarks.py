"""The throughput benchmarks on tiny sizes: their JSON keys and counts, never their timings."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from benchmarks import columns_bench, gpu_throughput, postprocess_bench, proposal_bench, run_all, store_scale
from llm2labels.parsing import parse_labels, token_indices
from llm2labels.predict import ProposalModule
from llm2labels.proposers.base import CropRequest, Generation, Proposer
from llm2labels.proposers.hf_vlm import HFVLMProposer
from llm2labels.store import SampleStore
from llm2labels.work import CropWork, ImageWork

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def proposal() -> dict[str, Any]:
    """1 photo x 1x2 tiles = 2 crops, 3 samples each, 6 new tokens at most."""
    return proposal_bench.measure(images=1, samples=3, rows=1, cols=2, max_new_tokens=6, repeats=1)


@pytest.fixture(scope="module")
def store_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("store")


@pytest.fixture(scope="module")
def post(store_root: Path) -> dict[str, Any]:
    return postprocess_bench.measure(images=200, store_dir=store_root, profile_images=50)


@pytest.fixture(scope="module")
def columns(store_root: Path, post: dict[str, Any]) -> dict[str, Any]:
    return columns_bench.measure(images=200, store_dir=store_root, workers=2)


def test_proposal_counts_and_prefill_rows(proposal: dict[str, Any]) -> None:
    assert (proposal["images"], proposal["crops"], proposal["samples_per_crop"]) == (1, 2, 3)
    assert proposal["same_samples"]  # the Lightning path stored exactly what the bare calls generated
    assert 0 < proposal["generated_tokens"] <= 2 * 3 * 6
    assert proposal["overhead_ratio"] > 0 and len(proposal["overhead_ratio_runs"]) == 1
    stages = {"total", "generate", "proposer_setup_in_generate", "refresh", "parse_score", "cpu"}
    assert set(proposal["pipeline_s"]) == stages
    assert 0 <= proposal["pipeline_s"]["proposer_setup_in_generate"] < proposal["pipeline_s"]["generate"]
    assert set(proposal["bare_propose_s"]) == {"total", "cpu"} and proposal["overhead_ratio_cpu"] > 0
    assert proposal["profile_s"]["propose"] > 0
    prefill = proposal["prefill_calls_per_crop"]
    # unshared, HF expands each prompt to N rows before its prefill: N prefill rows per crop, one call;
    # shared, the prompt is prefilled once per crop and the N rows resume with a one-position step
    unshared, shared = prefill["unshared_counts"], prefill["shared_counts"]
    assert prefill["unshared"] == 3 and unshared["prefill_rows"] == 2 * 3 and unshared["prefill_calls"] == 1
    assert prefill["shared"] == 1 and shared["prefill_rows"] == 2 and shared["prefill_calls"] == 1
    assert shared["decode_calls"] == unshared["decode_calls"] + 1


@pytest.mark.parametrize("family", ["blip2", "llava"])
def test_prefill_counter_finds_every_family_language_model(family: str) -> None:
    template = gpu_throughput.LLAVA_TEMPLATE if family == "llava" else "{prompt}"
    p = HFVLMProposer(model=f"tiny:{family}", template=template, max_new_tokens=3)
    p.setup("cpu")
    crop = Image.new("RGB", (40, 30), (200, 30, 10))
    # 3 new tokens: the first from the prefill (shared: from the one-position step after it), <= 2 decode steps
    for shared, rows, decode in ((False, 2 * 2, (1, 2)), (True, 2, (2, 3))):
        p.shared_prefill = shared
        with proposal_bench.prefill_counter(p.hf_model) as counts:
            p.propose([CropRequest(crop, [1, 2]), CropRequest(crop, [3, 4])])
        assert counts["prefill_rows"] == rows and counts["prefill_calls"] == 1
        assert decode[0] <= counts["decode_calls"] <= decode[1]


class _Fixed(Proposer):
    """Returns one fixed generation per seed: enough to get a record out of ProposalModule.predict_step."""

    def fingerprint(self) -> dict[str, Any]:
        return {"model": "fixed"}

    def setup(self, device: str = "cpu") -> None:
        pass

    def propose(self, requests: list[CropRequest]) -> list[list[Generation]]:
        return [[Generation("['a']", [7], [5], [-0.1]) for _ in r.seeds] for r in requests]


def test_synthetic_records_have_predict_py_format_and_consistent_tokens() -> None:
    work = ImageWork("x.jpg", "x.jpg", "uid", [CropWork("full", (0.0, 0.0, 1.0, 1.0), [(0, 11)])])
    batch = [{"work": work, "error": None, "crops": [Image.new("RGB", (4, 4))]}]
    real = json.loads(json.dumps(ProposalModule(_Fixed(), "raw").predict_step(batch)[0]))  # as stored
    gen = postprocess_bench.Generator(samples=3, labels=15)
    records = gen.records(5)
    assert records == gen.records(5)  # deterministic
    assert len(records) == 3
    for record in records:
        assert list(record) == list(real)  # same keys, key first (the store finds keys without parsing)
        stored = json.loads(json.dumps(record))
        assert {k: type(v) for k, v in stored.items()} == {k: type(v) for k, v in real.items()}
        spans = parse_labels(record["text"])
        assert 11 <= len(spans) <= 19 and len(record["token_ends"]) == len(spans) + 1
        assert record["token_ends"][-1] == len(record["text"])
        # one pseudo-token per label: label i is exactly token i
        assert [token_indices(record["token_ends"], s.start, s.end) for s in spans] == [[i] for i in
                                                                                       range(len(spans))]
        assert all(lp <= 0 for lp in record["logprobs"])


def test_vocabulary_leads_with_ade150_and_is_a_few_thousand() -> None:
    vocab = postprocess_bench.vocabulary()
    assert 2000 <= len(vocab) <= 5000 and len(set(vocab)) == len(vocab)
    assert vocab[:3] == ["wall", "walls", "brick wall"]  # A-150 class 0 and its synonyms first
    assert all("'" not in w and "," not in w for w in random.Random(0).sample(vocab, 200))


def test_postprocess_scores_every_written_image(post: dict[str, Any]) -> None:
    assert post["images_written"] == post["images_scored"] == 200 and post["skipped"] == 0
    assert post["records"] == post["index_keys"] == 200 * 8
    assert post["ranked_labels"] > 0 and post["store_mb"] > 0
    assert post["peak_rss_mb"] >= post["rss_after_imports_mb"] > 0  # VmHWM: this program alone
    assert post["postprocess_images_per_s"] > 0 and set(post["phases_s"]) == {"refresh", "score_and_rank",
                                                                              "evaluate"}
    assert post["profile"]["images"] == 50 and post["profile"]["cumulative_s"]["parse_labels"] > 0
    assert 0 <= post["ade20k_150_full"]["R"] <= 100


def test_store_is_written_once_then_reused(tmp_path: Path) -> None:
    store, seconds = postprocess_bench.write_store(tmp_path, images=3, samples=2, labels=4)
    again, reused = postprocess_bench.write_store(tmp_path, images=3, samples=2, labels=4)
    assert seconds > 0 and reused == 0.0 and again.dir == store.dir
    fresh = SampleStore(tmp_path, postprocess_bench.fingerprint(3, 2, 4, 0))
    assert fresh.refresh() == 3 * 2


def test_gpu_throughput_runs_the_tiny_model_on_cpu() -> None:
    args = gpu_throughput.parser().parse_args(
        ["--model", "tiny:instructblip", "--device", "cpu", "--images", "3", "--batch-size", "2",
         "--samples", "2", "--max-new-tokens", "5", "--bandwidth-gbs", "100"])
    out = gpu_throughput.measure(args)
    hf = out["backends"][0]
    assert hf["backend"] == "hf" and hf["images"] == 3 and 0 < hf["generated_tokens"] <= 3 * 2 * 5
    assert math.isfinite(hf["images_per_hour"]) and hf["images_per_hour"] > 0
    assert math.isfinite(hf["ratio_to_limit"]) and hf["ratio_to_limit"] > 0
    # tiny Llama text model: 2 layers x 2 KV heads x head dim 64/4, float32: 2 x 2 x 2 x 16 x 4 bytes
    assert hf["kv_bytes_per_token"] == 512
    unshared = out["backends"][1]
    assert (hf["shared_prefill"], unshared["shared_prefill"]) == (True, False)
    assert hf["same_samples_as_unshared"] == 1.0  # float32 on CPU: the two prefill modes draw alike
    assert unshared["generated_tokens"] == hf["generated_tokens"]
    assert out["backends"][2]["backend"] == "vllm"


def test_gpu_throughput_sized_random_decoder_has_the_asked_shape() -> None:
    args = gpu_throughput.parser().parse_args(
        ["--random-decoder", "128x3", "--device", "cpu", "--images", "2", "--batch-size", "2",
         "--samples", "2", "--max-new-tokens", "3", "--prefill", "shared"])
    out = gpu_throughput.measure(args)
    hf = out["backends"][0]
    assert out["model"] == "random LLaVA, decoder 128x3" and len(out["backends"]) == 2
    # 3 layers x 2 (K, V) x 2 KV heads (128 / 64-wide heads) x head dim 64 x 4 bytes (float32)
    assert hf["kv_bytes_per_token"] == 3 * 2 * 2 * 64 * 4
    # decoder: 3 x (4 x 128^2 attention + 3 x 128 x 512 MLP (8/3 x 128, rounded up to 256) + 2 x 128 norms)
    # + final norm + token embedding and LM head (384 x 128 each, untied) + the head's bias; 4 bytes each
    params = 3 * (4 * 128 * 128 + 3 * 128 * 512 + 2 * 128) + 128 + 2 * 384 * 128 + 384
    assert hf["decoder_bytes"] == params * 4


@pytest.mark.parametrize(("name", "memory_gb", "expected"), [
    ("NVIDIA A100-SXM4-40GB", 42.5, 1555.0), ("NVIDIA A100-SXM4-80GB", 85.0, 2039.0),
    ("NVIDIA A100 80GB PCIe", 85.0, 1935.0), ("NVIDIA H100 80GB HBM3", 85.0, 3350.0),
    ("NVIDIA H100 PCIe", 85.0, 2000.0), ("NVIDIA H200", 150.0, 4800.0), ("NVIDIA L40S", 48.0, 864.0),
    ("NVIDIA GeForce RTX 4090", 25.0, 1008.0), ("Tesla T4", 16.0, None)])
def test_bandwidth_table(name: str, memory_gb: float, expected: float | None) -> None:
    found = gpu_throughput.gpu_bandwidth_gbs(name, memory_gb)
    assert (found[1] if found else None) == expected


def test_bandwidth_limit_formula() -> None:
    # 7B in bf16 (14e9 B) at 1 TB/s, 64 sequences: 1e12 / 14e9 x 64 = 4571.4 tokens/s; with Llama-7B's KV
    # (2 x 32 layers x 32 heads x 128 x 2 B = 524,288 B/token) over 100 positions each: 1e12 / 17.355e9 x 64
    lim = gpu_throughput.limits(1000.0, 14_000_000_000, 524_288, 64, 100.0)
    assert lim["tokens_per_s"] == pytest.approx(4571.43, rel=1e-5)
    assert lim["tokens_per_s_with_kv"] == pytest.approx(1e12 / (14e9 + 64 * 100 * 524_288) * 64, rel=1e-9)
    assert gpu_throughput.limits(None, 1, 1, 1, 1.0) == {"tokens_per_s": None, "tokens_per_s_with_kv": None}


def test_columns_bench_scores_what_the_per_occurrence_run_scores(post: dict[str, Any], columns: dict[str, Any]
                                                                  ) -> None:
    assert columns["store_write_s"] == "cached"  # the store postprocess_bench wrote
    assert columns["images"] == post["images_scored"] == 200 and columns["workers"] == 2
    # the first job runs postprocess_bench's settings: the same ranking, so the same labels and recall
    assert columns["labels"] == post["ranked_labels"] and columns["ade20k_150_R"] == post["ade20k_150_full"]["R"]
    assert columns["sweep_jobs"] == len(columns["sweep_job_s"]) == 12 and columns["parsed_mb"] > 0
    assert all(n > 0 for n in columns["sweep_labels"]) and columns["sweep_labels"][0] == columns["labels"]
    assert columns["targets"]["job_images_per_s"]["meets"] == (columns["job_images_per_s"] >= 20_000)


def test_run_all_figures_sit_beside_their_targets(proposal: dict[str, Any], post: dict[str, Any],
                                                  columns: dict[str, Any]) -> None:
    figures = run_all.figures(proposal, post, columns)
    assert set(figures) == {"overhead_ratio", "prefill_calls_per_crop", "postprocess_seconds",
                            "postprocess_images_per_s", "peak_rss_mb", "columns_parse_images_per_s",
                            "columns_job_images_per_s", "columns_sweep_seconds", "columns_peak_rss_mb"}
    assert figures["columns_sweep_seconds"] == {"value": columns["sweep_s"], "jobs": 12}
    assert figures["overhead_ratio"]["meets"] == (proposal["overhead_ratio"] <= 1.10)
    assert figures["postprocess_seconds"]["target"] == "< 0.08"  # 10 s x 200 / 25,000 images
    assert figures["prefill_calls_per_crop"]["unshared"] == 3


def test_store_scale_counts_what_it_measures(tmp_path: Path) -> None:
    result = store_scale.measure_size(tmp_path, 250, workers=1, postprocess=False)
    assert result["records"] == 250 * store_scale.SAMPLES and result["store_write_s"] != "cached"
    first, cold, warm = result["first_load"], result["startup_cold"], result["startup_warm"]
    assert first["index_keys"] == cold["index_keys"] == warm["index_keys"] == 2000 and first["files"] == 1
    assert cold["evicted_mb"] > 0 and warm["evicted_mb"] == 0
    # hash, permutation, offset, length, flag: 25 bytes; the bucket directory (1025 x 4) and file starts (16)
    assert cold["index_bytes_per_sample"] == round((2000 * 25 + 1025 * 4 + 16) / 2000, 1)
    broadcast = warm["broadcast"]
    assert broadcast["new_images"] == store_scale.NEW_IMAGES
    assert broadcast["compact_bytes"] == store_scale.NEW_IMAGES * (4 + 1)  # a row number + 8 bits
    assert broadcast["pickled_items_bytes"] > 10 * broadcast["compact_bytes"]
    # the indexes moved aside for first_load are back, and the store is reused as it is
    store, reused = postprocess_bench.write_store(tmp_path, 250, 8, 15)
    assert reused == 0.0 and len(list((store.dir / "index").glob("*.idx"))) == 1
    assert store_scale.measure_size(tmp_path, 250, 1, False)["store_write_s"] == "cached"
