"""Regenerate the paper's tables and PR figure from a Hydra sweep (`python run.py -m experiment=table2 ...`).

    python -m experiments.tables SWEEP_DIR [SWEEP_DIR ...] [--out DIR] [--average seed]
    make tables SWEEP=outputs/multirun/table2/2025-01-31_12-00-00

Every job folder of the sweep (one holding `.hydra/overrides.yaml`) is a row of `results.csv`. The swept keys
are the override keys whose values differ between jobs; a configuration is one value of each swept key except
the averaged ones (`seed`), and except keys that only follow the class list (`dataset=ade20k,ade20k_full`
puts A-150 and A-847 side by side instead of in separate rows). Figures are the mean ± std over seeds (std with
ddof=1; "—" for one seed). Written into the first SWEEP_DIR (or --out): `tables.md`, `tables.tex` (booktabs),
`pr_curves.png`, `results.csv` (one row per job), `summary.csv` (one row per configuration and class list).
Several SWEEP_DIRs are read as one sweep (e.g. an A-150 sweep and an A-847 sweep with different roots).

A partial sweep is fine: jobs without metrics.json are listed with the error their run.log shows, jobs that
`multirun.yaml` planned but never started are counted, and the tables hold what finished.

Source of truth: the sweep folder, not W&B. `logger=wandb` writes offline runs whose history and summary sit
in a binary `run-*.wandb` record log that only wandb's internal (unversioned) reader parses, and everything
it logs comes from the same metrics.json / summary.json the job folder already holds.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from experiments.tables_layout import (
    Report,
    mean_curves,
    method_name,
    plot_sweep_curves,
    write_latex,
    write_markdown,
)

ID_COLUMNS = ("job", "status", "reason", "method", "classes", "k", "max_k", "precision_divisor")


@dataclass
class Job:
    """One job folder: its overrides, group choices, config and whatever outputs it got to write."""

    path: Path
    name: str
    overrides: dict[str, str]
    choices: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None
    reason: str | None = None  # why metrics.json is missing


class SweepError(Exception):
    """A wrong path or a folder without jobs: one line, exit code 2."""


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _natural(path: Path) -> list[Any]:
    """Sort key that puts job 10 after job 9."""
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in path.parts]


def parse_overrides(lines: list[str] | None) -> dict[str, str]:
    """Hydra's `key=value` override strings -> {key: value} (leading +, ++, ~ dropped)."""
    out: dict[str, str] = {}
    for line in lines or []:
        key, _, value = str(line).partition("=")
        out[key.lstrip("+~")] = value
    return out


def failure_reason(path: Path) -> str:
    """Why a job folder has no metrics.json, from its summary.json and the last error in its run.log."""
    if (path / "summary.json").exists():
        return "finished without metrics.json (a dataset without ground truth?)"
    log = path / "run.log"
    if not log.exists():
        return "no metrics.json and no run.log (not started or killed at once)"
    errors = [line for line in log.read_text(encoding="utf-8", errors="replace").splitlines()
              if "[ERROR]" in line or line.startswith("error:")]
    if errors:
        return re.sub(r"^\[[^]]*\]\[[^]]*\]\[ERROR\] - ", "", errors[-1]).strip()
    return "no metrics.json; run.log shows no error (still running, killed, or crashed outside the log)"


def load_job(path: Path, root: Path) -> Job:
    hydra_dir = path / ".hydra"
    hydra_cfg = _read_yaml(hydra_dir / "hydra.yaml") or {}
    job = Job(path=path, name=str(path.relative_to(root.parent)),
              overrides=parse_overrides(_read_yaml(hydra_dir / "overrides.yaml")),
              choices=(hydra_cfg.get("hydra", {}).get("runtime", {}) or {}).get("choices", {}) or {},
              config=_read_yaml(hydra_dir / "config.yaml") or {},
              metrics=_read_json(path / "metrics.json"), summary=_read_json(path / "summary.json"))
    if job.metrics is None:
        job.reason = failure_reason(path)
    return job


def find_jobs(sweep: Path) -> list[Job]:
    """Every job folder under `sweep` (W&B run folders skipped), in job-number order."""
    dirs = {p.parent.parent for p in sweep.rglob(".hydra/overrides.yaml") if "wandb" not in p.parts}
    return [load_job(d, sweep) for d in sorted(dirs, key=lambda d: _natural(d.relative_to(sweep)))]


def sweep_plan(sweep: Path) -> dict[str, int] | None:
    """Key -> number of values the sweep's multirun.yaml asked for (sweeper params, then command line)."""
    run = _read_yaml(sweep / "multirun.yaml")
    if not isinstance(run, dict):
        return None
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        hydra_cfg = run["hydra"]
        params = [f"{k}={v}" for k, v in (hydra_cfg["sweeper"].get("params") or {}).items()]
        sizes: dict[str, int] = {}  # like BasicSweeper: the command line replaces a key of the params
        for ov in OverridesParser.create().parse_overrides([*params, *hydra_cfg["overrides"]["task"]]):
            sizes[ov.get_key_element()] = len(list(ov.sweep_string_iterator())) if ov.is_sweep_override() else 1
        return sizes
    except Exception:  # an unusual sweeper or a hand-edited file: no plan
        return None


def planned_jobs(sweep: Path) -> int | None:
    """How many jobs the sweep asked for, if its multirun.yaml says."""
    plan = sweep_plan(sweep)
    return None if plan is None else int(np.prod(list(plan.values()), dtype=np.int64))


def experiment_of(sweep: Path) -> str | None:
    """The experiment a sweep ran (`experiment=table2`), from its multirun.yaml."""
    run = _read_yaml(sweep / "multirun.yaml")
    try:
        return run["hydra"]["runtime"]["choices"]["experiment"]
    except (KeyError, TypeError):
        return None


def value_of(job: Job, key: str) -> str:
    """A key's value in a job: its override, else the group choice, else the composed config's value."""
    if key in job.overrides:
        return job.overrides[key]
    if key in job.choices:
        return str(job.choices[key])
    node: Any = job.config
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return "" if node is None else str(node)


def swept_keys(jobs: list[Job]) -> list[str]:
    """Override keys whose value differs between jobs, in order of first appearance."""
    keys = list(dict.fromkeys(k for job in jobs for k in job.overrides))
    return [k for k in keys if len({value_of(job, k) for job in jobs}) > 1]


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = float(value)
    return out


def _proposer(job: Job) -> str:
    """The proposer option, or the RAM variant (ram_plus | ram | tag2text) for `proposer=ram`."""
    name = value_of(job, "proposer")
    return value_of(job, "proposer.variant") or name if name == "ram" else name


def _with_defaults(metrics: dict[str, Any]) -> dict[str, Any]:
    """metrics.json without `precision_divisor` / `num_labels_at_max_k`: P@K divided by K, #L capped at max_k."""
    out = {"precision_divisor": "k", **metrics} if metrics else {}
    if "num_labels_at_max_k" not in out and {"num_labels", "max_k"} <= out.keys():
        out["num_labels_at_max_k"] = min(out["num_labels"], out["max_k"])
    return out


def long_table(jobs: list[Job], keys: list[str]) -> pd.DataFrame:
    """One row per job: id, status, swept key values, method, class list, P@K's divisor, every metric, images
    and seconds."""
    rows = []
    for job in jobs:
        metrics, summary = _with_defaults(job.metrics or {}), job.summary or {}
        row: dict[str, Any] = {"job": job.name, "status": "ok" if job.metrics else "failed", "reason": job.reason,
                               **{k: value_of(job, k) for k in keys},
                               "method": method_name(_proposer(job), value_of(job, "scorer")),
                               **{k: metrics.get(k) for k in ("classes", "k", "max_k", "precision_divisor")}}
        row.update(_flat({k: v for k, v in metrics.items() if k not in ("k", "max_k")}))
        if summary:
            row["images"] = summary.get("images")
            row["seconds"] = round(sum((summary.get("seconds") or {}).values()), 3)
        rows.append(row)
    return pd.DataFrame(rows)


def row_keys(ok: pd.DataFrame, keys: list[str], average: list[str]) -> list[str]:
    """Swept keys that tell configurations apart: not averaged, and not one-to-one with the class list."""
    def follows_classes(key: str) -> bool:
        return bool((ok.groupby("classes")[key].nunique() == 1).all()
                    and (ok.groupby(key)["classes"].nunique() == 1).all())

    return [k for k in keys if k not in average and not follows_classes(k)]


def aggregate(ok: pd.DataFrame, rows: list[str]) -> pd.DataFrame:
    """One row per configuration and class list: each metric's mean and std over seeds (ddof=1), and n."""
    metrics = [c for c in ok.columns if c not in ID_COLUMNS and pd.api.types.is_numeric_dtype(ok[c])]
    groups = ok.groupby([*rows, "method", "classes"], sort=False, dropna=False)
    mean, std = groups[metrics].mean(), groups[metrics].std(ddof=1)
    out = pd.concat([mean.add_suffix("_mean"), std.add_suffix("_std")], axis=1)
    out = out[[f"{c}_{s}" for c in metrics for s in ("mean", "std")]]
    out.insert(0, "n", groups.size())
    return out.reset_index()


def build_report(sweeps: list[Path], average: list[str]) -> tuple[Report, pd.DataFrame]:
    """Read the sweep folders into the aggregated report and the long table (one row per job)."""
    jobs: list[Job] = []
    for sweep in sweeps:
        if not sweep.is_dir():
            raise SweepError(f"{sweep}: no such directory (pass the sweep folder, hydra.sweep.dir)")
        found = find_jobs(sweep)
        if not found:
            planned = planned_jobs(sweep)
            raise SweepError(f"{sweep}: no job folders (with .hydra/overrides.yaml): " + (
                f"the sweep planned {planned} jobs and failed before its first (see its console output)"
                if planned else "is it a `run.py -m` sweep folder (hydra.sweep.dir)?"))
        jobs += found
    keys = swept_keys(jobs)
    table = long_table(jobs, keys)
    ok = table[table["status"] == "ok"]
    planned_keys = [k for s in sweeps for k, n in (sweep_plan(s) or {}).items() if n > 1]
    said = list(dict.fromkeys([*keys, *planned_keys])) or None  # what tells a failed job apart
    failed = [f"{j.name} ({' '.join(f'{k}={value_of(j, k)}' for k in said or j.overrides)}): {j.reason}"
              for j in jobs if j.metrics is None]
    if ok.empty:
        print("\n".join(f"missing: {line}" for line in failed), file=sys.stderr)
        raise SweepError(f"none of the {len(jobs)} jobs finished (no metrics.json in any job folder)")
    rows = row_keys(ok, keys, average)
    divisors = sorted(ok["precision_divisor"].dropna().unique())
    if len(divisors) > 1 and "evaluation.precision_divisor" not in rows:  # never average P over two definitions
        rows.append("precision_divisor")
    classes = sorted(ok["classes"].unique(), key=lambda c: (c != "ade20k_150", c != "ade20k_847", c))
    plans = [planned_jobs(s) for s in sweeps]
    names = [f"experiment={e}" for e in dict.fromkeys(experiment_of(s) for s in sweeps) if e]
    report = Report(title=f"Sweep tables{' (' + ', '.join(names) + ')' if names else ''}: "
                    + ", ".join(str(s) for s in sweeps), summary=aggregate(ok, rows),
                    row_keys=rows, classes=classes, failed=failed, finished=len(ok),
                    k={c: int(ok[ok["classes"] == c]["k"].iloc[0]) for c in classes},
                    planned=None if None in plans else sum(p for p in plans if p is not None),
                    curves=mean_curves(ok, rows, {j.name: j.path for j in jobs}),
                    max_k=sorted(int(m) for m in ok["max_k"].dropna().unique()), divisors=divisors)
    return report, table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.tables", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", nargs="+", help="the sweep folder(s) (hydra.sweep.dir) holding job folders")
    parser.add_argument("--out", help="where to write the tables (default: the first sweep folder)")
    parser.add_argument("--average", default="seed", help="comma-separated keys averaged over (default: seed)")
    args = parser.parse_args(argv)
    try:
        report, table = build_report([Path(p) for p in args.sweep_dir], args.average.split(","))
    except SweepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out or args.sweep_dir[0])
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "results.csv", index=False)
    report.summary.to_csv(out / "summary.csv", index=False)
    write_markdown(report, out / "tables.md")
    write_latex(report, out / "tables.tex")
    plot_sweep_curves(report, out / "pr_curves.png")
    for line in report.status_lines():
        print(line, file=sys.stderr)
    print(f"wrote tables.md, tables.tex, pr_curves.png, results.csv, summary.csv to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
