"""Proposal-stage overhead and prefill passes per crop, on a tiny random VLM (CPU).

`overhead_ratio` = wall time of the app's proposal stage (Lightning predict loop: image loading, gridding,
`propose`, record building, store writes; then `store.refresh` and the post-processing parse via
`score_run.score_all`) / wall time of the bare `proposer.propose` calls on the same crops, already decoded, in the
same batches with the same seeds (so both paths generate the very same tokens, which is checked). The model
is built once before either is timed; paths alternate, median of `repeats`. Target <= 1.10.

`prefill_calls_per_crop` counts the language model's prefill rows per crop (forward calls whose input sequence
is longer than one position, counted in batch rows) during `propose`, with `shared_prefill` off and on: HF
expands every prompt to N rows before its prefill, so the unshared path prefills N times per crop; the shared
path once (its N rows then compute only the prompt's last position, a decode-sized step).

`python -m benchmarks.proposal_bench [--images 6] [--samples 8] [--max-new-tokens 100] [--repeats 5]` (the defaults:
every embedded photo, the paper's 8 samples of <= 100 tokens, 2x2 tiles)
"""

from __future__ import annotations

import argparse
import cProfile
import json
import logging
import pstats
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig
from torch import nn

from benchmarks.common import language_model, stdout_to_stderr
from benchmarks.postprocess_bench import cumulative_seconds
from llm2labels import app
from llm2labels.data.images import file_uid
from llm2labels.grid import Crop
from llm2labels.postprocess import Scoring
from llm2labels.predict import ProposalDataset
from llm2labels.proposers.base import CropRequest
from llm2labels.score_run import score_all, select
from llm2labels.store import SampleStore, sample_key
from llm2labels.work import ImageWork, effective_crops, plan

CONF = Path(__file__).resolve().parents[1] / "conf"
TARGET_OVERHEAD = 1.10
# cProfile buckets of the Lightning path: name -> (file suffix, function name); cumulative seconds.
BUCKETS = {
    "trainer_init": ("hydra/_internal/instantiate/_instantiate2.py", "instantiate"),
    "proposer_setup": ("llm2labels/proposers/hf_vlm.py", "setup"),
    "load_and_grid": ("llm2labels/predict.py", "__getitem__"),
    "predict_step": ("llm2labels/predict.py", "predict_step"),
    "propose": ("llm2labels/proposers/hf_vlm.py", "propose"),
    "propose_detokenise": ("llm2labels/proposers/token_ends.py", "decode_with_ends"),  # inside propose
    "store_write": ("llm2labels/store/files.py", "write"),
    "store_refresh": ("llm2labels/store/samples.py", "refresh"),
    "parse_score": ("llm2labels/score_run.py", "score_all"),
}


def quiet_lightning() -> None:
    """Lightning's info lines ("GPU available: ...") and tips would interleave with the JSON on stdout."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")


def compose_cfg(images: int, samples: int, rows: int, cols: int, max_new_tokens: int,
                model: str = "tiny_instructblip") -> DictConfig:
    """The real Hydra config (as run.py composes it), with a tiles-only grid: rows x cols tiles x samples."""
    overrides = [f"proposer={model}", f"proposer.max_new_tokens={max_new_tokens}", "grid=sg",
                 f"grid.rows={rows}", f"grid.cols={cols}", f"grid.tile={samples}", "dataset=samples",
                 f"dataset.limit={images}", "grouper=none", "logger=none", "trainer.accelerator=cpu",
                 "trainer.enable_progress_bar=false"]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides)


@contextmanager
def prefill_counter(model: nn.Module) -> Iterator[dict[str, int]]:
    """Counts the language model's forward calls and rows, split into prefill (sequence > 1) and decode."""
    counts = {"prefill_calls": 0, "prefill_rows": 0, "decode_calls": 0}

    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        x = kwargs.get("input_ids")
        x = kwargs.get("inputs_embeds") if x is None else x
        x = args[0] if x is None and args else x
        if x is None:
            return
        if x.shape[1] > 1:
            counts["prefill_calls"] += 1
            counts["prefill_rows"] += int(x.shape[0])
        else:
            counts["decode_calls"] += 1

    handle = language_model(model).register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield counts
    finally:
        handle.remove()


def bare_batches(items: Sequence[ImageWork], batch_size: int, source: Any) -> list[list[CropRequest]]:
    """The crop requests of each predict step, decoded (by the run's dataset, `source`) and gridded
    (untimed) by predict.py's dataset."""
    dataset = ProposalDataset(items, source)
    batches: list[list[CropRequest]] = []
    for start in range(0, len(items), batch_size):
        requests = []
        for i in range(start, min(start + batch_size, len(items))):
            item = dataset[i]
            for crop, image in zip(item["work"].crops, item["crops"], strict=True):
                requests.append(CropRequest(image, [seed for _, seed in crop.samples]))
        batches.append(requests)
    return batches


class Bench:
    """The composed parts, the images and their crops; the proposer is set up once, before any timing."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg, self.parts = cfg, app.build(cfg)
        self.parts.proposer.setup("cpu")
        self.setup_s = 0.0  # time in proposer.setup, which ProposalModule.on_predict_start calls again
        setup = self.parts.proposer.setup

        def timed_setup(device: str = "cpu") -> None:
            t0 = time.perf_counter()
            setup(device)
            self.setup_s += time.perf_counter() - t0

        self.parts.proposer.setup = timed_setup  # type: ignore[method-assign]
        self.entries = self.parts.dataset.entries()
        self.uids = [file_uid(e.path) for e in self.entries]
        self.crops: list[Crop] = effective_crops(self.parts.grid, self.parts.proposer)
        self.max_pixels: int = self.parts.dataset.max_pixels

    def store(self, root: Path) -> SampleStore:
        store = SampleStore(root, {**self.parts.proposer.fingerprint(), "seed": self.cfg.seed})
        store.refresh()
        return store

    def items(self) -> Sequence[ImageWork]:
        with tempfile.TemporaryDirectory() as root:
            return plan(self.entries, self.uids, self.crops, self.cfg.seed, self.store(Path(root)), self.max_pixels)

    def pipeline(self, root: Path) -> tuple[dict[str, float], SampleStore]:
        """One proposal stage into a fresh store under `root`: generate (Lightning) + refresh + parse."""
        store = self.store(root)
        items = plan(self.entries, self.uids, self.crops, self.cfg.seed, store, self.max_pixels)
        self.setup_s = 0.0
        t0, cpu0 = time.perf_counter(), time.process_time()
        app.generate(self.cfg, self.parts, store, items)
        t1 = time.perf_counter()
        store.refresh()
        t2 = time.perf_counter()
        usable, skipped = select(self.entries, self.uids, self.crops, store, self.max_pixels)
        scoring = Scoring(self.parts.aggregator, self.cfg.pool, self.parts.filter)
        scored = list(score_all(usable, store, scoring, root / "images.jsonl"))
        t3, cpu3 = time.perf_counter(), time.process_time()
        if len(scored) != len(self.entries) or skipped:
            raise RuntimeError(f"scored {len(scored)} of {len(self.entries)} images: {skipped}")
        seconds = {"total": t3 - t0, "generate": t1 - t0, "proposer_setup_in_generate": self.setup_s,
                   "refresh": t2 - t1, "parse_score": t3 - t2}
        return {**seconds, "cpu": cpu3 - cpu0}, store

    def bare(self, batches: list[list[CropRequest]]) -> tuple[dict[str, float], list[list[Any]]]:
        t0, cpu0 = time.perf_counter(), time.process_time()
        out = [g for requests in batches for g in self.parts.proposer.propose(requests)]
        return {"total": time.perf_counter() - t0, "cpu": time.process_time() - cpu0}, out


def same_samples(bench: Bench, store: SampleStore, bare_out: list[list[Any]]) -> bool:
    """True when the stored texts equal the bare calls' texts, crop by crop and sample by sample."""
    stored = [[store.get(sample_key(uid, c.key, k))["text"] for k in range(c.samples)]  # type: ignore[index]
              for uid in dict.fromkeys(bench.uids) for c in bench.crops]
    return stored == [[g.text for g in gens] for gens in bare_out]


def profile_breakdown(run: Callable[[], object]) -> dict[str, float]:
    """Cumulative seconds per BUCKETS entry under cProfile (inflated by the profiler, Python code most)."""
    profiler = cProfile.Profile()
    t0 = time.perf_counter()
    profiler.runcall(run)
    out = {"profiled_total": time.perf_counter() - t0}
    out.update(cumulative_seconds(pstats.Stats(profiler).stats, BUCKETS))  # type: ignore[attr-defined]
    out["records"] = out["predict_step"] - out["propose"]
    out["lightning_other"] = out["profiled_total"] - sum(
        out[k] for k in ("trainer_init", "proposer_setup", "load_and_grid", "predict_step", "store_write",
                         "store_refresh", "parse_score"))
    return {k: round(v, 4) for k, v in out.items()}


def measure_prefill(bench: Bench, batches: list[list[CropRequest]]) -> dict[str, Any]:
    requests = [r for batch in batches for r in batch]
    proposer: Any = bench.parts.proposer
    default, out = proposer.shared_prefill, {"samples": len(requests[0].seeds), "crops": len(requests)}
    try:
        for shared in (False, True):
            proposer.shared_prefill = shared
            with prefill_counter(proposer.hf_model) as counts:
                proposer.propose(requests)
            name = "shared" if shared else "unshared"
            out[name] = counts["prefill_rows"] / len(requests)
            out[f"{name}_counts"] = dict(counts)
    finally:
        proposer.shared_prefill = default
    return out


def median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(statistics.median(run[k] for run in runs), 4) for k in runs[0]}


def measure(images: int = 6, samples: int = 8, rows: int = 2, cols: int = 2, max_new_tokens: int = 100,
            repeats: int = 5, threads: int = 1, profile: bool = True) -> dict[str, Any]:
    """The proposal benchmark's JSON (see the module docstring)."""
    quiet_lightning()
    torch.set_num_threads(threads)
    bench = Bench(compose_cfg(images, samples, rows, cols, max_new_tokens))
    batches = bare_batches(bench.items(), bench.cfg.loader.batch_size, bench.parts.dataset)
    with tempfile.TemporaryDirectory() as tmp:
        first, _ = bench.pipeline(Path(tmp) / "warm")  # the process's first predict loop: imports, caches
        _, bare_out = bench.bare(batches)  # warm-up of the bare path
        pipe_runs, bare_runs, same = [], [], True
        for r in range(repeats):  # alternate the two paths, so drift on a shared machine hits both alike
            seconds, out = bench.bare(batches)
            bare_runs.append(seconds)
            stages, store = bench.pipeline(Path(tmp) / f"run{r}")
            pipe_runs.append(stages)
            same = same and same_samples(bench, store, out)
            store.close()
        breakdown = profile_breakdown(lambda: bench.pipeline(Path(tmp) / "profiled")) if profile else None
    bare, pipe = median(bare_runs), median(pipe_runs)
    return {
        "model": bench.parts.proposer.fingerprint()["model"], "threads": threads,
        "images": len(set(bench.uids)),
        "crops": sum(len(b) for b in batches), "samples_per_crop": samples, "max_new_tokens": max_new_tokens,
        "generated_tokens": sum(len(g.token_ids) for gens in bare_out for g in gens), "repeats": repeats,
        "same_samples": same, "bare_propose_s": bare, "pipeline_s": pipe,
        "first_pipeline_s": round(first["total"], 4),
        "overhead_ratio": round(pipe["total"] / bare["total"], 3), "overhead_target": TARGET_OVERHEAD,
        "overhead_ratio_runs": [round(p["total"] / b["total"], 3)
                                for p, b in zip(pipe_runs, bare_runs, strict=True)],
        # the same ratio in this process's CPU time: steadier than wall time when other jobs share the cores
        "overhead_ratio_cpu": round(pipe["cpu"] / bare["cpu"], 3),
        "profile_s": breakdown, "prefill_calls_per_crop": measure_prefill(bench, batches),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=6, help="embedded photos (at most 6)")
    ap.add_argument("--samples", type=int, default=8, help="samples per crop (N)")
    ap.add_argument("--rows", type=int, default=2, help="tile rows per image")
    ap.add_argument("--cols", type=int, default=2, help="tile columns per image")
    ap.add_argument("--max-new-tokens", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    ap.add_argument("--no-profile", dest="profile", action="store_false")
    args = ap.parse_args()
    with stdout_to_stderr():
        out = measure(**vars(args))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
