"""PR@K curve figures (precision against recall as K grows): one panel per class set, one line per ranked list.

A run's pr_curve.png (`plot_pr_curves`) and a sweep's pr_curves.png (experiments/tables_layout.py, one panel per
class list and a mean curve per configuration) are both drawn by `panels_figure`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from llm2labels.evaluation.vocabulary import VocabResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class PRLine:
    """One curve: recall and precision per K (fractions, K = 1..len), its legend label and look, and the point
    marked at K as (recall, precision) in percent."""

    label: str
    recall: np.ndarray
    precision: np.ndarray
    point: tuple[float, float] | None = None
    color: Any = None  # a matplotlib color; None = the axes' next one
    style: str = "-"  # matplotlib line style


def plot_pr_curves(curves: Mapping[str, VocabResult], path: str | Path, k_mark: int | None = None,
                   title: str = "") -> None:
    """Save a PNG of each result's PR@K curve (in %), the point at K = `k_mark` marked and annotated.

    Uses a bare matplotlib Figure with the Agg canvas (no pyplot), so it leaves no global state or open figure
    behind: there is nothing to close.
    """
    pr_figure(curves, k_mark, title).savefig(Path(path), format="png")


def pr_figure(curves: Mapping[str, VocabResult], k_mark: int | None = None, title: str = "") -> Figure:
    """The figure `plot_pr_curves` saves. When `k_mark` lies past a curve's end, the point is the result's
    own P/R if it was computed at that K, and is left out otherwise."""
    lines = [PRLine(f"{name} (AUC {r.AUC:.1f})", r.recall, r.precision, _point_at(r, k_mark))
             for name, r in curves.items()]
    return panels_figure({title: lines}, (6, 4.5), point_text=f"K={k_mark}" if k_mark else "")


def panels_figure(panels: Mapping[str, Sequence[PRLine]], size: tuple[float, float], point_text: str = "",
                  zoom: bool = False, legend_below: bool = False) -> Figure:
    """One panel per title, its lines in percent, each point at K dotted (and annotated with `point_text`).

    `zoom` ends the axes at the next multiple of 10 above the data instead of 100. The legend has one entry
    per label over all panels, inside the first panel or, with `legend_below`, under the panels; a line without
    points is listed as "(no labels)". A panel where nothing is above zero says so.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: the CLI starts without matplotlib
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    fig = Figure(figsize=size, dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, max(1, len(panels)), squeeze=False)[0]
    handles: dict[str, Line2D] = {}
    for ax, (title, lines) in zip(axes, panels.items()):
        top = [0.1, 0.1]
        for line in lines:
            look: dict[str, Any] = {"ls": line.style} | ({"color": line.color} if line.color is not None else {})
            if not len(line.recall):
                handles.setdefault(line.label, Line2D([], [], **look))
                continue
            (drawn,) = ax.plot(100 * line.recall, 100 * line.precision, lw=1.5, clip_on=False,
                               marker="." if len(line.recall) < 20 else None, **look)
            handles[line.label] = drawn
            if line.point is not None:
                ax.plot(*line.point, "o", ms=6, color=drawn.get_color())
                if point_text:
                    ax.annotate(point_text, line.point, textcoords="offset points", xytext=(6, 6), fontsize=8,
                                color=drawn.get_color())
            top = [max(top[0], float(line.recall.max())), max(top[1], float(line.precision.max()))]
        if not any(np.any(drawn.get_ydata()) for drawn in ax.get_lines()):  # e.g. a tiny random model's labels
            ax.text(0.5, 0.5, "no ranked label matches a class", transform=ax.transAxes, ha="center", color="0.4")
        ax.set(xlabel="Recall@K (%)", ylabel="Precision@K (%)", xlim=(0, _axis_end(top[0], zoom)),
               ylim=(0, _axis_end(top[1], zoom)))
        if title:
            ax.set_title(title)
        ax.grid(alpha=0.3)
    _legend(fig, axes[0], handles, legend_below)
    return fig


def _legend(fig: Figure, ax: Any, handles: Mapping[str, Any], below: bool) -> None:
    if not handles:
        return
    labels = [f"{label} (no labels)" if not len(h.get_xdata()) else label for label, h in handles.items()]
    if not below:
        ax.legend(list(handles.values()), labels, loc="upper right", fontsize=8)
        return
    width = 0.065 * max(len(label) for label in labels) + 0.7  # inches per legend column at 8 pt
    fig.legend(list(handles.values()), labels, loc="outside lower center", fontsize=8, frameon=False,
               ncol=max(1, min(3, len(labels), int(fig.get_figwidth() // width))))


def _axis_end(top: float, zoom: bool) -> float:
    """100, or with `zoom` the next multiple of 10 above the data (a fraction), at most 100."""
    return float(min(100, 10 * math.ceil(100 * top / 10 + 1e-9))) if zoom else 100.0


def _point_at(result: VocabResult, k: int | None) -> tuple[float, float] | None:
    """(recall, precision) in % at K, or None."""
    if k is None or k < 1:
        return None
    if k <= len(result.ks):
        return 100 * float(result.recall[k - 1]), 100 * float(result.precision[k - 1])
    if result.k == k:
        return result.R, result.P
    return None
