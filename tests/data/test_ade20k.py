"""ADE20K datasets: both layouts, class ids from hand-written label maps, subsets, the ground-truth cache."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate
from PIL import Image

import llm2labels.data.ade20k as ade20k
from llm2labels.data.ade20k import ADE20KDataset, ADE20KFullDataset
from llm2labels.errors import ConfigError

# Label maps with known pixel values -> the class ids they must give (A-150: v > 0 is class v - 1).
SCENE = {
    "ADE_val_a": (np.array([[0, 1, 150], [1, 1, 0]], np.uint8), [0, 149]),
    "ADE_val_b": (np.zeros((2, 3), np.uint8), []),  # all "other"
    "ADE_val_c": (np.array([[13, 3, 3], [13, 13, 3]], np.uint8), [2, 12]),
}
# A-847 (detectron2 .tif): the value is the id, 65535 is ignored.
FULL = {
    "ADE_frame_a": (np.array([[0, 5, 846], [65535, 5, 0]], np.uint16), [0, 5, 846]),
    "ADE_frame_b": (np.full((2, 3), 65535, np.uint16), []),
    "ADE_frame_c": (np.array([[300, 65535, 300], [7, 7, 7]], np.uint16), [7, 300]),
}


def _jpeg(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (3, 2), (120, 40, 200)).save(path)


def _label_map(path: Path, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values).save(path)  # uint8 -> mode L PNG, uint16 -> mode I;16 TIFF


def scene_parsing(parent: Path, split: str = "validation") -> Path:
    """ADEChallengeData2016/ under `parent` with the SCENE images and annotations; returns that folder."""
    base = parent / "ADEChallengeData2016"
    for stem, (values, _) in SCENE.items():
        _jpeg(base / "images" / split / f"{stem}.jpg")
        _label_map(base / "annotations" / split / f"{stem}.png", values)
    return base


def ade_full(parent: Path, split: str = "validation") -> Path:
    base = parent / "ADE20K_2021_17_01"
    for stem, (values, _) in FULL.items():
        _jpeg(base / "images_detectron2" / split / f"{stem}.jpg")
        _label_map(base / "annotations_detectron2" / split / f"{stem}.tif", values)
    return base


@pytest.fixture
def count_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the annotation files read from disk (the cache bypasses the reader)."""
    reads: list[str] = []
    real = ade20k.read_label_values

    def counting(path: Path) -> np.ndarray:
        reads.append(path.name)
        return real(path)

    monkeypatch.setattr(ade20k, "read_label_values", counting)
    return reads


def test_scene_parsing_ids_from_either_root(tmp_path: Path) -> None:
    base = scene_parsing(tmp_path / "data")
    expected = {f"{stem}.jpg": ids for stem, (_, ids) in SCENE.items()}
    for root in (base, tmp_path / "data"):
        ds = ADE20KDataset(root, cache_dir=tmp_path / "cache")
        assert (ds.name, ds.class_list, ds.split) == ("ade20k", "ade20k_150", "validation")
        assert ds.dataset_root == base
        assert [e.rel for e in ds.entries()] == sorted(expected)
        assert ds.ground_truth() == expected
        assert ds.seen_classes() == [0, 2, 12, 149] and ds.missing_annotations == []
        assert ds.load(ds.entries()[0].path).size == (3, 2)


def test_limit_reads_only_the_selected_annotations(tmp_path: Path, count_reads: list[str]) -> None:
    scene_parsing(tmp_path)
    ds = ADE20KDataset(tmp_path, limit=2, seed=1, cache_dir=tmp_path / "cache")
    rels = [e.rel for e in ds.entries()]
    assert len(rels) == 2 and rels == [e.rel for e in ADE20KDataset(tmp_path, limit=2, seed=1).entries()]
    assert ds.ground_truth() == {rel: SCENE[rel[:-4]][1] for rel in rels}
    assert sorted(count_reads) == sorted(rel[:-4] + ".png" for rel in rels)


def test_cache_is_written_once_reused_and_refreshed(tmp_path: Path, count_reads: list[str]) -> None:
    base, cache = scene_parsing(tmp_path), tmp_path / "cache"
    first = ADE20KDataset(base, cache_dir=cache)
    truth = first.ground_truth()
    assert len(count_reads) == 3 and [p.name for p in cache.iterdir()] == [first.cache_path().name]
    written = first.cache_path().stat().st_mtime_ns

    count_reads.clear()
    assert ADE20KDataset(tmp_path, cache_dir=cache).ground_truth() == truth  # other root form, same cache
    assert count_reads == [] and first.cache_path().stat().st_mtime_ns == written  # nothing read or rewritten

    changed = base / "annotations" / "validation" / "ADE_val_b.png"
    _label_map(changed, np.array([[0, 0, 21], [21, 0, 0]], np.uint8))
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a clearly later mtime, on any fs
    assert ADE20KDataset(base, cache_dir=cache).ground_truth() == {**truth, "ADE_val_b.jpg": [20]}
    assert count_reads == ["ADE_val_b.png"]
    assert ADE20KFullDataset(ade_full(tmp_path), cache_dir=cache).cache_path() != first.cache_path()


def test_cache_dir_defaults_to_the_cache_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM2LABELS_CACHE", str(tmp_path / "env"))
    ds = ADE20KDataset(scene_parsing(tmp_path))
    assert ds.cache_dir == tmp_path / "env" / "gt"
    ds.ground_truth()
    assert ds.cache_path().parent == tmp_path / "env" / "gt" and ds.cache_path().is_file()
    (tmp_path / "env" / "gt" / ds.cache_path().name).write_text("{not json", encoding="utf-8")
    assert ADE20KDataset(tmp_path).ground_truth() == ds.ground_truth()  # a broken cache is rebuilt


def test_missing_and_bad_annotations_are_recorded_not_fatal(tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    base = scene_parsing(tmp_path)
    _jpeg(base / "images" / "validation" / "ADE_val_d.jpg")  # no annotation
    _jpeg(base / "images" / "validation" / "ADE_val_e.jpg")
    (base / "annotations" / "validation" / "ADE_val_e.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    _jpeg(base / "images" / "validation" / "ADE_val_f.jpg")
    _label_map(base / "annotations" / "validation" / "ADE_val_f.png", np.array([[0, 151]], np.uint8))
    _jpeg(base / "images" / "validation" / "ADE_val_g.jpg")
    _label_map(base / "annotations" / "validation" / "ADE_val_g.png", np.zeros((2, 3, 3), np.uint8))  # RGB
    ds = ADE20KDataset(base, cache_dir=tmp_path / "cache")
    with caplog.at_level(logging.WARNING):
        truth = ds.ground_truth()
    assert truth == {f"{stem}.jpg": ids for stem, (_, ids) in SCENE.items()}
    reasons = {m["path"]: m["reason"] for m in ds.missing_annotations}
    assert sorted(reasons) == ["ADE_val_d.jpg", "ADE_val_e.jpg", "ADE_val_f.jpg", "ADE_val_g.jpg"]
    assert reasons["ADE_val_d.jpg"] == "no annotation file ADE_val_d.png"
    assert reasons["ADE_val_e.jpg"].startswith("ADE_val_e.png: corrupt annotation")
    assert reasons["ADE_val_f.jpg"] == ("ADE_val_f.png: pixel value 151 outside 0..150 "
                                        "(not an A-150 annotation?)")
    assert reasons["ADE_val_g.jpg"].startswith("ADE_val_g.png: not a label map: mode RGB")
    assert "4 of 7 images have no usable annotation" in caplog.text
    assert all("\n" not in r for r in reasons.values())


@pytest.mark.parametrize(("make", "args", "message"), [
    (lambda p: p / "nowhere", {},
     "ADE20K root not found: {p}/nowhere (give ADEChallengeData2016/ or its parent)"),
    (scene_parsing, {"split": "training"},
     "no ADE20K images at {p}/ADEChallengeData2016/images/training (expected ADEChallengeData2016 layout: "
     "images/training/*.jpg and annotations/training/*.png)"),
    (lambda p: p, {}, "no ADE20K images at {p}/images/validation (expected ADEChallengeData2016 layout"),
    (scene_parsing, {"split": "../x"},
     "split must be a folder name such as validation or training, got '../x'"),
    (scene_parsing, {"limit": 0}, "limit must be a positive integer or None, got 0"),
])
def test_bad_roots_and_arguments_fail_with_one_line(tmp_path: Path, make, args, message) -> None:
    root = make(tmp_path)
    with pytest.raises(ConfigError) as info:
        ADE20KDataset(root, **args)
    assert message.format(p=tmp_path) in str(info.value) and "\n" not in str(info.value)


def test_missing_annotation_split_is_a_config_error(tmp_path: Path) -> None:
    base = scene_parsing(tmp_path)
    (base / "annotations" / "validation").rename(base / "annotations" / "val")
    with pytest.raises(ConfigError, match=r"^no ADE20K annotations at .*/annotations/validation \(expected"):
        ADE20KDataset(base)


def test_pil_reads_16_bit_tiff_values_exactly(tmp_path: Path) -> None:
    values = np.array([[0, 1, 5, 255, 256], [846, 847, 32768, 65534, 65535]], np.uint16)
    _label_map(tmp_path / "x.tif", values)
    with Image.open(tmp_path / "x.tif") as img:
        assert img.mode == "I;16" and np.array_equal(np.asarray(img), values)
    assert ade20k.read_label_values(tmp_path / "x.tif").tolist() == sorted(values.ravel().tolist())


def test_full_ids_from_16_bit_tifs_without_ignore(tmp_path: Path) -> None:
    base = ade_full(tmp_path)
    expected = {f"{stem}.jpg": ids for stem, (_, ids) in FULL.items()}
    for root in (base, tmp_path):
        ds = ADE20KFullDataset(root, cache_dir=tmp_path / "cache")
        assert (ds.name, ds.class_list, ds.dataset_root) == ("ade20k_full", "ade20k_847", base)
        assert ds.ground_truth() == expected and ds.seen_classes() == [0, 5, 7, 300, 846]
    _jpeg(base / "images_detectron2" / "validation" / "ADE_frame_d.jpg")
    _label_map(base / "annotations_detectron2" / "validation" / "ADE_frame_d.tif",
               np.array([[847]], np.uint16))
    ds = ADE20KFullDataset(base, cache_dir=tmp_path / "cache")
    assert ds.ground_truth() == expected
    reason = "ADE_frame_d.tif: pixel value 847 outside 0..846 and not 65535 (not an A-847 annotation?)"
    assert ds.missing_annotations == [{"path": "ADE_frame_d.jpg", "reason": reason}]
    with pytest.raises(ConfigError, match=r"^no ADE20K-Full images at .*/images_detectron2/test \(expected"):
        ADE20KFullDataset(tmp_path, split="test")


@pytest.mark.parametrize(("option", "cls", "make"), [("ade20k", ADE20KDataset, scene_parsing),
                                                      ("ade20k_full", ADE20KFullDataset, ade_full)])
def test_hydra_config_instantiates(make_cfg, tmp_path: Path, option, cls, make) -> None:
    base = make(tmp_path / "data")
    cfg = make_cfg(f"dataset={option}", f"dataset.root={tmp_path / 'data'}", "dataset.limit=2")
    ds = instantiate(cfg.dataset)
    assert type(ds) is cls and ds.dataset_root == base and len(ds.entries()) == 2
    assert ds.cache_dir == tmp_path / "cache" / "gt"  # follows cache.dir
