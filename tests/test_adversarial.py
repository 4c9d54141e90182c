"""A folder of horrors through `python run.py`, end to end: every good image scored, every bad one listed,
and a damaged cache repaired by the next run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import read_json, run_cli
from PIL import Image

pytestmark = pytest.mark.slow

GOOD = {  # name (bytes: not every name is UTF-8) -> how it is made
    b"plain.jpg": lambda p: Image.new("RGB", (64, 48), (200, 30, 30)).save(p, "JPEG"),
    b"with space & 'quotes'.png": lambda p: Image.new("RGB", (40, 40), (0, 90, 200)).save(p, "PNG"),
    b'new\nline "name".png': lambda p: Image.new("RGB", (30, 50), (60, 200, 60)).save(p, "PNG"),
    b"caf\xe9 latin-1.jpg": lambda p: Image.new("RGB", (50, 40), (10, 10, 250)).save(p, "JPEG"),
    "日本語.webp".encode(): lambda p: Image.new("RGB", (48, 48), (250, 200, 0)).save(p, "WEBP"),
    b"cmyk.jpg": lambda p: Image.new("CMYK", (64, 48), (0, 200, 200, 0)).save(p, "JPEG"),
    b"deep16.png": lambda p: Image.fromarray(np.full((40, 40), 40000, dtype=np.uint16)).save(p, "PNG"),
    b"alpha.png": lambda p: Image.new("RGBA", (40, 40), (0, 0, 255, 100)).save(p, "PNG"),
    b"dot.png": lambda p: Image.new("RGB", (1, 1), (255, 0, 0)).save(p, "PNG"),
    b"sub/nested.bmp": lambda p: Image.new("RGB", (33, 21), (90, 90, 90)).save(p, "BMP"),
}
BAD = {  # name -> (bytes or None for a link, the reason's start)
    b"empty.jpg": (b"", "empty file"),
    b"text.png": (b"not an image at all", "not an image"),
    b"truncated.jpg": (None, "corrupt or truncated image"),
    b"loop.jpg": (None, "symbolic link loop"),
    b"dangling.jpg": (None, "dangling symbolic link"),
}


def make_folder(root: Path) -> None:
    broot = os.fsencode(root)
    os.makedirs(os.path.join(broot, b"sub"), exist_ok=True)
    for name, make in GOOD.items():
        make(os.path.join(broot, name))
    for name, (data, _) in BAD.items():
        if data is not None:
            with open(os.path.join(broot, name), "wb") as fh:
                fh.write(data)
    whole = (root / "plain.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(whole[: len(whole) // 3])
    (root / "loop.jpg").symlink_to(root / "loop.jpg")
    (root / "dangling.jpg").symlink_to(root / "gone.jpg")
    (root / "anim.gif").write_bytes(b"GIF89a\x01\x00\x01\x00")
    (root / ".hidden.jpg").write_bytes(b"")


def fs(name: bytes) -> str:
    return os.fsdecode(name)


def test_folder_of_horrors_end_to_end(tmp_path: Path) -> None:
    root = tmp_path / "horrors"
    make_folder(root)
    env = {"LLM2LABELS_CACHE": str(tmp_path / "cache")}
    common = ["dataset=folder", f"dataset.root={root}", "grid=sg"]
    first = run_cli(*common, f"hydra.run.dir={tmp_path / 'a'}", env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    summary = read_json(tmp_path / "a" / "summary.json")
    scored = [json.loads(line)["path"] for line in (tmp_path / "a" / "images.jsonl").read_text().splitlines()]
    assert sorted(map(os.fsencode, scored)) == sorted(GOOD)  # every good image scored, names exact
    reasons = {s["path"]: s["reason"] for s in summary["skipped"]}
    assert set(reasons) == {fs(n) for n in BAD}
    for name, (_, start) in BAD.items():
        assert reasons[fs(name)].startswith(start), (name, reasons[fs(name)])
    assert summary["not_listed"] == {"other_files": {".gif": 1}}
    assert (tmp_path / "a" / "report.html").stat().st_size > 10_000
    assert not list((tmp_path / "a").glob("*.tmp"))

    # A damaged cache: a flipped byte mid-file, a bad byte in filehash.jsonl, garbage appended to a file.
    store = next(p for p in (tmp_path / "cache").iterdir() if p.is_dir())
    samples = sorted(store.glob("samples-*.jsonl"))[0]
    lines = samples.read_bytes().splitlines(keepends=True)
    i = next(k for k, line in enumerate(lines) if b'"logprobs":[' in line)
    lines[i] = lines[i].replace(b'"logprobs":[', b'"logprobs":[x', 1)
    samples.write_bytes(b"".join(lines) + b'{"key":"torn')
    hashes = tmp_path / "cache" / "filehash.jsonl"
    hashes.write_bytes(hashes.read_bytes().replace(b'"uid"', b'"\xffid"', 1))
    second = run_cli(*common, f"hydra.run.dir={tmp_path / 'b'}", env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    again = read_json(tmp_path / "b" / "summary.json")
    assert again["damaged_records"] == 1 and again["generations"] == 1
    assert again["images"] == summary["images"] == len(GOOD) and again["skipped"] == summary["skipped"]
