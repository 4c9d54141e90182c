"""Odd files, damaged caches, bad settings and failing disks: each run finishes or stops in one line, and
finished work is kept. One test (or a few) per defect, each reproducing it as first found."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from conftest import read_json, run_cli
from PIL import Image

from llm2labels import app
from llm2labels.data.folder import FolderDataset
from llm2labels.errors import ConfigError, StorageError
from llm2labels.evaluate import main as evaluate_main
from llm2labels.group import main as group_main
from llm2labels.store import FileHashes

RAW = b"caf\xe9.jpg"  # Latin-1 bytes: not UTF-8


def photos(root: Path, n: int = 3, size: tuple[int, int] = (64, 48)) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = root / f"p{i}.jpg"
        Image.new("RGB", size, (40 * i, 200 - 30 * i, 90)).save(path)
        paths.append(path)
    return paths


def folder_cfg(make_cfg, root: Path, *extra: str, out: str = "out"):
    return make_cfg("dataset=folder", f"dataset.root={root}", "report=true", *extra, out=out)


def store_dir(tmp_path: Path) -> Path:
    return next(p for p in (tmp_path / "cache").iterdir() if p.is_dir() and p.name != "gt")


# 1. A file name that is not UTF-8 -------------------------------------------------------------------------

def test_non_utf8_file_name_round_trips(make_cfg, tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    photos(root)
    odd = os.path.join(os.fsencode(root), RAW)
    Image.new("RGB", (50, 40), (10, 10, 250)).save(odd, format="JPEG")
    for out in ("a", "b"):  # the rerun reads it back from the store
        summary = app.run(folder_cfg(make_cfg, root, out=out))
        assert summary["images"] == 4 and summary["skipped"] == []
    lines = [json.loads(x) for x in (tmp_path / "b" / "images.jsonl").read_text().splitlines()]
    odd_line = next(x for x in lines if x["path"].startswith("caf"))
    assert os.fsencode(odd_line["path"]) == RAW  # the name comes back exactly
    html = (tmp_path / "b" / "report.html").read_text(encoding="utf-8")
    assert "caf\\udce9.jpg" in html  # shown escaped in the page
    assert not list((tmp_path / "b").glob("*.tmp"))


def test_non_utf8_name_of_a_duplicate_image(make_cfg, tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    first = photos(root)[0]
    shutil.copyfile(first, os.path.join(os.fsencode(root), RAW))  # the same bytes under the odd name
    summary = app.run(folder_cfg(make_cfg, root))
    assert summary["images"] == 4 and (tmp_path / "out" / "report.html").stat().st_size > 1000
    assert not list((tmp_path / "out").glob("*.tmp"))


# 2. A skip that depends on a setting ----------------------------------------------------------------------

def test_pixel_limit_skip_is_not_remembered_for_other_limits(make_cfg, tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    photos(root, 1)
    Image.new("RGB", (1024, 1024), (0, 120, 0)).save(root / "big.png")
    small = app.run(folder_cfg(make_cfg, root, "dataset.max_pixels=300000", out="a"))
    assert small["skipped"] == [{"path": "big.png", "reason": "too large: 1024x1024 pixels > limit 300000"}]
    default = app.run(folder_cfg(make_cfg, root, out="b"))
    assert default["images"] == 2 and default["skipped"] == [] and default["generations"] == 1
    again = app.run(folder_cfg(make_cfg, root, "dataset.max_pixels=300000", out="c"))
    assert again["skipped"] == small["skipped"] and again["generations"] == 0


def test_an_old_store_s_limit_skip_is_decided_again(make_cfg, tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    photos(root, 1)
    Image.new("RGB", (1024, 1024), (0, 120, 0)).save(root / "big.png")
    app.run(folder_cfg(make_cfg, root, "dataset.max_pixels=300000", out="a"))
    # what older versions wrote: the limit's skip under the file's own key
    for path in store_dir(tmp_path).glob("samples-*.jsonl"):
        path.write_text(path.read_text().replace("|skip|max_pixels=300000", "|skip"))
    summary = app.run(folder_cfg(make_cfg, root, out="b"))
    assert summary["images"] == 2 and summary["skipped"] == []


# 3. A damaged line in the middle of a sample file ---------------------------------------------------------

def _damage(tmp_path: Path, how: str) -> None:
    """Damage the first sample record of the store, keeping its `{"key":"` start and its newline."""
    path = sorted(store_dir(tmp_path).glob("samples-*.jsonl"))[0]
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    i = next(k for k, line in enumerate(lines) if '"text"' in line)
    line = lines[i]
    if how == "flip":
        j = line.index('"logprobs":[') + len('"logprobs":[')
        line = line[:j] + "x" + line[j + 1:]
    elif how == "cut":
        line = line[: len(line) // 2] + "\n"
    elif how == "type":
        record = json.loads(line)
        record["token_ends"] = "12,17"
        line = json.dumps(record, separators=(",", ":")) + "\n"
    lines[i] = line
    path.write_text("".join(lines), encoding="utf-8")


@pytest.mark.parametrize("columns", ["true", "false"])
@pytest.mark.parametrize("how", ["flip", "cut", "type"])
def test_damaged_record_is_counted_and_regenerated(make_cfg, tmp_path: Path, how: str, columns: str) -> None:
    """Found when read (per occurrence) or when parsed into columns (the first run parsed nothing)."""
    first = app.run(make_cfg("postprocess.columns=false", out="a"))
    _damage(tmp_path, how)
    second = app.run(make_cfg(f"postprocess.columns={columns}", out="b"))
    assert second["damaged_records"] == 1 and second["images"] == 6 and second["skipped"] == []
    assert second["generations"] == 1  # the damaged sample, made again
    before, after = (pd.read_csv(tmp_path / d / "labels.csv") for d in "ab")
    assert list(after.label) == list(before.label)  # made again alone: equal up to batch rounding (README)
    assert after.score.tolist() == pytest.approx(before.score.tolist(), rel=1e-5)
    third = app.run(make_cfg(f"postprocess.columns={columns}", out="c"))  # the quarantine holds
    assert third["damaged_records"] == 0 and third["generations"] == 0 and first["images"] == 6


def test_a_record_damaged_after_it_was_parsed_is_served_from_its_columns(make_cfg, tmp_path: Path) -> None:
    """The parsed columns hold what the line held when it was whole: the run's results stay the same."""
    app.run(make_cfg(out="a"))
    _damage(tmp_path, "flip")
    again = app.run(make_cfg(out="b"))
    assert again["damaged_records"] == 0 and again["generations"] == 0
    assert (tmp_path / "b" / "labels.csv").read_text() == (tmp_path / "a" / "labels.csv").read_text()


# 4. A bad byte in filehash.jsonl --------------------------------------------------------------------------

def test_bad_byte_in_filehash_costs_one_rehash(make_cfg, tmp_path: Path) -> None:
    app.run(make_cfg(out="a"))
    hashes = tmp_path / "cache" / "filehash.jsonl"
    data = bytearray(hashes.read_bytes())
    data[data.index(b'"uid"') + 2] = 0xFF  # invalid UTF-8 in the middle of a line
    hashes.write_bytes(bytes(data))
    summary = app.run(make_cfg(out="b"))
    assert summary["images"] == 6 and summary["generations"] == 0
    assert len(FileHashes(hashes)._known) == 6  # the damaged line is dropped, the re-hash appended


# 5. Settings that failed late or not at all ---------------------------------------------------------------

@pytest.mark.parametrize(("override", "message"), [
    ("loader.batch_size=0", "loader.batch_size must be a whole number >= 1"),
    ("loader.batch_size=-3", "loader.batch_size must be a whole number >= 1"),
    ("loader.batch_size=2.5", "loader.batch_size must be a whole number >= 1"),
    ("loader.batch_size=abc", "loader.batch_size must be a whole number >= 1"),
    ("loader.num_workers=-1", "loader.num_workers must be a whole number >= 0"),
    ("proposer.image_size=0", "image_size must be a whole number in [32, 1024]"),
    ("proposer.image_size=-224", "image_size must be a whole number in [32, 1024]"),
    ("proposer.image_size=100000", "image_size must be a whole number in [32, 1024]"),
    ("grid.whole=1000000", "grid.whole must be a whole number in [0, 256]"),
    ("proposer.batch_size=abc", "batch_size must be a whole number >= 1"),
    ("evaluation.k=0", "evaluation.k must be a whole number >= 1 or null"),
    ("evaluation.max_k=abc", "evaluation.max_k must be a whole number >= 1"),
    ("evaluation.entries=vocab", "evaluation.entries must be labels or synsets"),
    ("seed=abc", "seed must be a whole number"),
    ("seed=1.5", "seed must be a whole number"),
    ("report=no", "report must be true or false"),
    ("pool=mean", "pool must be one of max, avg, min, product"),
    ("logger=wandb logger.max_table_rows=-1", "logger.max_table_rows must be a whole number >= 0"),
])
def test_bad_setting_fails_before_anything_loads(make_cfg, tmp_path: Path, override: str, message: str) -> None:
    from llm2labels.cli import user_error

    with pytest.raises(Exception) as caught:  # ConfigError, or Hydra's wrapping of a component's one
        app.build(make_cfg(*override.split()))
    line = user_error(caught.value)
    assert line is not None and message in line and "\n" not in line


@pytest.mark.slow
def test_bad_setting_is_one_line_from_the_command_line(tmp_path: Path) -> None:
    proc = run_cli("loader.batch_size=abc", f"hydra.run.dir={tmp_path}", env={"LLM2LABELS_CACHE": str(tmp_path)})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert [x for x in proc.stderr.splitlines() if x.startswith("error:")] == [
        "error: loader.batch_size must be a whole number >= 1 (images per predict step), got 'abc'"]
    assert not list(tmp_path.glob("*/samples-*"))  # stopped before any sample


# 6. Cache and output trouble ------------------------------------------------------------------------------

@contextlib.contextmanager
def mounted(args: list[str], target: Path) -> Iterator[None]:
    """A real tmpfs or read-only bind mount at `target`, or a skip where this machine allows none."""
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", *args, str(target)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here ({done.stderr.strip() or 'mount failed'})")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


def test_cache_dir_that_is_a_file(make_cfg, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match=r"cache.dir .*afile is a file, not a folder"):
        app.run(make_cfg(f"cache.dir={tmp_path / 'afile'}"))


def test_read_only_cache_stops_before_the_model_and_reads_what_it_has(make_cfg, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    app.run(make_cfg("dataset.limit=2", out="a"))  # 2 of the 6 photos stored
    with mounted(["-o", "bind,ro", str(cache)], cache):
        done = app.run(make_cfg("dataset.limit=2", out="b"))  # nothing to generate: a read-only store serves
        assert done["images"] == 2 and done["generations"] == 0
        with pytest.raises(ConfigError, match="is not writable .*give a writable cache.dir"):
            app.run(make_cfg(out="c"))  # 4 photos to generate
    assert not (tmp_path / "c" / "labels.csv").exists()


def test_full_disk_while_generating_keeps_the_samples_and_resumes(make_cfg, tmp_path: Path) -> None:
    app.run(make_cfg("dataset.limit=1", out="a"))  # a store with one image's samples
    small = tmp_path / "small"
    with mounted(["-t", "tmpfs", "-o", "size=256k", "tmpfs"], small):
        shutil.copytree(tmp_path / "cache", small / "cache")
        free = os.statvfs(small).f_bavail * os.statvfs(small).f_frsize
        (small / "filler").write_bytes(b"\0" * (free - 4096))  # one page left: a few records fit, not 24
        with pytest.raises(StorageError, match="No space left on device.*samples written before are kept"):
            app.run(make_cfg(f"cache.dir={small / 'cache'}", "grid=sg", "loader.batch_size=1", out="b"))
        shutil.copytree(small / "cache", tmp_path / "roomy")
    summary = app.run(make_cfg(f"cache.dir={tmp_path / 'roomy'}", "grid=sg", out="c"))
    assert summary["images"] == 6 and summary["skipped"] == [] and summary["cache_hits"] >= 4
    assert summary["damaged_records"] == 0  # a record cut by the full disk is ignored like a torn one


def test_full_output_folder_is_one_line_and_leaves_no_temp_files(make_cfg, tmp_path: Path) -> None:
    out = tmp_path / "tiny"
    with mounted(["-t", "tmpfs", "-o", "size=12k", "tmpfs"], out):
        cfg = make_cfg(out="tiny")
        with pytest.raises(StorageError, match=r"cannot write .*tiny.*: No space left on device"):
            app.run(cfg)
        assert not list(out.glob("*.tmp"))


def test_disk_errors_are_user_errors_with_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from llm2labels.cli import user_error
    from llm2labels.textio import write_atomic

    def refuse(self, data):  # noqa: ANN001, ANN202 - Path.write_bytes
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", refuse)
    with pytest.raises(StorageError) as caught:
        write_atomic(tmp_path / "vocabulary.json", "{}")
    assert user_error(caught.value) == f"cannot write {tmp_path / 'vocabulary.json'}: No space left on device"
    assert list(tmp_path.iterdir()) == []


# 7. A grouper that fails keeps the finished work ----------------------------------------------------------

def test_failed_grouping_keeps_labels_and_summary_and_reruns_from_the_store(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg("grouper=openai", "grouper.base_url=http://127.0.0.1:9/v1", "grouper.max_retries=0",
                   "grouper.timeout=2", out="a")
    with pytest.raises(Exception) as caught:
        app.run(cfg)
    from llm2labels.cli import user_error
    assert user_error(caught.value) is not None  # one line, not a traceback
    out = tmp_path / "a"
    assert len(pd.read_csv(out / "labels.csv")) > 0 and read_json(out / "summary.json")["images"] == 6
    assert (out / "images.jsonl").exists() and not (out / "vocabulary.json").exists()
    again = app.run(make_cfg(out="b"))
    assert again["generations"] == 0 and again["cache_hits"] == 6


# 9. Degenerate crops --------------------------------------------------------------------------------------

def test_one_pixel_image_gives_one_pixel_tiles(make_cfg, tmp_path: Path) -> None:
    from llm2labels.predict import ProposalDataset
    from llm2labels.work import CropWork, ImageWork

    Image.new("RGB", (1, 1), (255, 0, 0)).save(tmp_path / "dot.png")
    boxes = [(0, 0, .5, .5), (.5, 0, 1, .5), (0, .5, .5, 1), (.5, .5, 1, 1)]
    work = ImageWork(str(tmp_path / "dot.png"), "dot.png", "u", [CropWork(f"t{i}", b, [(0, 1)])
                                                                for i, b in enumerate(boxes)])
    item = ProposalDataset([work], FolderDataset(tmp_path))[0]
    assert [c.size for c in item["crops"]] == [(1, 1)] * 4
    assert all(c.getpixel((0, 0)) == (255, 0, 0) for c in item["crops"])


# 10. Stand-alone commands ---------------------------------------------------------------------------------

def _labels_csv(path: Path, rows: list[str]) -> Path:
    path.write_text("rank,label,score,occ,prob,images,surface_forms\n" + "".join(rows), encoding="utf-8")
    return path


def test_evaluate_reads_a_huge_field(tmp_path: Path, capsys) -> None:
    path = _labels_csv(tmp_path / "labels.csv", ["1,sky,0.5,0.5,1,1,sky\n", f'2,"{"w" * 300_000}",0.1,0.1,1,1,x\n'])
    evaluate_main([str(path), "--classes", "ade20k_150", "--k", "2"])
    report = json.loads(capsys.readouterr().out)
    assert report["num_labels"] == 2 and report["full"]["R"] == pytest.approx(100 / 150)


def test_empty_class_list_is_one_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty.txt").write_text("")
    path = _labels_csv(tmp_path / "labels.csv", ["1,sky,0.5,0.5,1,1,sky\n"])
    with pytest.raises(SystemExit) as caught:
        evaluate_main([str(path), "--classes", str(tmp_path / "empty.txt")])
    assert caught.value.code == 2
    assert capsys.readouterr().err == f"error: class list {tmp_path / 'empty.txt'} has no classes: give a list with at least one class\n"


def test_group_refuses_an_infinite_count(tmp_path: Path, capsys) -> None:
    path = _labels_csv(tmp_path / "labels.csv", ["1,sky,0.5,0.5,1,1e400,sky\n"])
    assert group_main([str(path), "--grouper", "none"]) == 2
    assert "line 2: rank, score, occ, prob and images must be finite numbers" in capsys.readouterr().err


def test_group_takes_overrides_after_options(tmp_path: Path, capsys) -> None:
    path = _labels_csv(tmp_path / "labels.csv", ["1,sky,0.5,0.5,1,1,sky\n", "2,motorbike,0.4,0.4,1,1,m\n"])
    assert group_main([str(path), "--grouper", "embedding", "threshold=0.5"]) == 0  # the docstring's usage
    assert json.loads(capsys.readouterr().out)["grouper"]["threshold"] == 0.5


def test_unterminated_quote_is_refused_by_both_commands(tmp_path: Path, capsys) -> None:
    path = _labels_csv(tmp_path / "labels.csv", ['1,"sky,0.5,0.5,1,1,sky\n', "2,tree,0.4,0.4,1,1,tree\n"])
    assert group_main([str(path), "--grouper", "none"]) == 2
    group_err = capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate_main([str(path), "--classes", "ade20k_150"])
    evaluate_err = capsys.readouterr().err
    assert group_err == evaluate_err and "unexpected end of data" in group_err


# 11. Skip reasons -----------------------------------------------------------------------------------------

def test_reasons_for_links_and_permissions_and_what_the_scan_passes_over(make_cfg, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "imgs"
    photos(root, 1)
    (root / "loop.jpg").symlink_to(root / "loop.jpg")
    (root / "gone.jpg").symlink_to(root / "nothing.jpg")
    (root / "anim.gif").write_bytes(b"GIF89a")
    (root / "notes.txt").write_text("x")
    (root / "locked").mkdir()
    Image.new("RGB", (8, 8)).save(root / "locked" / "hidden.jpg")
    Image.new("RGB", (8, 8)).save(root / "secret.jpg")
    real_scandir, real_open = os.scandir, Image.open

    def scandir(path):  # noqa: ANN001, ANN202 - as a folder without read permission behaves
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    def image_open(fp, *args, **kwargs):  # noqa: ANN001, ANN202 - as a file without read permission behaves
        if str(fp).endswith("secret.jpg"):
            raise PermissionError(13, "Permission denied", str(fp))
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(Image, "open", image_open)
    summary = app.run(folder_cfg(make_cfg, root))
    reasons = {s["path"]: s["reason"] for s in summary["skipped"]}
    assert reasons == {"gone.jpg": "dangling symbolic link", "loop.jpg": "symbolic link loop",
                       "secret.jpg": "permission denied"}
    assert summary["not_listed"] == {"unreadable_folders": [{"path": "locked", "reason": "Permission denied"}],
                                     "other_files": {".gif": 1, ".txt": 1}}


# Also: the report's script runs only by its hash -----------------------------------------------------------

def test_report_allows_only_its_own_script(make_cfg, tmp_path: Path) -> None:
    import base64
    import hashlib
    import re

    app.run(make_cfg())
    html = (tmp_path / "out" / "report.html").read_text()
    csp = re.search(r'Content-Security-Policy" content="([^"]+)"', html)[1]
    script_src = next(part for part in csp.split(";") if part.strip().startswith("script-src"))
    scripts = re.findall(r"<script>(.*?)</script>", html, flags=re.S)
    assert len(scripts) == 1 and "unsafe-inline" not in script_src
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    assert script_src.split() == ["script-src", f"'sha256-{digest}'"]
