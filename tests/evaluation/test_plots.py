"""The PR@K figure: axes, legend, the marked K, and a real PNG on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from llm2labels.classes import ClassInfo
from llm2labels.evaluation.matching import ClassMatcher
from llm2labels.evaluation.plots import plot_pr_curves, pr_figure
from llm2labels.evaluation.vocabulary import vocabulary_metrics

TOY = ClassMatcher([ClassInfo(i, f"c{i}", (f"c{i}",)) for i in range(4)])


def test_figure_content() -> None:
    a = vocabulary_metrics(["c0", "x", "c1", "c2"], TOY, k=3)
    b = vocabulary_metrics(["x", "c3"], TOY, k=3)
    fig = pr_figure({"a": a, "b": b}, k_mark=3, title="t")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "Recall@K (%)" and ax.get_ylabel() == "Precision@K (%)" and ax.get_title() == "t"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [f"a (AUC {a.AUC:.1f})", f"b (AUC {b.AUC:.1f})"]
    curve = ax.lines[0]
    assert np.allclose(curve.get_xdata(), [25, 25, 50, 75]) and np.allclose(curve.get_ydata(), [100, 50, 200 / 3, 75])
    # a: K=3 on its curve (R 50, P 66.7); b: K=3 past its end, its own P/R at K=3 (R 25, P 33.3)
    marks = [(t.get_text(), t.xy) for t in ax.texts]
    assert marks[0][0] == marks[1][0] == "K=3"
    assert marks[0][1] == pytest.approx((50, 200 / 3)) and marks[1][1] == pytest.approx((25, 100 / 3))


def test_png_written(tmp_path: Path) -> None:
    path = tmp_path / "pr.png"
    plot_pr_curves({"a": vocabulary_metrics(["c0", "x"], TOY, k=2)}, path, k_mark=150)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (720, 540)  # 6 x 4.5 inches at 120 dpi
