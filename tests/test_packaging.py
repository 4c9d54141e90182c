"""The installed package (a wheel, not this checkout) runs its stand-alone commands from any folder: its
configs, class lists and WordNet travel inside it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_wheel_installed_in_a_fresh_venv_groups_and_evaluates(tmp_path: Path) -> None:
    run(sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q",
        "-w", str(tmp_path / "dist"), cwd=tmp_path)
    wheel = next((tmp_path / "dist").glob("llm2labels-*.whl"))
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", str(venv), cwd=tmp_path)
    python = venv / "bin" / "python"
    run(str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel), cwd=tmp_path)
    # The dependencies (torch, transformers, ...) come from this environment, as a plain path entry: its
    # own .pth files (the editable install of this checkout) are not read, so `llm2labels` is the wheel's.
    site = Path(run(str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                    cwd=tmp_path).stdout.strip())
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    work = tmp_path / "elsewhere"
    work.mkdir()
    where = run(str(python), "-c", "import llm2labels; print(llm2labels.__file__)", cwd=work).stdout
    assert where.startswith(str(venv))
    (work / "labels.txt").write_text("sofa\ncouch\nsky\ntree\n")
    vocab = json.loads(run(str(python), "-m", "llm2labels.group", "labels.txt", "--grouper", "wordnet",
                           cwd=work).stdout)
    assert [s["members"] for s in vocab["synsets"]] == [["sofa", "couch"], ["sky"], ["tree"]]
    report = json.loads(run(str(python), "-m", "llm2labels.evaluate", "labels.txt", "--classes", "ade20k_150",
                            "--k", "4", cwd=work).stdout)
    assert report["num_labels"] == 4 and report["full"]["num_classes"] == 150
