"""The per-run HTML report: `report.html`, one file that opens from disk with no network.

It reads what a run wrote (summary.json, labels.csv, vocabulary.json, images.jsonl, metrics.json,
pr_curve.png, .hydra/config.yaml) and shows the run figures, the metrics, every label with its evidence
thumbnails, the synsets and hierarchy, the skipped images and the config. Each evidence image is
thumbnailed once (JPEG, `thumb_px` on its longest side) and stored once, however many labels it supports;
label rows point at it by index and the page's script sets `src` only for rows near the viewport.

Thumbnails are inlined as base64 data URIs while they total at most `inline_limit_mb`; above that (tens of
thousands of evidence images) they go to `report_thumbs/NNN.jpg` beside the report, referenced relatively,
so the page still opens from disk. Measured for 5,000 labels: see tests/test_report.py (printed).
"""

from __future__ import annotations

import base64
import heapq
import io
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

from llm2labels.report_assets.page import Evidence, Page, Picture, render
from llm2labels.runfiles import image_records, read_json, read_label_rows, read_text
from llm2labels.textio import write_atomic

# Where images are: the dataset root, or rel path (images.jsonl "path") -> the file or the root it is under.
RootOf = Path | str | Callable[[str], Path] | Mapping[str, Path] | None
Thumb = tuple[bytes | None, tuple[int, int], str]  # (JPEG or None, (width, height), why there is none)

REPORT_NAME = "report.html"
THUMBS_DIR = "report_thumbs"
JPEG_QUALITY = 70  # 160 px thumbnails of photos come out at about 4-7 KB


def _label_scores(record: dict[str, Any]) -> Iterator[tuple[str, float, bool]]:
    """(label, image score, kept) for one image: its kept labels, then the ones the filter dropped."""
    kept = record.get("kept") or {}
    for label, score in kept.items():
        yield label, float(score), True
    for label, value in (record.get("labels") or {}).items():
        if label not in kept:
            yield label, float(value[0] if isinstance(value, list | tuple) else value), False


def top_evidence(records: Iterator[dict[str, Any]], wanted: set[str], n: int
                 ) -> tuple[list[str], dict[str, list[Evidence]]]:
    """The `n` images where each wanted label scored highest: images that kept it first, then images
    where only the unfiltered `labels` hold it; ties go to the earlier image. Returns (image rel paths
    referenced, label -> evidence best first), with evidence pointing into that path list."""
    heaps: dict[str, list[tuple[bool, float, int]]] = {}
    paths: list[str] = []
    for i, record in enumerate(records):
        paths.append(str(record.get("path", "")))
        for label, score, kept in _label_scores(record):
            if label not in wanted or n <= 0:
                continue
            heap = heaps.setdefault(label, [])
            item = (kept, score, -i)  # min-heap of the best n: the worst of them is popped first
            if len(heap) < n:
                heapq.heappush(heap, item)
            elif item > heap[0]:
                heapq.heapreplace(heap, item)
    used = sorted({-i for heap in heaps.values() for _, _, i in heap})
    index = {old: new for new, old in enumerate(used)}
    evidence = {label: [Evidence(index[-i], score, kept) for kept, score, i in sorted(heap, reverse=True)]
                for label, heap in heaps.items()}
    return [paths[i] for i in used], evidence


def _locate(rel: str, root_of: RootOf) -> Path | None:
    """The image file for `rel`: `root_of` gives the file itself or a folder that `rel` is relative to."""
    if root_of is None:
        return None
    try:
        if isinstance(root_of, str | Path):
            found = Path(root_of)
        else:
            found = root_of.get(rel) if isinstance(root_of, Mapping) else root_of(rel)
    except (KeyError, OSError):
        return None
    if found is None:
        return None
    path = Path(found).expanduser()
    return path / rel if path.is_dir() else path


def make_thumbnail(path: Path | None, px: int) -> Thumb:
    """(JPEG bytes or None, (width, height), note): the note says why there is no thumbnail."""
    if path is None:
        return None, (0, 0), "no dataset location given"
    try:
        with Image.open(path) as image:
            image.draft("RGB", (px, px))  # JPEG: decode at a reduced scale, much faster for big photos
            small = ImageOps.exif_transpose(image).convert("RGB")
        small.thumbnail((px, px))
        buf = io.BytesIO()
        small.save(buf, "JPEG", quality=JPEG_QUALITY, optimize=True)
        return buf.getvalue(), small.size, ""
    except FileNotFoundError:
        return None, (0, 0), f"missing: {path} not found (dataset moved?)"
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        return None, (0, 0), f"unreadable: {str(err).splitlines()[0] if str(err) else type(err).__name__}"


def _thumbnails(rels: list[str], root_of: RootOf, px: int) -> list[tuple[Path | None, Thumb]]:
    """One thumbnail per evidence image, decoded in threads (PIL releases the GIL while decoding)."""
    files = [_locate(rel, root_of) for rel in rels]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        made = list(pool.map(lambda f: make_thumbnail(f, px), files))
    return list(zip(files, made))


def _place(out_dir: Path, rels: list[str], made: list[tuple[Path | None, Thumb]],
           inline_limit_mb: float) -> list[Picture]:
    """Pictures with their `src`: data URIs if they fit `inline_limit_mb`, else files in report_thumbs/."""
    folder = out_dir / THUMBS_DIR
    shutil.rmtree(folder, ignore_errors=True)  # a previous report's thumbnails
    total = sum(len(data) for _, (data, _, _) in made if data) * 4 / 3  # base64 grows by 4/3
    inline = total <= inline_limit_mb * 2**20
    if not inline:
        folder.mkdir()
    pictures = []
    for i, (rel, (file, (data, size, note))) in enumerate(zip(rels, made)):
        src = None
        if data and inline:
            src = "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")
        elif data:
            (folder / f"{i}.jpg").write_bytes(data)
            src = f"{THUMBS_DIR}/{i}.jpg"
        link = file.resolve().as_uri() if data and file is not None else None
        pictures.append(Picture(rel, src, size, note, link))
    return pictures


def _png_uri(path: Path) -> str | None:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii") if path.is_file() else None


def write_report(out_dir: Path, dataset_root_of: RootOf, thumbnails: int = 4, thumb_px: int = 160,
                 inline_limit_mb: float = 48.0) -> Path:
    """Write `out_dir/report.html` for a finished run and return its path.

    `dataset_root_of` says where the images are: the dataset root itself, or a callable or mapping (e.g.
    `{e.rel: e.path for e in dataset.entries()}`) from an image's rel path (images.jsonl "path") to its file
    or to the root that path is relative to; None: no thumbnails. Images that cannot be found or read get a placeholder with the reason.
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise FileNotFoundError(f"run folder not found: {out_dir} (give the run's output directory)")
    labels = read_label_rows(out_dir / "labels.csv")
    rels, evidence = top_evidence(image_records(out_dir / "images.jsonl"), {r["label"] for r in labels},
                                  thumbnails)
    pictures = _place(out_dir, rels, _thumbnails(rels, dataset_root_of, thumb_px), inline_limit_mb)
    page = Page(
        title=out_dir.resolve().name, summary=read_json(out_dir / "summary.json") or {}, labels=labels,
        evidence=evidence, pictures=pictures, vocabulary=read_json(out_dir / "vocabulary.json") or {},
        metrics=read_json(out_dir / "metrics.json"), pr_curve=_png_uri(out_dir / "pr_curve.png"),
        config=read_text(out_dir / ".hydra" / "config.yaml"),
        overrides=read_text(out_dir / ".hydra" / "overrides.yaml"), thumb_px=thumb_px,
    )
    return write_atomic(out_dir / REPORT_NAME, render(page))
