import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from llm2labels.group import main
from llm2labels.grouping.exports import FILES
from llm2labels.runfiles import read_ranked_labels as read_ranked
from llm2labels.runfiles import write_labels_csv
from llm2labels.scoring.rank import RankedLabel

ROOT = Path(__file__).resolve().parents[2]
# rank, label, score, occ, prob, images
ROWS = [(1, "sky", 0.6, 0.8, 0.75, 80), (2, "tree", 0.42, 0.6, 0.7, 60), (3, "motorbike", 0.2, 0.25, 0.8, 25),
        (4, "motorcycle", 0.1, 0.2, 0.5, 20), (5, "none", 0.05, 0.1, 0.5, 10), (6, "building", 0.04, 0.05, 0.8, 5)]


@pytest.fixture
def labels_csv(tmp_path):
    path = tmp_path / "labels.csv"
    write_labels_csv(path, [RankedLabel(*row, [row[1], row[1] + "s"]) for row in ROWS])  # the run's own writer
    return path


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_labels_csv_to_stdout_json(labels_csv, capsys):
    code, out, _ = _run(capsys, labels_csv, "--grouper", "embedding")
    vocab = json.loads(out)
    assert code == 0 and set(vocab) == {"synsets", "hierarchy", "dropped", "invented", "grouper"}
    assert vocab["synsets"][0] == {"name": "sky", "members": ["sky"], "score": 0.6, "occ": 0.8, "images": 80}
    moto = vocab["synsets"][2]
    assert (moto["name"], moto["members"], moto["score"], moto["images"]) == (
        "motorbike", ["motorbike", "motorcycle"], 0.2, 25)
    assert [s["name"] for s in vocab["synsets"]] == ["sky", "tree", "motorbike", "none", "building"]
    assert vocab["grouper"]["name"] == "embedding" and vocab["grouper"]["threshold"] == 0.7  # the yaml's value


def test_read_labels_csv_keeps_figures_and_na_like_labels(labels_csv):
    ranked = read_ranked(labels_csv)
    assert [(r.rank, r.label, r.score, r.occ, r.prob, r.images) for r in ranked] == ROWS
    assert ranked[4].surface_forms == ["none", "nones"]


def test_text_file_rank_is_line_order(tmp_path, capsys):
    path = tmp_path / "labels.txt"
    path.write_text("sky\n  tree \n\nmotorbike\nsky\nnull\n")
    code, out, _ = _run(capsys, path, "--grouper", "none")
    vocab = json.loads(out)
    assert code == 0 and [s["name"] for s in vocab["synsets"]] == ["sky", "tree", "motorbike", "null"]
    assert [s["score"] for s in vocab["synsets"]] == [1.0, 0.5, pytest.approx(1 / 3), 0.25]
    assert {(s["occ"], s["images"]) for s in vocab["synsets"]} == {(0.0, 0)}


def test_default_grouper_is_hybrid(labels_csv, capsys):
    code, out, err = _run(capsys, labels_csv)
    vocab = json.loads(out)
    assert code == 0 and err == "" and vocab["grouper"]["name"] == "hybrid"
    # WordNet: motorbike is a minibike, a kind of motorcycle; their embeddings (cosine 0.81) join them
    assert [s["members"] for s in vocab["synsets"]] == [["sky"], ["tree"], ["motorbike", "motorcycle"],
                                                        ["none"], ["building"]]
    assert [s["wordnet"] for s in vocab["synsets"]] == ["sky.n.01", "tree.n.01", "minibike.n.01", None,
                                                        "building.n.01"]


def test_out_dir_gets_vocabulary_and_every_export(labels_csv, tmp_path, capsys):
    out_dir = tmp_path / "vocab"
    code, out, err = _run(capsys, labels_csv, "-o", out_dir, "--grouper", "embedding", "--threshold", "0.9")
    assert code == 0 and out == "" and "6 synsets from 6 labels" in err
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(FILES.values())
    vocab = json.loads((out_dir / "vocabulary.json").read_text())
    assert vocab["grouper"]["threshold"] == 0.9 and len(vocab["synsets"]) == 6  # motorbike apart at 0.9
    frame = pd.read_csv(out_dir / "vocabulary.csv", keep_default_na=False)
    assert frame["name"].tolist() == [r[1] for r in ROWS]


@pytest.mark.parametrize("argv, message", [
    (["--grouper", "nope"], "error: no grouper config"),
    (["--grouper", "none", "--threshold", "0.5"], "error: --threshold: grouper none has no threshold"),
    (["--threshold", "1.5"], "error: grouper=hybrid: threshold must be"),
    (["batch_size=0"], "error: grouper=hybrid: batch_size must be an integer >= 1"),
    (["--grouper", "embedding", "linkage=ward"], "error: grouper=embedding: linkage must be one of"),
    (["foo=1"], "error: Could not override 'grouper.foo'."),
])
def test_user_errors_are_one_line_exit_2(labels_csv, capsys, argv, message):
    code, out, err = _run(capsys, labels_csv, *argv)
    assert code == 2 and out == "" and err.startswith(message) and err.count("\n") == 1


def test_bad_arguments_are_one_line_exit_2(labels_csv, capsys):
    with pytest.raises(SystemExit) as caught:
        main([str(labels_csv), "--bogus"])
    err = capsys.readouterr().err
    assert caught.value.code == 2 and err == "error: unrecognized arguments: --bogus (see --help)\n"


def test_csv_without_the_run_columns_is_a_user_error(tmp_path, capsys):
    path = tmp_path / "labels.csv"
    path.write_text("label,count\nsky,3\n")
    code, _, err = _run(capsys, path, "--grouper", "none")
    assert code == 2 and err.startswith(f"error: {path} lacks column(s) rank, score, occ, prob, images")


def test_missing_labels_file_in_a_subprocess(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "-m", "llm2labels.group", str(tmp_path / "nope.csv")], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [f"error: labels file {tmp_path / 'nope.csv'} not found: give a run's "
                                        f"labels.csv or a text file, one label a line"]

