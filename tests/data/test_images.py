"""load_rgb: every input mode ends as 8-bit RGB with the right values; every bad file ends as ImageError."""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from llm2labels.data.images import DEFAULT_MAX_PIXELS, file_uid, load_rgb, to_rgb
from llm2labels.errors import ImageError

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def close_to(actual: tuple[int, ...], expected: tuple[int, ...], tol: int) -> bool:
    return all(abs(a - e) <= tol for a, e in zip(actual, expected, strict=True))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height RGB pixels, with no pixel data at all."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_exif_orientation_6_is_rotated_clockwise(tmp_path: Path) -> None:
    # Stored 40 wide x 20 high, red with a green 10x10 block at the stored top-left. Orientation 6 means
    # "rotate 90 degrees clockwise to display": the result is 20x40 and the block lands at the top-right.
    stored = Image.new("RGB", (40, 20), RED)
    stored.paste(GREEN, (0, 0, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(tmp_path / "o6.jpg", exif=exif, quality=95)
    img = load_rgb(tmp_path / "o6.jpg")
    assert img.mode == "RGB" and img.size == (20, 40)
    assert close_to(img.getpixel((15, 4)), GREEN, 40)
    assert close_to(img.getpixel((4, 35)), RED, 40)
    assert close_to(img.getpixel((4, 4)), RED, 40)


def test_grayscale_and_one_bit(tmp_path: Path) -> None:
    Image.new("L", (8, 8), 77).save(tmp_path / "g.png")
    assert load_rgb(tmp_path / "g.png").getpixel((3, 3)) == (77, 77, 77)
    bits = Image.new("1", (8, 8), 0)
    bits.putpixel((2, 2), 1)
    bits.save(tmp_path / "b.png")
    img = load_rgb(tmp_path / "b.png")
    assert img.getpixel((2, 2)) == WHITE and img.getpixel((0, 0)) == (0, 0, 0)


def test_cmyk_jpeg(tmp_path: Path) -> None:
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=95)
    with Image.open(tmp_path / "c.jpg") as raw:
        assert raw.mode == "CMYK"
    assert close_to(load_rgb(tmp_path / "c.jpg").getpixel((8, 8)), RED, 8)


def test_rgba_is_composited_on_white(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (4, 1), (0, 0, 0, 0))
    rgba.putpixel((1, 0), (255, 0, 0, 128))
    rgba.putpixel((2, 0), (0, 0, 255, 255))
    rgba.save(tmp_path / "a.png")
    img = load_rgb(tmp_path / "a.png")
    assert img.getpixel((0, 0)) == WHITE
    # 255 * (1 - 128/255) = 127 of white shows through in G and B
    assert close_to(img.getpixel((1, 0)), (255, 127, 127), 1)
    assert img.getpixel((2, 0)) == BLUE


def test_la_and_palette_transparency(tmp_path: Path) -> None:
    la = Image.new("LA", (2, 1), (0, 0))
    la.putpixel((1, 0), (0, 255))
    assert to_rgb(la).getpixel((0, 0)) == WHITE and to_rgb(la).getpixel((1, 0)) == (0, 0, 0)
    pal = Image.new("P", (2, 1), 0)
    pal.putpalette([*RED, *GREEN] + [0] * 762)
    pal.putpixel((1, 0), 1)
    pal.save(tmp_path / "p.png", transparency=0)
    img = load_rgb(tmp_path / "p.png")
    assert img.getpixel((0, 0)) == WHITE and img.getpixel((1, 0)) == GREEN


def test_16_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "d.png")
    with Image.open(tmp_path / "d.png") as raw:
        assert raw.mode.startswith("I")  # I;16 in current Pillow
    img = load_rgb(tmp_path / "d.png")
    got = [img.getpixel((x, 0))[0] for x in range(4)]
    assert got[0] == 0 and got[1] == 1 and abs(got[2] - 128) <= 1 and got[3] == 255
    assert all(len(set(img.getpixel((x, 0)))) == 1 for x in range(4))


@pytest.mark.parametrize("mode", ["I;16", "I;16B"])
def test_16_bit_byte_orders(mode: str) -> None:
    img = Image.new(mode, (2, 1), 0)
    img.putpixel((1, 0), 65535)
    out = to_rgb(img)
    assert out.getpixel((0, 0)) == (0, 0, 0) and out.getpixel((1, 0)) == WHITE


def test_32_bit_int_and_float() -> None:
    deep = Image.fromarray(np.array([[0, 65535]], dtype=np.int32), mode="I")
    assert [to_rgb(deep).getpixel((x, 0))[0] for x in range(2)] == [0, 255]
    wide = Image.fromarray(np.array([[-100, 0, 100]], dtype=np.int32), mode="I")
    assert [to_rgb(wide).getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]  # min..max stretch
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), mode="F")
    assert [to_rgb(unit).getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]
    eight = Image.fromarray(np.array([[0.0, 77.0, 255.0]], dtype=np.float32), mode="F")
    assert [to_rgb(eight).getpixel((x, 0))[0] for x in range(3)] == [0, 77, 255]
    nan = Image.fromarray(np.array([[np.nan, -2.0, 2.0]], dtype=np.float32), mode="F")
    assert [to_rgb(nan).getpixel((x, 0))[0] for x in range(3)] == [128, 0, 255]  # NaN counts as 0


@pytest.mark.parametrize(("name", "kwargs"), [("w.webp", {"lossless": True}), ("b.bmp", {}), ("t.tiff", {})])
def test_other_formats_round_trip(tmp_path: Path, name: str, kwargs: dict) -> None:
    src = Image.new("RGB", (6, 4), BLUE)
    src.putpixel((5, 3), RED)
    src.save(tmp_path / name, **kwargs)
    img = load_rgb(tmp_path / name)
    assert img.size == (6, 4) and img.getpixel((5, 3)) == RED and img.getpixel((0, 0)) == BLUE


def _real_jpeg(path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path, quality=90)


def test_bad_files_give_one_line_reasons(tmp_path: Path) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.png").write_text("not really a picture\n")
    _real_jpeg(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "half.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "bomb.png").write_bytes(png_header_only(30000, 30000))
    (tmp_path / "folder.jpg").mkdir()

    def reason(name: str, **kwargs: int) -> str:
        with pytest.raises(ImageError) as info:
            load_rgb(tmp_path / name, **kwargs)
        return str(info.value)

    assert reason("missing.jpg") == "file not found"
    assert reason("folder.jpg") == "not a regular file"
    assert reason("empty.jpg") == "empty file (0 bytes)"
    assert reason("text.png") == "not an image"
    assert reason("half.jpg").startswith("corrupt or truncated image: ")
    assert reason("bomb.png") == f"too large: 30000x30000 pixels > limit {DEFAULT_MAX_PIXELS}"
    assert reason("full.jpg", max_pixels=4095) == "too large: 64x64 pixels > limit 4095"
    assert load_rgb(tmp_path / "full.jpg", max_pixels=4096).size == (64, 64)
    assert isinstance(ImageError("x"), ValueError)


def test_pil_decompression_bomb_becomes_image_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _real_jpeg(tmp_path / "x.jpg")

    def refuse(*args: object, **kwargs: object) -> Image.Image:
        raise Image.DecompressionBombError("Image size (200000000 pixels) exceeds limit")

    monkeypatch.setattr(Image, "open", refuse)
    with pytest.raises(ImageError, match=r"^too large: Image size \(200000000 pixels\)"):
        load_rgb(tmp_path / "x.jpg")


def test_pil_global_limit_is_left_as_it_was(tmp_path: Path) -> None:
    before = Image.MAX_IMAGE_PIXELS
    (tmp_path / "bomb.png").write_bytes(png_header_only(30000, 30000))
    with pytest.raises(ImageError):
        load_rgb(tmp_path / "bomb.png")
    Image.new("RGB", (4, 4)).save(tmp_path / "ok.png")
    load_rgb(tmp_path / "ok.png")
    assert Image.MAX_IMAGE_PIXELS == before


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to count open files")
def test_no_file_handle_is_left_open(tmp_path: Path) -> None:
    _real_jpeg(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "half.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.png").write_text("hello")
    (tmp_path / "bomb.png").write_bytes(png_header_only(30000, 30000))
    frames = [Image.new("P", (8, 8), i) for i in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    names = ["full.jpg", "half.jpg", "text.png", "bomb.png", "anim.gif"]
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        for name in names:
            try:
                load_rgb(tmp_path / name)
            except ImageError:
                pass
    assert len(os.listdir("/proc/self/fd")) == before


def test_file_uid(tmp_path: Path) -> None:
    data = np.random.default_rng(1).integers(0, 256, 2_500_000, dtype=np.uint8).tobytes()  # > 2 chunks
    (tmp_path / "a.bin").write_bytes(data)
    (tmp_path / "copy.bin").write_bytes(data)
    (tmp_path / "changed.bin").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    uid = file_uid(tmp_path / "a.bin")
    assert uid == hashlib.blake2b(data, digest_size=12).hexdigest() and len(uid) == 24
    assert file_uid(str(tmp_path / "copy.bin")) == uid
    assert file_uid(tmp_path / "changed.bin") != uid
    with pytest.raises(ImageError, match="^cannot read file"):
        file_uid(tmp_path / "missing.bin")
