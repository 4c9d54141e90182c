"""Multi-process, sweep and kill-and-resume behaviour of whole runs (slow: `pytest -m slow`)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, read_json, run_cli

pytestmark = pytest.mark.slow

TINY = ["proposer=tiny_instructblip", "proposer.max_new_tokens=12", "trainer.accelerator=cpu"]


def _store_lines(cache: Path) -> list[dict]:
    """Every complete record in the store, duplicates included."""
    out = []
    for f in sorted(cache.glob("*/samples-*.jsonl")):
        out += [json.loads(line) for line in f.read_text().splitlines(keepends=True) if line.endswith("\n")]
    return out


def test_ddp_on_two_cpu_processes_generates_every_sample_once(tmp_path):
    cache = tmp_path / "cache"
    proc = run_cli(*TINY, "dataset.limit=5", "loader.batch_size=1", "trainer.devices=2", "trainer.strategy=ddp",
                   f"hydra.run.dir={tmp_path / 'run'}", env={"LLM2LABELS_CACHE": str(cache)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = read_json(tmp_path / "run" / "summary.json")
    assert summary["images"] == 5 and summary["generations"] == 5 * 8
    records = _store_lines(cache)
    keys = [r["key"] for r in records]
    assert len(keys) == 40 and len(set(keys)) == 40
    files = {f.name.split("-")[1] for f in cache.glob("*/samples-*.jsonl")}
    assert files == {"r0", "r1"}  # both ranks wrote their share
    by_rank = {rank: {r["image"] for r in records if r["key"] in _keys_of(cache, rank)} for rank in ("r0", "r1")}
    assert len(by_rank["r0"]) == 3 and len(by_rank["r1"]) == 2 and not by_rank["r0"] & by_rank["r1"]


def _keys_of(cache: Path, rank: str) -> set[str]:
    return {json.loads(line)["key"] for f in cache.glob(f"*/samples-{rank}-*.jsonl")
            for line in f.read_text().splitlines()}


def test_sweep_generates_each_grid_once_and_reuses_the_store(tmp_path):
    cache = tmp_path / "cache"
    proc = run_cli("-m", *TINY, "filter=th,none,both", "grid=sg,sgc", "dataset.limit=4",
                   f"hydra.sweep.dir={tmp_path / 'sweep'}", env={"LLM2LABELS_CACHE": str(cache)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = [read_json(p) for p in sorted((tmp_path / "sweep").glob("*/summary.json"))]
    assert len(summaries) == 6
    # sg needs 4 tiles x 2 samples; sgc needs the whole image once and the tiles' first samples, which sg made.
    assert sum(s["generations"] for s in summaries) == 4 * 8 + 4 * 1
    assert len({r["key"] for r in _store_lines(cache)}) == len(_store_lines(cache)) == 36
    for s in summaries:
        assert s["images"] == 4 and s["generations"] + s["cache_hits"] == 4 * (8 if "x 2" in s["grid"] else 5)


def test_killed_run_resumes_without_losing_or_duplicating_samples(tmp_path):
    cache = tmp_path / "cache"
    args = [*TINY, "proposer.max_new_tokens=40", "dataset.limit=6", "loader.batch_size=1",
            f"hydra.run.dir={tmp_path / 'run'}"]
    env = {**os.environ, "LLM2LABELS_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and len(_store_lines(cache)) < 16 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {r["key"] for r in _store_lines(cache)}
    assert 16 <= len(before) < 48, "the run should have been killed part-way"
    done = run_cli(*args, env={"LLM2LABELS_CACHE": str(cache)})
    assert done.returncode == 0, done.stderr[-3000:]
    summary = read_json(tmp_path / "run" / "summary.json")
    assert summary["cache_hits"] == len(before) and summary["generations"] == 48 - len(before)
    records = _store_lines(cache)
    assert len(records) == 48 and len({r["key"] for r in records}) == 48


def test_sweep_with_ddp_runs_each_job_once_in_its_own_folder(tmp_path):
    cache = tmp_path / "cache"
    proc = run_cli("-m", *TINY, "filter=th,none", "dataset.limit=3", "trainer.devices=2", "trainer.strategy=ddp",
                   f"hydra.sweep.dir={tmp_path / 'sweep'}", env={"LLM2LABELS_CACHE": str(cache)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir()) == ["0", "1"]
    first, second = (read_json(tmp_path / "sweep" / j / "summary.json") for j in ("0", "1"))
    assert (first["generations"], second["generations"], second["cache_hits"]) == (24, 0, 24)
    assert len(_store_lines(cache)) == 24


def test_tiny_model_samples_are_the_same_in_every_process():
    script = ("from PIL import Image; from llm2labels.proposers.hf_vlm import HFVLMProposer; "
              "from llm2labels.proposers.base import CropRequest; "
              "p = HFVLMProposer(model='tiny:instructblip', max_new_tokens=12); p.setup('cpu'); "
              "g = p.propose([CropRequest(Image.new('RGB', (40, 30), (20, 120, 200)), [1, 2])]); "
              "print([x.token_ids for x in g[0]])")
    outs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT,
                           timeout=300).stdout.strip().splitlines()[-1] for _ in range(2)]
    assert outs[0] == outs[1] and outs[0].startswith("[[")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(tmp_path: Path, jobs: dict[str, tuple[list[str], dict[str, str]]]) -> None:
    """Start `run.py` once per job at the same time (args, env) and assert that every one exits 0."""
    base = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "PYTHONWARNINGS": "ignore"}
    procs = []
    for name, (args, env) in jobs.items():
        log = open(tmp_path / f"{name}.log", "w")  # a file, not a pipe: a full pipe would stall one rank
        procs.append((name, log, subprocess.Popen(
            [sys.executable, str(ROOT / "run.py"), *args, f"hydra.run.dir={tmp_path / name}"],
            env={**base, **env}, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)))
    try:
        for name, log, proc in procs:
            rc = proc.wait(timeout=300)
            log.close()
            assert rc == 0, f"{name}: " + (tmp_path / f"{name}.log").read_text()[-3000:]
    finally:  # a failed rank leaves the others waiting at a barrier
        for _, log, proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()


def _two_nodes(cache: Path) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """Args and per-node env of a 2-node x 1-process job started by hand, as a cluster launcher would."""
    args = ["trainer.num_nodes=2", "trainer.devices=1", "trainer.strategy=ddp"]
    # LightningEnvironment reads MASTER_ADDR, MASTER_PORT and NODE_RANK (world size = num_nodes x devices);
    # WORLD_SIZE is what torchrun-style launchers export beside them.
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": "2",
           "LLM2LABELS_CACHE": str(cache)}
    return args, {**env, "NODE_RANK": "0"}, {**env, "NODE_RANK": "1"}


NODE_ARGS = [*TINY, "loader.batch_size=1", "report=false", "trainer.enable_progress_bar=false"]


def test_two_nodes_launched_by_hand_split_the_work_and_match_one_process(tmp_path):
    cache, single_cache = tmp_path / "cache", tmp_path / "single-cache"
    args, env0, env1 = _two_nodes(cache)
    own = [*NODE_ARGS, "dataset.limit=4"]
    _launch(tmp_path, {"node0": ([*own, *args], env0), "node1": ([*own, *args], env1),
                       "single": (own, {"LLM2LABELS_CACHE": str(single_cache)})})

    records, single = _store_lines(cache), {r["key"]: r for r in _store_lines(single_cache)}
    assert len(single) == 4 * 8 and sorted(r["key"] for r in records) == sorted(single)  # each once, none missing
    r0, r1 = _keys_of(cache, "r0"), _keys_of(cache, "r1")
    assert len(r0) == len(r1) == 16 and not r0 & r1  # global ranks 0 and 1 did 2 images each
    assert all(r["token_ids"] == single[r["key"]]["token_ids"] for r in records)  # the same seeded samples
    assert read_json(tmp_path / "node0" / "summary.json")["generations"] == 32
    assert not (tmp_path / "node1" / "labels.csv").exists()  # rank 1 only generates
    for out in ("labels.csv", "images.jsonl"):
        assert (tmp_path / "node0" / out).read_text() == (tmp_path / "single" / out).read_text(), out


def test_ranks_follow_rank_zero_plan_when_their_view_of_the_work_differs(tmp_path):
    """A node whose plan differs from rank 0's (here it lists fewer images; in practice it read a store that
    another job was writing to at another moment) still takes its share of rank 0's plan: nothing is missed."""
    cache = tmp_path / "cache"
    args, env0, env1 = _two_nodes(cache)
    _launch(tmp_path, {"node0": ([*NODE_ARGS, "dataset.limit=4", *args], env0),
                       "node1": ([*NODE_ARGS, "dataset.limit=2", *args], env1)})
    summary = read_json(tmp_path / "node0" / "summary.json")
    assert summary["skipped"] == [] and summary["images"] == 4 and summary["generations"] == 32
    keys = [r["key"] for r in _store_lines(cache)]
    assert len(keys) == len(set(keys)) == 32 and len(_keys_of(cache, "r1")) == 16


def test_ranks_without_a_share_of_the_images_finish_too(tmp_path):
    """One pending image on two ranks (a resumed run's last few images on many GPUs): rank 1 idles, no error."""
    cache = tmp_path / "cache"
    args, env0, env1 = _two_nodes(cache)
    _launch(tmp_path, {"node0": ([*NODE_ARGS, "dataset.limit=1", *args], env0),
                       "node1": ([*NODE_ARGS, "dataset.limit=1", *args], env1)})
    summary = read_json(tmp_path / "node0" / "summary.json")
    assert (summary["images"], summary["generations"], summary["skipped"]) == (1, 8, [])
    assert len(_keys_of(cache, "r0")) == 8 and not list(cache.glob("*/samples-r1-*"))  # rank 1 wrote nothing


def test_a_rank_with_nothing_of_its_own_to_do_still_joins_the_job(tmp_path):
    """Node 1 sees only images that are already stored (its plan is empty) while rank 0 has work: node 1 must
    enter the predict loop all the same, or rank 0 would wait for it forever."""
    cache = tmp_path / "cache"
    _launch(tmp_path, {"first": ([*NODE_ARGS, "dataset.limit=2"], {"LLM2LABELS_CACHE": str(cache)})})
    args, env0, env1 = _two_nodes(cache)
    _launch(tmp_path, {"node0": ([*NODE_ARGS, "dataset.limit=4", *args], env0),
                       "node1": ([*NODE_ARGS, "dataset.limit=2", *args], env1)})
    summary = read_json(tmp_path / "node0" / "summary.json")
    assert (summary["images"], summary["generations"], summary["cache_hits"]) == (4, 16, 16)
    assert summary["skipped"] == [] and not (tmp_path / "node1" / "labels.csv").exists()
    keys = [r["key"] for r in _store_lines(cache)]
    assert len(keys) == len(set(keys)) == 32 and len(_keys_of(cache, "r1")) == 8  # rank 1 took an image
