"""experiments/tables.py on synthetic sweep folders: seed means/stds recomputed here, failures, layouts, CLI."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import ROOT

from experiments.tables import build_report, main
from experiments.tables_layout import extend_curve, method_name

GRIDS, FILTERS, SEEDS = ("base", "sg"), ("th", "none"), (0, 1)
FAILED = ("sg", "none", 1)  # this job crashed: no metrics.json, an error in run.log
ERROR = "proposer: Salesforce/instructblip-vicuna-7b is not downloaded"


def figures(grid: str, filt: str, seed: int, classes: str = "ade20k_150") -> dict[str, float]:
    """Distinct, non-round figures per job so that a wrong grouping changes the means."""
    base = 10 * GRIDS.index(grid) + 3 * FILTERS.index(filt) + 1.37 * seed + (7 if classes == "ade20k_847" else 0)
    return {"P": 40 + base, "P_class": 30 + base, "R": 35 + 0.5 * base, "AUC": 20 + 0.25 * base * base,
            "L": 300 + 17 * base, "FP": 100 + 11 * base, "mAP": 15 + base / 3, "mAUC": 12 + base / 7}


def metrics(f: dict[str, float], classes: str) -> dict[str, Any]:
    vocab = {"P": f["P"], "P_class": f["P_class"], "R": f["R"], "AUC": f["AUC"]}
    return {"classes": classes, "k": 150 if classes == "ade20k_150" else 1000, "max_k": 5000,
            "num_labels": round(f["L"]), "fp_in_vocab": round(f["FP"]), "seen": {"num_classes": 40, **vocab},
            "full": {"num_classes": 150, **vocab}, "image": {"mAP": f["mAP"], "micro_AUC": f["mAUC"],
                                                             "num_images": 2000, "num_classes": 40},
            "entries": "labels"}


def curve(f: dict[str, float], n: int) -> pd.DataFrame:
    ks = np.arange(1, n + 1)
    precision, recall = 1 / (1 + ks * f["P"] / 1000), np.minimum(1, ks * f["R"] / 4000)
    return pd.DataFrame({"set": "seen", "K": ks, "precision": precision, "recall": recall})


def write_job(sweep: Path, num: int, overrides: dict[str, Any], f: dict[str, float] | None,
              classes: str = "ade20k_150", curve_len: int = 0) -> Path:
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"{k}={v}" for k, v in overrides.items()]))
    choices = {"dataset": overrides.get("dataset", "ade20k"), "proposer": "instructblip", "scorer": "occ_prob"}
    (job / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {"choices": choices}}}))
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"seed": overrides["seed"], "pool": "max"}))
    if f is None:
        (job / "run.log").write_text(f"[2025-01-01 10:00:00,000][llm2labels][ERROR] - {ERROR}\n")
        return job
    (job / "run.log").write_text("[2025-01-01 10:00:00,000][llm2labels][INFO] - done\n")
    (job / "metrics.json").write_text(json.dumps(metrics(f, classes)))
    (job / "summary.json").write_text(json.dumps({"images": 2000, "seconds": {"generate": 12.5, "group": 0.5}}))
    curve(f, curve_len or int(f["L"]) // 10).to_csv(job / "pr_curve.csv", index=False)
    return job


def write_multirun(sweep: Path, params: dict[str, str], task: list[str]) -> None:
    run = {"hydra": {"sweeper": {"params": params}, "overrides": {"task": task}}}
    (sweep / "multirun.yaml").write_text(yaml.safe_dump(run))


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """2 grids x 2 filters x 2 seeds, job numbers in Hydra's order; (sg, none, seed 1) failed."""
    root = tmp_path / "sweep"
    num = 0
    for grid in GRIDS:
        for filt in FILTERS:
            for seed in SEEDS:
                f = None if (grid, filt, seed) == FAILED else figures(grid, filt, seed)
                write_job(root, num, {"experiment": "table2", "grid": grid, "filter": filt, "seed": seed}, f)
                num += 1
    # the experiment's sweeper params, then the command line, which replaces `seed`: 2 x 2 x 3 = 12 planned
    write_multirun(root, {"grid": "base,sg", "seed": "0,1"}, ["experiment=table2", "filter=th,none", "seed=0,1,2"])
    return root


def expected(grid: str, filt: str, key: str, digits: int, dash: str = "—", pm: str = "±") -> str:
    """The `mean ± std` cell recomputed with the statistics module (sample std, ddof=1)."""
    values = [figures(grid, filt, s)[key] for s in SEEDS if (grid, filt, s) != FAILED]
    if key in ("L", "FP"):
        values = [round(v) for v in values]
    std = f"{statistics.stdev(values):.{digits}f}" if len(values) > 1 else dash
    return f"{statistics.fmean(values):.{digits}f} {pm} {std}"


def test_seed_means_stds_and_layouts(sweep: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(sweep)]) == 0
    md, tex = (sweep / "tables.md").read_text(), (sweep / "tables.tex").read_text()
    for grid in GRIDS:
        for filt in FILTERS:
            # #L < max_k (5000): #L at K, filled in from #L and max_k for metrics without it, is #L
            t2 = [expected(grid, filt, k, d) for k, d in (("P", 2), ("R", 2), ("AUC", 2), ("L", 0), ("L", 0))]
            assert f"| LLM2Label | {grid} | {filt} | " in md
            assert " | ".join(t2) + " |" in md  # Table 2 row: P, R, AUC, #L, #L at K
            assert " | ".join([expected(grid, filt, "mAP", 2), expected(grid, filt, "mAUC", 2)]) in md
            assert f" | {expected(grid, filt, 'FP', 0)} |" in md
            tex_row = " & ".join(expected(grid, filt, k, d, "--", "$\\pm$")
                                 for k, d in (("P", 2), ("R", 2), ("AUC", 2), ("L", 0), ("L", 0)))
            assert f"LLM2Label & {grid} & {filt} & " in tex and tex_row + " \\\\" in tex
    assert "± —" in md and "$\\pm$ --" in tex  # the failed job leaves (sg, none) with one seed
    assert "\\toprule" in tex and "\\multicolumn{5}{c}{A-150}" in tex and "\\bottomrule" in tex
    assert "P@K divides the hits by K." in md and "\\#L at K = 5000" in tex  # metrics without the divisor: K
    summary = pd.read_csv(sweep / "summary.csv")
    assert len(summary) == 4 and list(summary["n"]) == [2, 2, 2, 1]
    row = summary[(summary["grid"] == "base") & (summary["filter"] == "none")].iloc[0]
    values = [figures("base", "none", s)["AUC"] for s in SEEDS]
    assert row["seen.AUC_mean"] == pytest.approx(statistics.fmean(values), abs=1e-12)
    assert row["seen.AUC_std"] == pytest.approx(statistics.stdev(values), abs=1e-12)
    assert "seed" not in summary.columns and "experiment" not in summary.columns  # averaged / not swept
    png = (sweep / "pr_curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_failed_and_unstarted_jobs_are_reported(sweep: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(sweep)]) == 0
    err = capsys.readouterr().err
    assert "7 of 12 jobs finished, 1 failed or unfinished, 4 never started" in err
    assert f"sweep/7 (grid=sg filter=none seed=1): {ERROR}" in err
    md = (sweep / "tables.md").read_text()
    assert "4 never started" in md and ERROR in md and ERROR in (sweep / "tables.tex").read_text()
    results = pd.read_csv(sweep / "results.csv")
    assert len(results) == 8 and results["status"].tolist().count("failed") == 1
    assert results.loc[results["status"] == "failed", "reason"].item() == ERROR
    assert results.loc[0, "seen.P"] == figures("base", "th", 0)["P"] and results.loc[0, "seconds"] == 13.0


def test_class_lists_side_by_side_and_mean_curves(tmp_path: Path) -> None:
    """dataset=ade20k,ade20k_full: A-150 | A-847 columns (dataset is no row key), one panel each."""
    root, num = tmp_path / "both", 0
    for dataset, classes in (("ade20k", "ade20k_150"), ("ade20k_full", "ade20k_847")):
        for seed in SEEDS:
            for grid in GRIDS:
                write_job(root, num, {"dataset": dataset, "grid": grid, "seed": seed},
                          figures(grid, "th", seed, classes), classes, curve_len=30 + 20 * seed)
                num += 1
    assert main([str(root)]) == 0
    report, _ = build_report([root], ["seed"])
    assert report.row_keys == ["grid"] and report.classes == ["ade20k_150", "ade20k_847"]
    assert report.k == {"ade20k_150": 150, "ade20k_847": 1000}
    md = (root / "tables.md").read_text()
    assert "| Method | grid | seeds | P (A-150) | R (A-150) | AUC (A-150) | P (A-847) |" in md
    curves = [curve(figures("sg", "th", s, "ade20k_847"), 30 + 20 * s) for s in SEEDS]
    ext = [extend_curve(c["recall"].to_numpy(), c["precision"].to_numpy(), 50) for c in curves]
    recall, precision = report.curves["ade20k_847"][("sg", "LLM2Label")]
    np.testing.assert_allclose(precision, (ext[0][1] + ext[1][1]) / 2)
    np.testing.assert_allclose(recall, (ext[0][0] + ext[1][0]) / 2)
    from PIL import Image

    with Image.open(root / "pr_curves.png") as img:
        assert img.width > 1.6 * img.height * 0.9  # two panels side by side


def test_two_sweep_folders_read_as_one(tmp_path: Path) -> None:
    """An A-150 sweep (dataset from the experiment) and an A-847 sweep (dataset=ade20k_full), written to --out."""
    a150, a847, out = tmp_path / "a150", tmp_path / "a847", tmp_path / "out"
    for seed in SEEDS:
        write_job(a150, seed, {"grid": "sg", "seed": seed}, figures("sg", "th", seed))
        write_job(a847, seed, {"dataset": "ade20k_full", "grid": "sg", "seed": seed},
                  figures("sg", "th", seed, "ade20k_847"), "ade20k_847")
    assert main([str(a150), str(a847), "--out", str(out)]) == 0
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["classes"]) == ["ade20k_150", "ade20k_847"] and list(summary["n"]) == [2, 2]
    values = [figures("sg", "th", s, "ade20k_847")["R"] for s in SEEDS]
    assert summary.loc[1, "seen.R_mean"] == pytest.approx(statistics.fmean(values), abs=1e-12)
    assert "| LLM2Label | 2 | " in (out / "tables.md").read_text()  # one row: dataset follows the class list
    assert not (a150 / "tables.md").exists()


def test_label_count_at_max_k_and_precision_divisor_are_shown(tmp_path: Path) -> None:
    """#L beside #L capped at the curve's last K, P@K's divisor in the captions; two divisors are two rows."""
    new, old, out = tmp_path / "new", tmp_path / "old", tmp_path / "out"
    for seed, n_labels in enumerate((6200, 4800)):
        job = write_job(new, seed, {"grid": "sg", "seed": seed}, figures("sg", "th", seed))
        m = json.loads((job / "metrics.json").read_text())
        m.update(num_labels=n_labels, num_labels_at_max_k=min(n_labels, 5000), precision_divisor="min_k_len")
        (job / "metrics.json").write_text(json.dumps(m))
    assert main([str(new)]) == 0
    md = (new / "tables.md").read_text()
    table2 = md.split("## Table 2")[1].split("## Table 3")[0]
    assert "| #L (A-150) | #L at K = 5000 (A-150) |" in table2
    # #L: 6200, 4800 -> 5500 ± 989.95; capped at 5000: 5000, 4800 -> 4900 ± 141.42
    assert "| 5500 ± 990 | 4900 ± 141 |" in table2
    assert "P@K divides the hits by min(K, #L)." in md and "divide by min(K, #L)" in md
    assert "divides the hits by min(K, \\#L)" in (new / "tables.tex").read_text()
    for seed in SEEDS:  # metrics.json without precision_divisor: P@K divided by K
        write_job(old, seed, {"grid": "sg", "seed": seed}, figures("sg", "th", seed))
    assert main([str(new), str(old), "--out", str(out)]) == 0
    summary = pd.read_csv(out / "summary.csv")
    assert sorted(summary["precision_divisor"]) == ["k", "min_k_len"] and list(summary["n"]) == [2, 2]
    assert "P@K divides the hits by K or min(K, #L) (as each row's precision_divisor says)." in (
        out / "tables.md").read_text()


def test_extend_curve_counts_missing_ranks_as_misses() -> None:
    recall, precision = extend_curve(np.array([0.5, 0.5]), np.array([1.0, 0.5]), 4)
    np.testing.assert_allclose(precision, [1.0, 0.5, 1 / 3, 0.25])
    np.testing.assert_allclose(recall, [0.5, 0.5, 0.5, 0.5])
    recall, precision = extend_curve(np.zeros(0), np.zeros(0), 3)  # a run that ranked no label
    assert recall.tolist() == [0, 0, 0] and precision.tolist() == [0, 0, 0]


@pytest.mark.parametrize(("proposer", "scorer", "name"), [
    ("instructblip", "occ_prob", "LLM2Label"), ("llava", "occ", "LLM2Label_occ"),
    ("imagenet", "occ", "ImageNet classifier"), ("tiny_blip2_vqa", "occ_prob", "BLIP-2 VQA (occ_prob)"),
    ("tag2text", "occ", "Tag2Text"),
])
def test_method_names_follow_the_paper(proposer: str, scorer: str, name: str) -> None:
    assert method_name(proposer, scorer) == name


@pytest.mark.parametrize("case", ["missing", "empty", "all_failed"])
def test_cli_errors_are_one_line_with_exit_2(tmp_path: Path, case: str) -> None:
    target = tmp_path / "nope"
    if case != "missing":
        target.mkdir()
    if case == "all_failed":
        write_job(target, 0, {"grid": "sg", "seed": 0}, None)
    proc = subprocess.run([sys.executable, "-m", "experiments.tables", str(target)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr
    assert {"missing": "no such directory", "empty": "no job folders",
            "all_failed": "none of the 1 jobs finished"}[case] in errors[0]
    assert case != "all_failed" or f"0 (grid=sg seed=0): {ERROR}" in proc.stderr
    assert not (target / "tables.md").exists()
