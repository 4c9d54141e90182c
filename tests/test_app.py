"""The Hydra app end to end on the embedded photos with the offline ImageNet proposer (real weights)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import CONF, read_json, run_cli
from hydra.utils import instantiate
from PIL import Image

from llm2labels.app import build as app_build
from llm2labels.app import run


def _recompute_ranking(images_jsonl: Path, n_images: int) -> dict[str, tuple[float, float, int]]:
    """occ, prob and score of every label, recomputed by hand from the per-image kept labels."""
    kept = defaultdict(list)
    for line in images_jsonl.read_text().splitlines():
        for label, score in json.loads(line)["kept"].items():
            kept[label].append(score)
    return {lab: (len(s) / n_images, float(np.mean(s)), len(s)) for lab, s in kept.items()}


def test_default_run_writes_ranked_labels_and_reuses_the_store(make_cfg, tmp_path):
    summary = run(make_cfg())
    out = tmp_path / "out"
    assert summary["images"] == 6 and summary["skipped"] == [] and summary["crops"] == 6
    assert summary["generations"] == 6 and summary["cache_hits"] == 0  # a classifier: one sample per crop
    labels = pd.read_csv(out / "labels.csv")
    assert list(labels.columns) == ["rank", "label", "score", "occ", "prob", "images", "surface_forms"]
    expected = _recompute_ranking(out / "images.jsonl", 6)
    assert set(labels.label) == set(expected)
    for row in labels.itertuples():
        occ, prob, images = expected[row.label]
        assert row.occ == pytest.approx(occ) and row.prob == pytest.approx(prob) and row.images == images
        assert row.score == pytest.approx(occ * prob)
    assert list(labels.score) == sorted(labels.score, reverse=True)
    # Real photos, real classifier: the coffee photo's top class is kept.
    coffee = next(json.loads(x) for x in (out / "images.jsonl").read_text().splitlines() if "coffee" in x)
    assert max(coffee["labels"], key=lambda k: coffee["labels"][k][0]) == "espresso"
    # The embedded photos have ground truth: metrics are written, with the seen classes of the 6 photos.
    metrics = read_json(out / "metrics.json")
    assert metrics["classes"] == "ade20k_150" and metrics["k"] == 150 and metrics["seen"]["num_classes"] == 17
    assert metrics["num_labels"] == len(labels) and (out / "pr_curve.png").stat().st_size > 10_000
    assert metrics["image"]["num_images"] == 6
    vocab = read_json(out / "vocabulary.json")
    assert [s["name"] for s in vocab["synsets"]] == list(labels.label)
    # A run that differs only after the model reuses every stored sample.
    again = run(make_cfg("filter=none", "scorer=occ", out="out2"))
    assert again["generations"] == 0 and again["cache_hits"] == 6
    assert len(pd.read_csv(tmp_path / "out2" / "labels.csv")) >= len(labels)


def test_bad_files_are_skipped_with_reasons_and_listed_again_on_rerun(make_cfg, tmp_path):
    root = tmp_path / "imgs"
    (root / "sub").mkdir(parents=True)
    Image.new("RGB", (64, 48), (200, 30, 30)).save(root / "good.jpg")
    Image.new("CMYK", (64, 48), (0, 200, 200, 0)).save(root / "sub" / "cmyk.jpg")
    Image.fromarray(np.full((40, 40), 40000, dtype=np.uint16)).save(root / "deep.png")
    Image.new("RGBA", (40, 40), (0, 0, 255, 100)).save(root / "alpha.png")
    (root / "empty.jpg").write_bytes(b"")
    (root / "notes.png").write_text("not an image")
    good = (root / "good.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(good[: len(good) // 2])
    for out in ("a", "b"):
        summary = run(make_cfg("dataset=folder", f"dataset.root={root}", out=out))
        reasons = {s["path"]: s["reason"] for s in summary["skipped"]}
        assert set(reasons) == {"empty.jpg", "notes.png", "truncated.jpg"}
        assert reasons["empty.jpg"].startswith("empty file") and reasons["notes.png"] == "not an image"
        assert reasons["truncated.jpg"].startswith("corrupt or truncated")
        assert summary["images"] == 4
    assert summary["generations"] == 0 and summary["cache_hits"] == 4


def _options() -> list[tuple[str, str]]:
    return [(g.name, f.stem) for g in sorted(CONF.iterdir()) if g.is_dir() and g.name not in {"experiment", "debug"}
            for f in sorted(g.glob("*.yaml"))]


@pytest.mark.parametrize(("group", "option"), _options())
def test_every_config_option_instantiates(make_cfg, tmp_path, group, option):
    overrides = [f"{group}={option}"]
    if group == "dataset" and option in {"ade20k", "ade20k_full", "labeled"}:
        pytest.skip("needs a dataset on disk: instantiated through Hydra in tests/data/test_ade20k.py, test_labeled.py")
    if group == "dataset" and option == "folder":
        overrides.append(f"dataset.root={tmp_path}")
    cfg = make_cfg(*overrides)
    node = cfg[group]
    if group == "logger" and option == "none":  # no logger: the app then tracks nothing
        assert not node and app_build(cfg).tracker is None
        return
    obj = instantiate(node, **({"callbacks": []} if group == "trainer" else {}))
    assert obj is not None and not isinstance(obj, dict)


@pytest.mark.parametrize("name", [p.stem for p in sorted((CONF / "experiment").glob("*.yaml"))] + ["smoke"])
def test_experiments_and_debug_compose(make_cfg, name):
    group = "debug" if name == "smoke" else "experiment"
    cfg = make_cfg(f"{group}={name}", "debug=smoke") if group == "experiment" else make_cfg("debug=smoke")
    assert cfg.proposer._target_.endswith("HFVLMProposer") and cfg.dataset._target_.endswith("SamplesDataset")


@pytest.mark.slow
@pytest.mark.parametrize(("args", "message"), [
    (["filter.q=120"], "q (percent) must be a number in [0, 100], got 120"),
    (["filter=th", "filter.t=1.5"], "must be a number in [0, 1], got 1.5"),
    (["grid.whole=-1"], "grid.whole must be a whole number in [0, 256]"),
    (["dataset=folder"], "dataset.root is required"),
])
def test_bad_values_fail_at_start_with_one_line(tmp_path, args, message):
    proc = run_cli(*args, f"hydra.run.dir={tmp_path}", env={"LLM2LABELS_CACHE": str(tmp_path / "c")})
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "c").exists()  # nothing was generated or stored


@pytest.mark.slow
def test_unknown_grid_is_refused_by_hydra(tmp_path):
    proc = run_cli("grid=nope", f"hydra.run.dir={tmp_path}")
    assert proc.returncode != 0 and "Could not find 'grid/nope'" in proc.stderr


def test_wandb_offline_logs_config_summary_and_label_table(make_cfg, tmp_path):
    summary = run(make_cfg("logger=wandb", "logger.group=g1"))
    runs = list((tmp_path / "out" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    tables = list((runs[0] / "files" / "media" / "table").glob("labels_*.table.json"))
    table = read_json(tables[0])
    labels = pd.read_csv(tmp_path / "out" / "labels.csv")
    assert table["columns"] == list(labels.columns) and len(table["data"]) == summary["labels"] == len(labels)
    assert [row[1] for row in table["data"]] == list(labels.label)
    # Offline runs keep config and summary in the run's binary log; the flattened keys must be in it.
    log = next(runs[0].glob("run-*.wandb")).read_bytes()
    for key in (b"filter.q", b"grid.name", b"proposer.top_k", b"generations", b"cache_hits", b"g1"):
        assert key in log


def test_tiny_vlm_run_is_reproducible_whatever_the_batching_and_loader_workers(make_cfg, tmp_path):
    common = ["proposer=tiny_instructblip", "proposer.max_new_tokens=16", "dataset.limit=3", "grid=sgc"]
    a = run(make_cfg(*common, "loader.batch_size=1", "proposer.batch_size=1", "cache.dir=" + str(tmp_path / "c1"),
                     out="a"))
    b = run(make_cfg(*common, "loader.batch_size=3", "proposer.batch_size=8", "loader.num_workers=2",
                     "cache.dir=" + str(tmp_path / "c2"), out="b"))  # images decoded and gridded in 2 workers
    assert a["generations"] == b["generations"] == 3 * 5
    records = [{r["key"]: r for f in sorted((tmp_path / c).glob("*/samples-*"))
                for r in map(json.loads, f.read_text().splitlines())} for c in ("c1", "c2")]
    assert records[0].keys() == records[1].keys() and len(records[0]) == 15
    for key, first in records[0].items():  # what README promises: the same texts and tokens ...
        other = records[1][key]
        assert (first["text"], first["token_ids"], first["token_ends"]) == \
            (other["text"], other["token_ids"], other["token_ends"])
        # ... and log-probs equal to float rounding (batch shapes change the order of float sums)
        assert np.allclose(first["logprobs"], other["logprobs"], rtol=0, atol=1e-5)
    la, lb = (pd.read_csv(tmp_path / d / "labels.csv") for d in ("a", "b"))
    assert list(la.label) == list(lb.label)
    assert np.allclose(la.score, lb.score, rtol=1e-5, atol=0)


@pytest.mark.slow
def test_missing_weights_stop_the_run_with_one_line(tmp_path):
    proc = run_cli("proposer=instructblip", "dataset.limit=1", f"hydra.run.dir={tmp_path}",
                   env={"LLM2LABELS_CACHE": str(tmp_path / "c"), "HF_HOME": str(tmp_path / "hf")})
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr
    assert "Salesforce/instructblip-vicuna-7b" in errors[0] and "hf download" in errors[0]


def test_ade20k_run_ends_with_metrics_for_the_seen_classes(make_cfg, tmp_path):
    base = tmp_path / "ADEChallengeData2016"
    maps = {"a": [[1, 3], [3, 0]], "b": [[5, 5], [150, 0]]}  # pixel v>0 is A-150 class v-1
    for stem, values in maps.items():
        (base / "images" / "validation").mkdir(parents=True, exist_ok=True)
        (base / "annotations" / "validation").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 24), (90, 140, 200)).save(base / "images" / "validation" / f"{stem}.jpg")
        Image.fromarray(np.array(values, np.uint8)).save(base / "annotations" / "validation" / f"{stem}.png")
    summary = run(make_cfg("dataset=ade20k", f"dataset.root={tmp_path}", "grouper=none"))
    metrics = read_json(tmp_path / "out" / "metrics.json")
    assert summary["images"] == 2 and metrics["classes"] == "ade20k_150"
    assert metrics["seen"]["num_classes"] == len({0, 2, 4, 149})  # wall, sky, tree, flag
    assert metrics["full"]["num_classes"] == 150 and metrics["image"]["num_images"] == 2
    assert metrics["num_labels"] == summary["labels"]


@pytest.mark.parametrize(("nodes", "env", "joins"), [
    (1, {}, False),                                                   # a plain run
    (1, {"WORLD_SIZE": "1"}, False),                                  # torchrun with one process
    (1, {"WORLD_SIZE": "4"}, True),                                   # torchrun / Lightning's DDP children
    (2, {}, True),                                                    # nodes launched by hand
    (1, {"SLURM_PROCID": "3", "SLURM_NTASKS": "8"}, True),            # srun, whatever the strategy is named
    (1, {"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}, False),           # srun of one task
    (1, {"WORLD_SIZE": "x"}, False),                                  # not a number: not a launcher's
])
def test_who_joins_a_process_group_even_with_nothing_to_generate(make_cfg, nodes, env, joins):
    from llm2labels.launch import joins_process_group

    cfg = make_cfg(f"trainer.num_nodes={nodes}")
    assert joins_process_group(cfg.trainer, env) is joins


def test_a_finished_ddp_run_in_this_process_does_not_make_the_next_run_a_rank(make_cfg, monkeypatch):
    """Lightning's DDP launcher leaves LOCAL_RANK, WORLD_SIZE, ... in os.environ; they are not this process's."""
    from llm2labels.launch import joins_process_group

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert joins_process_group(make_cfg().trainer) is False


def test_the_supervised_tagger_baseline_runs_without_the_percentile_filter(make_cfg):
    """Tag2Text/RAM keep their own thresholds (the paper's baseline): proposer=ram brings filter=none."""
    assert make_cfg("proposer=ram").filter._target_.endswith("NoFilter")
    assert make_cfg("proposer=ram", "filter=th").filter._target_.endswith("ThresholdFilter")  # the user's wins
    assert make_cfg().filter._target_.endswith("PercentileFilter")
