"""The PR@K curve plot (precision against recall as K grows), one line per ranked list or class set."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from llm2labels.evaluation.vocabulary import VocabResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure


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
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: the CLI starts without matplotlib
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, result in curves.items():
        (line,) = ax.plot(100 * result.recall, 100 * result.precision, lw=1.5,
                          label=f"{name} (AUC {result.AUC:.1f})")
        point = _point_at(result, k_mark)
        if point is not None:
            ax.plot(*point, "o", color=line.get_color(), ms=6)
            ax.annotate(f"K={k_mark}", point, textcoords="offset points", xytext=(6, 6), fontsize=8,
                        color=line.get_color())
    ax.set_xlabel("Recall@K (%)")
    ax.set_ylabel("Precision@K (%)")
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(loc="upper right", fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def _point_at(result: VocabResult, k: int | None) -> tuple[float, float] | None:
    """(recall, precision) in % at K, or None."""
    if k is None or k < 1:
        return None
    if k <= len(result.ks):
        return 100 * float(result.recall[k - 1]), 100 * float(result.precision[k - 1])
    if result.k == k:
        return result.R, result.P
    return None
