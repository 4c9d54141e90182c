"""A run's metrics (evaluation.run_metrics.evaluate_run): P@K's divisor and #L at K reach metrics and the curve."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from llm2labels.evaluation.run_metrics import evaluate_run


def _run(tmp_path: Path, **kwargs: object) -> dict:
    out = tmp_path / str(kwargs.get("precision_divisor", "default"))
    out.mkdir()
    rows = [{"path": "a.jpg", "labels": {"wall": [0.9, 2], "blue thing": [0.5, 1]}, "kept": {"wall": 0.9}},
            {"path": "b.jpg", "labels": {"sky": [0.8, 2]}, "kept": {"sky": 0.8}}]
    (out / "images.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    truth = {"a.jpg": [0], "b.jpg": [2, 3]}  # wall | sky, floor
    return evaluate_run(out, ["wall", "sky", "blue thing"], "ade20k_150", truth, 2, lambda occ, p: occ * p,
                        max_k=2, **kwargs)


def test_divisor_and_label_count_at_max_k(tmp_path: Path) -> None:
    # 3 labels, hits wall and sky; seen {wall, sky, floor}. K = 150:
    # divisor K: P = 2/150 = 1.33 %; min(K, #L) = 3: P = 2/3 = 66.67 %; R = 2/3 either way. #L 3, at K = 2: 2
    default = _run(tmp_path)
    short = _run(tmp_path, precision_divisor="min_k_len")
    assert (default["precision_divisor"], short["precision_divisor"]) == ("k", "min_k_len")
    assert default["seen"]["P"] == pytest.approx(200 / 150) and short["seen"]["P"] == pytest.approx(200 / 3)
    assert default["seen"]["R"] == short["seen"]["R"] == pytest.approx(200 / 3)
    assert (short["num_labels"], short["num_labels_at_max_k"]) == (3, 2)
    curves = [pd.read_csv(tmp_path / d / "pr_curve.csv") for d in ("default", "min_k_len")]
    pd.testing.assert_frame_equal(*curves)  # the curve (K <= #L) does not depend on the divisor
