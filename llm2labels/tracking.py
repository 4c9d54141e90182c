"""Weights & Biases logging of a finished run: config, summary figures and the ranked labels as a table."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from llm2labels.errors import ConfigError, int_at_least
from llm2labels.runfiles import read_frame

_MODES = ("offline", "online", "disabled")


def _sweep_group() -> str | None:
    """Jobs of one Hydra sweep share a W&B group named after the sweep directory (None outside a sweep)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        return Path(hc.sweep.dir).name if hc.mode == RunMode.MULTIRUN else None
    except ValueError:  # Hydra not initialised (library use)
        return None


def _metric_figures(metrics: dict[str, Any]) -> dict[str, Any]:
    return {f"metrics/{k}": v for k, v in flatten(metrics).items() if isinstance(v, (int, float))}


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}, so W&B tables can group by `filter.q`, `grid.name`, ..."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v if isinstance(v, (int, float, str, bool)) or v is None else str(v)
    return out


class WandbTracker:
    """Offline by default: runs land in `<output dir>/wandb` and sync later with `wandb sync`."""

    def __init__(self, project: str = "llm2labels", mode: str = "offline", entity: str | None = None,
                 group: str | None = None, tags: list[str] | None = None, max_table_rows: int = 5000) -> None:
        if mode not in _MODES:
            raise ConfigError(f"logger.mode must be one of {_MODES}, got {mode!r}")
        if not int_at_least(max_table_rows, 0):
            raise ConfigError(f"logger.max_table_rows must be a whole number >= 0, got {max_table_rows!r}")
        self.project, self.mode, self.entity, self.group = project, mode, entity, group
        self.tags, self.max_table_rows = list(tags or []), max_table_rows

    def log(self, out_dir: Path, config: dict[str, Any], summary: dict[str, Any], labels: pd.DataFrame,
            metrics: dict[str, Any] | None = None) -> str | None:
        """Log one run; returns the W&B run directory (None when disabled)."""
        import wandb

        mode = os.environ.get("WANDB_MODE", self.mode)
        run = wandb.init(project=self.project, entity=self.entity, group=self.group or _sweep_group(), tags=self.tags,
                         mode=mode, dir=str(out_dir), config=flatten(config), reinit="finish_previous")
        figures = {k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        figures.update({f"seconds/{k}": v for k, v in summary.get("seconds", {}).items()})
        figures["skipped"] = len(summary.get("skipped", []))
        run.summary.update(figures)
        run.log({"labels": wandb.Table(dataframe=labels.head(self.max_table_rows))})
        vocabulary = read_frame(out_dir / "vocabulary.csv")
        if vocabulary is not None:
            run.log({"vocabulary": wandb.Table(dataframe=vocabulary.head(self.max_table_rows))})
        if metrics is not None:
            self._log_metrics(run, out_dir, metrics)
        run_dir = getattr(run, "dir", None)
        run.finish()
        return None if mode == "disabled" else run_dir

    @staticmethod
    def _log_metrics(run: Any, out_dir: Path, metrics: dict[str, Any]) -> None:
        """Metric figures into the summary; the PR@K curve as a table and a line plot, plus its image."""
        import wandb

        run.summary.update(_metric_figures(metrics))
        curve = read_frame(out_dir / "pr_curve.csv")
        if curve is not None:
            for name, part in curve.groupby("set"):
                table = wandb.Table(dataframe=part[["K", "recall", "precision"]])
                run.log({f"pr_curve/{name}": wandb.plot.line(table, "recall", "precision",
                                                             title=f"PR@K ({name} classes)")})
        if (out_dir / "pr_curve.png").exists():
            run.log({"pr_curve_image": wandb.Image(str(out_dir / "pr_curve.png"))})
