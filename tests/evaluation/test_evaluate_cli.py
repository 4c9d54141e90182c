"""`python -m llm2labels.evaluate`: its JSON equals evaluate_ranked's; bad input is one line and exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llm2labels.evaluate import main
from llm2labels.evaluation.vocabulary import evaluate_ranked

LABELS = ["wall", "sky", "floor", "tree", "blue thing", "ceiling", "person", "road", "bed", "window"]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    csv = tmp_path / "labels.csv"
    rows = [f"{i + 1},{label},{1 - i / 20},1.0,{1 - i / 20},5,{label}" for i, label in enumerate(LABELS)]
    csv.write_text("rank,label,score,occ,prob,images,surface_forms\n" + "\n".join(rows) + "\n", encoding="utf-8")
    txt = tmp_path / "tagger.txt"
    txt.write_text("\n".join(reversed(LABELS)) + "\n\n", encoding="utf-8")
    seen = tmp_path / "seen.json"
    seen.write_text("[0, 1, 2, 3, 4, 5, 6, 7]", encoding="utf-8")
    return {"csv": csv, "txt": txt, "seen": seen, "dir": tmp_path}


def run_main(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = 0
    try:
        main(list(argv))
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_csv_and_txt_equal_evaluate_ranked(files, capsys) -> None:
    code, out, _ = run_main(capsys, str(files["csv"]), "--classes", "ade20k_150", "--seen", str(files["seen"]))
    assert code == 0
    assert json.loads(out) == evaluate_ranked(LABELS, "ade20k_150", seen=list(range(8)))
    assert out == json.dumps(json.loads(out), indent=1) + "\n"  # one object, indent 1
    code, out, _ = run_main(capsys, str(files["txt"]), "--classes", "ade20k_847", "--k", "5", "--max-k", "7")
    assert code == 0
    assert json.loads(out) == evaluate_ranked(list(reversed(LABELS)), "ade20k_847", k=5, max_k=7)


def test_precision_divisor_option(files, capsys) -> None:
    """10 labels at K = 150: P divides by 150 by default, by min(150, 10) = 10 with min_k_len; #L at K = 7."""
    code, out, _ = run_main(capsys, str(files["csv"]), "--classes", "ade20k_150", "--max-k", "7")
    default = json.loads(out)
    code, out, _ = run_main(capsys, str(files["csv"]), "--classes", "ade20k_150", "--max-k", "7",
                            "--precision-divisor", "min_k_len")
    report = json.loads(out)
    assert code == 0 and report == evaluate_ranked(LABELS, "ade20k_150", max_k=7, precision_divisor="min_k_len")
    assert (default["precision_divisor"], report["precision_divisor"]) == ("k", "min_k_len")
    assert (report["num_labels"], report["num_labels_at_max_k"]) == (10, 7)
    assert report["full"]["P"] == pytest.approx(default["full"]["P"] * 150 / 10)


def test_plot_option(files, capsys) -> None:
    png = files["dir"] / "pr.png"
    code, _, _ = run_main(capsys, str(files["csv"]), "--classes", "ade20k_150", "--seen", str(files["seen"]),
                          "--plot", str(png))
    assert code == 0 and png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("case", ["missing", "classes", "seen_json", "seen_ids", "seen_type", "k", "args",
                                  "divisor"])
def test_bad_input_one_line_exit_2(files, capsys, case: str) -> None:
    bad = files["dir"] / "bad.json"
    bad.write_text({"seen_json": "[1, 2", "seen_ids": "[0, 150]", "seen_type": '{"a": 1}'}.get(case, "[]"),
                   encoding="utf-8")
    argv = {
        "missing": [str(files["dir"] / "nope.csv"), "--classes", "ade20k_150"],
        "classes": [str(files["csv"]), "--classes", "ade20k_9999"],
        "seen_json": [str(files["csv"]), "--classes", "ade20k_150", "--seen", str(bad)],
        "seen_ids": [str(files["csv"]), "--classes", "ade20k_150", "--seen", str(bad)],
        "seen_type": [str(files["csv"]), "--classes", "ade20k_150", "--seen", str(bad)],
        "k": [str(files["csv"]), "--classes", "ade20k_150", "--k", "0"],
        "args": [str(files["csv"])],
        "divisor": [str(files["csv"]), "--classes", "ade20k_150", "--precision-divisor", "len"],
    }[case]
    code, out, err = run_main(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1


def test_module_entry_point(files) -> None:
    """The real `python -m` entry point; -X importtime shows that nothing heavy is imported."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    args = [sys.executable, "-X", "importtime", "-m", "llm2labels.evaluate", str(files["csv"]), "--classes",
            "ade20k_150"]
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == evaluate_ranked(LABELS, "ade20k_150")
    imported = {line.split("|")[-1].strip().split(".")[0] for line in done.stderr.splitlines()}
    assert "llm2labels" in imported and "numpy" in imported
    assert not imported & {"torch", "hydra", "lightning", "matplotlib", "sklearn", "pandas"}
