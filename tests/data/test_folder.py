"""FolderDataset: what a scan finds, what loads, why the rest is skipped, and reproducible subsets."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from llm2labels.data.folder import FolderDataset, ImageEntry
from llm2labels.errors import ConfigError, ImageError

GOOD = {
    "oriented.jpg", "gray.png", "cmyk.jpg", "rgba.png", "deep16.png", "palette.png", "photo.webp",
    "photo.bmp", "photo.tiff", "sub/nested/inner.jpg", "UPPER.JPG",
}
BAD = {  # rel -> the reason's category (the text before any ": detail")
    "empty.jpg": "empty file (0 bytes)",
    "text.png": "not an image",
    "truncated.jpg": "corrupt or truncated image",
    "big.png": "too large",
}
MAX_PIXELS = 10_000  # big.png has 40,000; every good fixture has at most 800


def make_mixed_folder(root: Path) -> None:
    (root / "sub" / "nested").mkdir(parents=True)
    (root / ".hidden_dir").mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (40, 20), (255, 0, 0)).save(root / "oriented.jpg", exif=exif)
    Image.new("L", (10, 10), 50).save(root / "gray.png")
    Image.new("CMYK", (10, 10), (0, 255, 255, 0)).save(root / "cmyk.jpg")
    Image.new("RGBA", (10, 10), (0, 0, 255, 0)).save(root / "rgba.png")
    Image.fromarray(np.full((10, 10), 65535, dtype=np.uint16)).save(root / "deep16.png")
    pal = Image.new("P", (10, 10), 1)
    pal.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    pal.save(root / "palette.png", transparency=0)
    for name in ("photo.webp", "photo.bmp", "photo.tiff", "sub/nested/inner.jpg", "UPPER.JPG"):
        Image.new("RGB", (12, 8), (0, 0, 255)).save(root / name)
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / "full.jpg.bak", format="JPEG")  # wrong extension: not scanned
    data = (root / "full.jpg.bak").read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "empty.jpg").write_bytes(b"")
    (root / "text.png").write_text("just text\n")
    Image.new("RGB", (200, 200)).save(root / "big.png")
    Image.new("RGB", (4, 4)).save(root / ".hidden.jpg")
    Image.new("RGB", (4, 4)).save(root / ".hidden_dir" / "x.jpg")
    (root / "notes.txt").write_text("not an image extension")


def test_mixed_folder_loads_the_good_and_names_the_bad(tmp_path: Path) -> None:
    make_mixed_folder(tmp_path)
    ds = FolderDataset(str(tmp_path), max_pixels=MAX_PIXELS)
    entries = ds.entries()
    assert [e.rel for e in entries] == sorted(GOOD | set(BAD))
    assert all(e.path == tmp_path / e.rel for e in entries)
    loaded, reasons = {}, {}
    for entry in entries:
        try:
            loaded[entry.rel] = ds.load(entry.path)
        except ImageError as e:
            reasons[entry.rel] = str(e).split(": ")[0]
    assert set(loaded) == GOOD and reasons == BAD
    assert all(img.mode == "RGB" for img in loaded.values())
    assert loaded["oriented.jpg"].size == (20, 40)  # orientation 6 applied
    assert loaded["rgba.png"].getpixel((5, 5)) == (255, 255, 255)  # fully transparent -> white
    assert loaded["deep16.png"].getpixel((5, 5)) == (255, 255, 255)  # 65535 -> 255
    assert loaded["palette.png"].getpixel((5, 5)) == (0, 255, 0)
    assert ds.ground_truth() is None and ds.name == "folder" and len(ds) == len(entries)


def test_extensions_are_matched_case_insensitively_and_can_be_narrowed(tmp_path: Path) -> None:
    make_mixed_folder(tmp_path)
    assert [e.rel for e in FolderDataset(tmp_path, extensions=["PNG"]).entries()] == [
        "big.png", "deep16.png", "gray.png", "palette.png", "rgba.png", "text.png",
    ]
    assert [e.rel for e in FolderDataset(tmp_path, extensions=(".jpg",)).entries()] == [
        "UPPER.JPG", "cmyk.jpg", "empty.jpg", "oriented.jpg", "sub/nested/inner.jpg", "truncated.jpg",
    ]


def make_flat_folder(root: Path, names: list[str]) -> None:
    root.mkdir()
    for name in names:
        (root / name).write_bytes(b"x")  # the scan never decodes, so any bytes do


def test_limit_is_a_seeded_subset_independent_of_creation_order(tmp_path: Path) -> None:
    names = [f"img_{i:02d}.jpg" for i in range(30)]
    shuffled = names[:]
    random.Random(7).shuffle(shuffled)
    make_flat_folder(tmp_path / "a", names)
    make_flat_folder(tmp_path / "b", shuffled)

    def pick(folder: str, limit: int | None, seed: int = 0) -> list[str]:
        return [e.rel for e in FolderDataset(tmp_path / folder, limit=limit, seed=seed).entries()]

    everything = pick("a", None)
    assert everything == sorted(names)
    first = pick("a", 10, seed=3)
    assert len(first) == 10 and first == sorted(first) and set(first) < set(everything)
    assert first == pick("a", 10, seed=3) == pick("b", 10, seed=3)
    assert pick("a", 10, seed=4) != first
    assert pick("a", 30) == pick("a", 100) == everything


@pytest.mark.parametrize("limit", [0, -1, 2.5, True])
def test_bad_limit(tmp_path: Path, limit: object) -> None:
    make_flat_folder(tmp_path / "a", ["x.jpg"])
    with pytest.raises(ConfigError, match="limit"):
        FolderDataset(tmp_path / "a", limit=limit)  # type: ignore[arg-type]


def test_bad_roots_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found: .*missing"):
        FolderDataset(str(tmp_path / "missing"))
    (tmp_path / "file.jpg").write_bytes(b"x")
    with pytest.raises(ConfigError, match="not a directory: .*file.jpg"):
        FolderDataset(tmp_path / "file.jpg")
    make_flat_folder(tmp_path / "texts", ["a.txt", ".b.jpg"])
    with pytest.raises(ConfigError, match="no image files .* found under .*texts"):
        FolderDataset(tmp_path / "texts").entries()
    with pytest.raises(ConfigError, match="extensions"):
        FolderDataset(tmp_path / "texts", extensions=[])


def test_entry_is_frozen() -> None:
    entry = ImageEntry(path=Path("/x/a.jpg"), rel="a.jpg")
    with pytest.raises(AttributeError):
        entry.rel = "b.jpg"  # type: ignore[misc]
