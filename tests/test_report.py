"""report.html from a run folder written by hand: escaping, evidence order, optional blocks, placeholders."""

from __future__ import annotations

import base64
import csv
import io
import json
import random
import time
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from llm2labels.data.samples import samples_root
from llm2labels.report import THUMBS_DIR, top_evidence, write_report

SCRIPT = "<script>alert(1)</script>"
AMP = 'a & "b"'
COLORS = {"a.jpg": (220, 30, 30), "sub/b.png": (30, 200, 30), "c.jpg": (30, 30, 220)}  # gone.jpg: no file
IMAGES = [  # (path, kept, labels-only): image scores written to images.jsonl
    ("a.jpg", {"cat": 0.9, SCRIPT: 0.5, AMP: 0.2}, {"dog": 0.05}),
    ("sub/b.png", {"cat": 0.6, AMP: 0.7}, {}),
    ("c.jpg", {"cat": 0.95}, {SCRIPT: 0.8}),  # above a.jpg's 0.5, but filtered out here: shown after it
    ("gone.jpg", {"cat": 0.1}, {}),
]
LABELS = [("cat", 0.5, 1.0, 0.5, 4, "cat|Cat|cats"), (SCRIPT, 0.125, 0.25, 0.5, 1, SCRIPT),
          (AMP, 0.1125, 0.5, 0.45, 2, AMP)]


def make_run(tmp: Path, metrics: bool = False) -> tuple[Path, Path]:
    """A run folder like app.run writes (plus its image folder); returns (out_dir, dataset root)."""
    root, out = tmp / "data", tmp / "run"
    (root / "sub").mkdir(parents=True)
    (out / ".hydra").mkdir(parents=True)
    for rel, color in COLORS.items():
        Image.new("RGB", (40, 30), color).save(root / rel)
    with open(out / "images.jsonl", "w") as fh:
        for i, (rel, kept, extra) in enumerate(IMAGES):
            labels = {k: [v, 2] for k, v in {**kept, **extra}.items()}
            fh.write(json.dumps({"path": rel, "uid": f"u{i}", "kept": kept, "labels": labels}) + "\n")
    with open(out / "labels.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["rank", "label", "score", "occ", "prob", "images", "surface_forms"])
        writer.writerows([i, *row] for i, row in enumerate(LABELS, 1))
    synsets = [{"name": "cat", "members": ["cat", SCRIPT], "score": 0.5, "occ": 1.0, "images": 4},
               {"name": AMP, "members": [AMP], "score": 0.1125, "occ": 0.5, "images": 2}]
    vocab = {"synsets": synsets, "hierarchy": [{"name": "cat", "children": [{"name": SCRIPT, "children": []}]}],
             "dropped": [], "invented": ["x<y"], "grouper": {"name": "tiny", "synsets": 2}}
    summary = {"images": 4, "skipped": [{"path": "bad<1>.jpg", "reason": "cannot identify image file"}],
               "crops": 4, "generations": 3, "cache_hits": 1, "labels": 3, "grid": "Grid(base)",
               "proposer": {"model": "tiny-vlm", "top_k": 5}, "filter": "percentile", "store": "/s",
               "seconds": {"scan": 0.5, "generate": 12.25}}
    (out / "vocabulary.json").write_text(json.dumps(vocab))
    (out / "summary.json").write_text(json.dumps(summary))
    (out / ".hydra" / "config.yaml").write_text("seed: 0\nnote: <b>bold & co</b>\n")
    if metrics:
        part = {"num_classes": 17, "P": 0.625, "P_class": 0.5, "R": 5.875, "AUC": 0.267}
        (out / "metrics.json").write_text(json.dumps({
            "classes": "ade20k_150", "k": 150, "num_labels": 3, "fp_in_vocab": 2, "seen": part,
            "full": {**part, "num_classes": 150, "R": 0.75}, "image": {"mAP": 23.5, "micro_AUC": 22.9}}))
        Image.new("RGB", (60, 40), "white").save(out / "pr_curve.png")
    return out, root


class Rows(HTMLParser):
    """The label rows of a report: label text and, per evidence figure, (tag, title, class, data-t)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, list[tuple[str, str, str, str | None]]] = {}
        self.ids: set[str] = set()
        self._in_labels, self._row, self._name, self._fig_cls = False, None, False, ""

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        self.ids.add(a.get("id", ""))
        cls = a.get("class") or ""
        if a.get("id") in ("labels", "synsets"):
            self._in_labels = a["id"] == "labels"
        elif self._in_labels and tag == "div" and cls == "row":
            self._row = []
        elif self._row is not None and tag == "div" and cls == "lb":
            self._name = True
        elif tag == "figure":
            self._fig_cls = cls
        elif self._row is not None and (tag == "img" or cls == "ph"):
            self._row.append((tag, a.get("title", ""), self._fig_cls, a.get("data-t")))

    def handle_data(self, data: str) -> None:
        if self._name:
            self.rows[data] = self._row
            self._name = False


def parse(html: str) -> Rows:
    parser = Rows()
    parser.feed(html)
    return parser


def thumbnail_srcs(html: str) -> list[str | None]:
    blob = html.split('<script id="report-data" type="application/json">')[1].split("</script>")[0]
    return json.loads(blob)["src"]


def test_labels_are_escaped_and_evidence_is_best_first(tmp_path):
    out, root = make_run(tmp_path)
    html = write_report(out, root).read_text()
    assert SCRIPT not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'a &amp; &quot;b&quot;' in html and AMP not in html and html.count("<script") == 2
    rows = parse(html).rows
    assert list(rows) == ["cat", SCRIPT, AMP]  # rank order, text unescaped back to the model's label
    titles = {label: [t.split(" · ")[:2] for _, t, _, _ in figs] for label, figs in rows.items()}
    assert titles["cat"] == [["c.jpg", "score 0.95"], ["a.jpg", "score 0.9"], ["sub/b.png", "score 0.6"],
                             ["gone.jpg", "score 0.1"]]
    assert titles[AMP] == [["sub/b.png", "score 0.7"], ["a.jpg", "score 0.2"]]
    assert titles[SCRIPT] == [["a.jpg", "score 0.5"], ["c.jpg", "score 0.8"]]  # kept before filtered-out
    assert [cls for _, _, cls, _ in rows[SCRIPT]] == ["", "weak"]
    tag, title, _, _ = rows["cat"][3]
    assert tag == "span" and "gone.jpg" in title and "not found" in title  # placeholder, not a crash
    assert "also: Cat, cats" in html and "<small" in html


def test_each_image_is_thumbnailed_once_with_its_colours(tmp_path):
    out, root = make_run(tmp_path)
    html = write_report(out, root, thumb_px=20).read_text()
    srcs, rows = thumbnail_srcs(html), parse(html).rows
    index = {title.split(" · ")[0]: int(t) for figs in rows.values() for _, title, _, t in figs if t}
    assert len(srcs) == 4 and sorted(index.values()) == [0, 1, 2]  # a, b, c once each; gone.jpg has none
    assert srcs[3] is None
    for rel, color in COLORS.items():
        image = Image.open(io.BytesIO(base64.b64decode(srcs[index[rel]].split(",", 1)[1])))
        assert image.format == "JPEG" and image.size == (20, 15)  # 40x30 scaled to 20 px on its longest side
        assert all(abs(c - e) < 12 for c, e in zip(image.getpixel((10, 7)), color))
    assert not (out / THUMBS_DIR).exists()


def test_dataset_location_forms_and_none(tmp_path):
    out, root = make_run(tmp_path)
    files = {rel: root / rel for rel in COLORS}
    for where in (root, str(root), files, lambda rel: root, lambda rel: root / rel):
        srcs = thumbnail_srcs(write_report(out, where).read_text())
        assert sum(s is not None for s in srcs) == 3
    html = write_report(out, None).read_text()
    assert thumbnail_srcs(html) == [None] * 4 and html.count("no dataset location given") == 8  # 8 figures


def test_metrics_block_only_with_metrics_json(tmp_path):
    out, root = make_run(tmp_path)
    html = write_report(out, root).read_text()
    assert "metrics" not in parse(html).ids and 'href="#metrics"' not in html
    out, root = make_run(tmp_path / "m", metrics=True)
    html = write_report(out, root).read_text()
    assert "metrics" in parse(html).ids and 'href="#metrics"' in html
    for text in ("<th>seen</th><td>17</td><td>0.625</td><td>0.5</td><td>5.88</td><td>0.267</td>",
                 "<th>full</th><td>150</td>", "<b>23.5</b><span>image mAP</span>", "<b>2</b><span>fp_in_vocab</span>",
                 '<img class="curve" src="data:image/png;base64,'):
        assert text in html


def test_run_figures_skipped_vocabulary_and_config(tmp_path):
    out, root = make_run(tmp_path)
    html = write_report(out, root).read_text()
    for text in ("<b>4</b><span>images</span>", "<b>1</b><span>skipped</span>", "<b>3</b><span>generations</span>",
                 "<b>1</b><span>cache hits</span>", "<b>12.8</b><span>seconds</span>", "generate <b>12.25 s</b>",
                 "model=<b>tiny-vlm</b>", "<dd>Grid(base)</dd>", "<dd>percentile</dd>",
                 "<li><code>bad&lt;1&gt;.jpg</code> — cannot identify image file</li>", "Skipped images (1)",
                 "<pre>seed: 0\nnote: &lt;b&gt;bold &amp; co&lt;/b&gt;\n</pre>", "invented (1): x&lt;y",
                 "<details open><summary>cat</summary><ul><li>&lt;script&gt;alert(1)&lt;/script&gt;</li></ul></details>",
                 '<a href="#l1">cat</a></b><span>cat, &lt;script&gt;alert(1)&lt;/script&gt;</span>'):
        assert text in html, text


def test_thumbnails_go_to_a_folder_above_the_inline_limit(tmp_path):
    out, root = make_run(tmp_path)
    srcs = thumbnail_srcs(write_report(out, root, inline_limit_mb=0).read_text())
    assert sorted(s for s in srcs if s) == [f"{THUMBS_DIR}/{i}.jpg" for i in range(3)]
    assert Image.open(out / srcs[0]).size == (40, 30)
    write_report(out, root)  # inlined again: the old folder goes
    assert not (out / THUMBS_DIR).exists()


def test_top_evidence_bounds_orders_and_breaks_ties_by_image_order():
    records = [{"path": "p0", "kept": {"x": 0.5}}, {"path": "p1", "kept": {"x": 0.5, "y": 0.1}},
               {"path": "p2", "kept": {}, "labels": {"x": [0.9, 1]}}, {"path": "p3", "kept": {"x": 0.7}}]
    paths, ev = top_evidence(iter(records), {"x"}, 3)
    assert paths == ["p0", "p1", "p3"] and "y" not in ev
    assert [(paths[e.image], e.score, e.kept) for e in ev["x"]] == [("p3", 0.7, True), ("p0", 0.5, True),
                                                                    ("p1", 0.5, True)]
    paths, ev = top_evidence(iter(records), {"x"}, 5)
    assert [(paths[e.image], e.kept) for e in ev["x"]][-1] == ("p2", False)


def test_a_missing_run_folder_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="run folder not found"):
        write_report(tmp_path / "nope", None)


def make_big_run(tmp: Path, n_labels: int = 5000, n_images: int = 1000, per_image: int = 25
                 ) -> tuple[Path, Callable[[str], Path]]:
    """A synthetic run: n_labels labels over n_images images (the 6 packaged photos, cycled, so thumbnails
    have real-photo sizes); label popularity is Zipf-like, like a real vocabulary's."""
    rng = random.Random(0)
    photos = sorted(p for p in samples_root().iterdir() if p.suffix == ".jpg")
    out = tmp / "big"
    out.mkdir()
    labels = [f"label {i:04d}" for i in range(n_labels)]
    weights = [1 / (i + 1) for i in range(n_labels)]
    with open(out / "images.jsonl", "w") as fh:
        for i in range(n_images):
            chosen = set(rng.choices(labels, weights, k=per_image)) | {labels[(5 * i + j) % n_labels] for j in range(5)}
            kept = {lab: rng.random() for lab in chosen}
            fh.write(json.dumps({"path": f"img{i:05d}{photos[i % len(photos)].suffix}", "kept": kept,
                                 "labels": {k: [v, 1] for k, v in kept.items()}}) + "\n")
    with open(out / "labels.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["rank", "label", "score", "occ", "prob", "images", "surface_forms"])
        writer.writerows([i + 1, lab, 1 / (i + 1), 0.5, 0.5, 3, lab] for i, lab in enumerate(labels))
    synsets = [{"name": lab, "members": [lab], "score": 1 / (i + 1), "occ": 0.5, "images": 3}
               for i, lab in enumerate(labels)]
    (out / "vocabulary.json").write_text(json.dumps({"synsets": synsets, "hierarchy": []}))
    (out / "summary.json").write_text(json.dumps({"images": n_images, "skipped": []}))
    return out, (lambda rel: photos[int(rel[3:8]) % len(photos)])


def test_5000_labels_build_in_reasonable_time(tmp_path):
    out, where = make_big_run(tmp_path)
    start = time.perf_counter()
    path = write_report(out, where)
    seconds = time.perf_counter() - start
    html = path.read_text()
    srcs = [s for s in thumbnail_srcs(html) if s]
    thumbs = sum(len(s) for s in srcs)
    rows = parse(html).rows
    assert len(rows) == 5000 and all(1 <= len(figs) <= 4 for figs in rows.values())
    print(f"\n5,000 labels, {len(srcs)} evidence images: report {path.stat().st_size / 2**20:.1f} MiB "
          f"(thumbnails {thumbs / 2**20:.1f} MiB, {thumbs / len(srcs) / 1024:.1f} KiB each as base64; "
          f"rows {(len(html) - thumbs) / 2**20:.1f} MiB) in {seconds:.1f} s")


def test_wordnet_senses_implicit_nodes_and_suspects(tmp_path):
    out, root = make_run(tmp_path)
    vocab = json.loads((out / "vocabulary.json").read_text())
    vocab["synsets"][0]["wordnet"] = "cat.n.01"
    vocab["hierarchy"] = [{"name": "feline", "wordnet": "feline.n.01", "implicit": True, "children": [
        {"name": "cat", "wordnet": "cat.n.01", "children": []}, {"name": AMP, "wordnet": None, "children": []}]}]
    vocab["suspects"] = [{"synset": "cat", "senses": {"cat.n.01": ["cat"], "x.n.01": [SCRIPT]}}]
    (out / "vocabulary.json").write_text(json.dumps(vocab))
    html = write_report(out, root).read_text()
    for text in ('<a href="#l1">cat</a> <small class="wn">cat.n.01</small></b>',
                 '<summary><i class="implicit" title="WordNet concept feline.n.01, not a label of the run">'
                 'feline</i></summary>', '<li><span title="WordNet cat.n.01">cat</span></li>',
                 "<i>Italic</i> names are WordNet concepts",
                 "suspect merges (1)", '<li><b>cat</b>: cat <small class="wn">cat.n.01</small>; '
                 '&lt;script&gt;alert(1)&lt;/script&gt; <small class="wn">x.n.01</small></li>'):
        assert text in html, text
