"""The paper's experiments (conf/experiment/table*.yaml, figure2.yaml) as sweeps, then experiments/tables.py.

The sweeps run under `debug=smoke` on the embedded photos with one seed, the tiny twins of the 7B models and no
download: `dataset=samples seed=0` are passed on the command line because the experiments default to ADE20K and
4 seeds. The runs are `slow`; the check that every swept value composes into the job's config is fast.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import CONF, ROOT, run_cli
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from llm2labels.settings import check_run_settings

EXPERIMENTS = ("table1", "table2", "table3", "table4", "figure2")
SMOKE = ("debug=smoke", "dataset=samples", "seed=0")


def _compose(*overrides: str) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    GlobalHydra.instance().clear()
    return cfg


def swept_value(cfg: DictConfig, key: str) -> Any:
    """What a composed job holds for a swept key: the option chosen for a config group, else the key's value."""
    choices = cfg.hydra.runtime.choices
    return choices[key] if key in choices else OmegaConf.select(cfg, key, throw_on_missing=True)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_swept_value_composes(name: str) -> None:
    """Each experiment sweeps 4 seeds (varying fastest) on 2,000 ADE20K images; every value it sweeps ends up in
    the job's config as that value (a group's option, or the key's typed value) and passes the run's checks.
    Under debug=smoke a sweep names only the tiny twins of the 7B models (and the small offline imagenet)."""
    cfg = _compose(f"experiment={name}")
    assert cfg.dataset._target_.endswith("ADE20KDataset") and cfg.dataset.limit == 2000
    params = dict(cfg.hydra.sweeper.params)
    parser = OverridesParser.create()
    for key, values in params.items():
        for value in values.split(","):
            job = _compose(f"experiment={name}", f"{key}={value}")
            assert swept_value(job, key) == parser.parse_override(f"{key}={value}").value(), (key, value)
            check_run_settings(job)
    assert params["seed"] == "0,1,2,3" and list(params)[-1] == "seed"
    assert str(cfg.hydra.sweep.dir).startswith(f"outputs/multirun/{name}/")
    smoke = _compose(f"experiment={name}", *SMOKE)
    assert smoke.dataset._target_.endswith("SamplesDataset") and smoke.dataset.limit == 2
    smoke_params = dict(smoke.hydra.sweeper.params)
    assert smoke_params["seed"] == "0" and smoke.proposer.model.startswith("tiny:")
    for proposer in smoke_params.get("proposer", "imagenet").split(","):
        assert proposer == "imagenet" or proposer.startswith("tiny_"), proposer


def _sweep(tmp_path: Path, name: str, *extra: str) -> Path:
    sweep = tmp_path / name
    proc = run_cli("-m", f"experiment={name}", *SMOKE, *extra, f"hydra.sweep.dir={sweep}",
                   env={"LLM2LABELS_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sweep


def _tables(sweep: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "experiments.tables", str(sweep)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.mark.slow
def test_table2_sweep_gives_every_table_and_the_figure(tmp_path: Path) -> None:
    """grid x filter = 12 jobs (one seed), then tables.md / .tex / the PR figure with all 12 configurations."""
    sweep = _sweep(tmp_path, "table2")
    jobs = [d for d in sweep.iterdir() if d.is_dir()]
    assert len(jobs) == 12 and all((d / "metrics.json").is_file() for d in jobs)
    assert "12 of 12 jobs finished" in _tables(sweep).stderr
    summary = pd.read_csv(sweep / "summary.csv")
    assert len(summary) == 12 and set(summary["n"]) == {1}
    assert {(g, f) for g, f in zip(summary["grid"], summary["filter"])} == {
        (g, f) for g in ("base", "sg", "sgc") for f in ("percentile", "th", "none", "both")}
    md = (sweep / "tables.md").read_text()
    table2 = md.split("## Table 2")[1].split("## Table 3")[0]
    assert sum(line.startswith("| LLM2Label |") for line in table2.splitlines()) == 12
    assert "#L (A-150)" in table2 and "± —" in table2  # one seed: no std
    assert all(f"## Table {i}" in md for i in (1, 2, 3, 4)) and "## All metrics" in md
    tex = (sweep / "tables.tex").read_text()
    assert tex.count("\\begin{tabular}") == 5 and tex.count("LLM2Label & sgc & both") == 5
    assert (sweep / "pr_curves.png").stat().st_size > 10_000
    assert len(pd.read_csv(sweep / "results.csv")) == 12


@pytest.mark.slow
@pytest.mark.parametrize(("name", "extra", "methods"), [
    ("table1", (), {"LLM2Label", "LLM2Label_occ", "ImageNet classifier (occ_prob)", "ImageNet classifier",
                    "BLIP-2 + SP (occ_prob)", "BLIP-2 + SP", "BLIP-2 VQA (occ_prob)", "BLIP-2 VQA"}),
    ("table3", (), {"LLM2Label", "LLM2Label_occ"}),
    ("table4", (), {"LLM2Label", "LLM2Label_occ"}),
])
def test_method_sweeps_run_for_a_step(tmp_path: Path, name: str, extra: tuple[str, ...],
                                      methods: set[str]) -> None:
    """The method sweeps; Table 1's under debug=smoke runs every method, the 7B models by their tiny twins, offline
    (run_cli sets HF_HUB_OFFLINE)."""
    sweep = _sweep(tmp_path, name, *extra)
    _tables(sweep)
    summary = pd.read_csv(sweep / "summary.csv")
    assert set(summary["method"]) == methods and list(summary["scorer"]) == ["occ_prob", "occ"] * (len(methods) // 2)
