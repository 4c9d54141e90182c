"""A vocabulary in the formats segmentation tools read, written next to vocabulary.json.

Every export numbers synsets 1..N in vocabulary order (rank order of their best member) and lists a synset's
canonical name first, then its other members.
- openseg.txt: the OpenSeg / ODISE / FC-CLIP class file, one line `id:name,member,...` per synset. FC-CLIP
  splits each line at ":" and ",", and matches lines to categories by position (ids only skip
  `N:invalid_class_id` placeholders), so ids 1..N with no placeholder line are what it reads. The format has no
  escaping: a "," or ":" inside a label becomes a space. `llm2labels.classes.load_class_list` reads it back
  (re-numbering ids 0-based).
- coco_categories.json: `{"categories": [{"id", "name", "supercategory", "synonyms"}]}`; supercategory is the
  root of the hierarchy tree the synset is in (its own name when it is in none); synonyms = name + members.
- label_studio.xml: a Label Studio labelling config for brush (segmentation) labels, one `<Label>` per synset
  with a distinct, deterministic background colour.
- vocabulary.csv: id, name, members ("|"-joined), score, occ, images, parent (in the hierarchy; empty if none).
"""

from __future__ import annotations

import colorsys
import csv
import io
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from llm2labels.grouping.hierarchy import parents, roots
from llm2labels.textio import write_atomic

FILES = {"vocabulary": "vocabulary.json", "openseg": "openseg.txt", "coco": "coco_categories.json",
         "label_studio": "label_studio.xml", "csv": "vocabulary.csv"}
_OPENSEG_RESERVED = re.compile(r"[,:]")
_XML_INVALID = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")  # not allowed anywhere in XML 1.0


def _names(synset: dict[str, Any]) -> list[str]:
    """The canonical name, then the other members, without repeats."""
    return list(dict.fromkeys([synset["name"], *synset["members"]]))


def write_vocabulary(vocab: dict[str, Any], path: str | Path) -> Path:
    """vocabulary.json itself."""
    return write_atomic(path, json.dumps(vocab, indent=1, ensure_ascii=False, default=str) + "\n")


def write_openseg(vocab: dict[str, Any], path: str | Path) -> Path:
    """The OpenSeg/FC-CLIP class file: `id:name,member,...`, ids 1..N in vocabulary order."""
    lines = []
    for number, synset in enumerate(vocab["synsets"], start=1):
        names = [" ".join(_OPENSEG_RESERVED.sub(" ", n).split()) for n in _names(synset)]
        names = list(dict.fromkeys(n for n in names if n)) or [f"class {number}"]
        lines.append(f"{number}:{','.join(names)}\n")
    return write_atomic(path, "".join(lines))


def write_coco_categories(vocab: dict[str, Any], path: str | Path) -> Path:
    """COCO-style categories; supercategory = the root of the synset's hierarchy tree (or its own name)."""
    root_of = roots(vocab.get("hierarchy") or [])
    categories = [{"id": number, "name": s["name"], "supercategory": root_of.get(s["name"], s["name"]),
                   "synonyms": _names(s)} for number, s in enumerate(vocab["synsets"], start=1)]
    return write_atomic(path, json.dumps({"categories": categories}, indent=1, ensure_ascii=False) + "\n")


def colours(n: int) -> list[str]:
    """`n` distinct "#rrggbb" colours, the same for the same n: golden-ratio steps through hue, saturation
    and value (neighbours in rank order differ most); a colour already given is skipped."""
    out: list[str] = []
    seen: set[str] = set()
    step = 0
    while len(out) < n:
        hue = (step * 0.6180339887) % 1.0
        saturation = 0.55 + 0.4 * ((step * 0.7548776662) % 1.0)
        value = 0.65 + 0.3 * ((step * 0.5698402910) % 1.0)
        rgb = colorsys.hsv_to_rgb(hue, saturation, value)
        colour = "#" + "".join(f"{round(c * 255):02x}" for c in rgb)
        step += 1
        if colour not in seen:
            seen.add(colour)
            out.append(colour)
    return out


def label_studio_config(vocab: dict[str, Any]) -> str:
    """The Label Studio labelling config (XML) for segmenting images with the vocabulary's synsets."""
    view = ET.Element("View")
    ET.SubElement(view, "Image", {"name": "image", "value": "$image"})
    brushes = ET.SubElement(view, "BrushLabels", {"name": "tag", "toName": "image"})
    for synset, colour in zip(vocab["synsets"], colours(len(vocab["synsets"]))):
        ET.SubElement(brushes, "Label", {"value": _XML_INVALID.sub("", synset["name"]), "background": colour})
    ET.indent(view, space="  ")
    return ET.tostring(view, encoding="unicode") + "\n"


def write_label_studio(vocab: dict[str, Any], path: str | Path) -> Path:
    """label_studio.xml: names XML-escaped by ElementTree, one distinct colour per synset."""
    return write_atomic(path, label_studio_config(vocab))


def write_csv(vocab: dict[str, Any], path: str | Path) -> Path:
    """vocabulary.csv: id, name, members ("|"-joined), score, occ, images, parent."""
    parent_of = parents(vocab.get("hierarchy") or [])
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "name", "members", "score", "occ", "images", "parent"])
    for number, s in enumerate(vocab["synsets"], start=1):
        writer.writerow([number, s["name"], "|".join(s["members"]), s["score"], s["occ"], s["images"],
                         parent_of.get(s["name"], "")])
    return write_atomic(path, buffer.getvalue())


def write_all(vocab: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """vocabulary.json and every export into `out_dir` (created); returns {kind: path} with FILES' keys."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    writers = {"vocabulary": write_vocabulary, "openseg": write_openseg, "coco": write_coco_categories,
               "label_studio": write_label_studio, "csv": write_csv}
    return {kind: write(vocab, out / FILES[kind]) for kind, write in writers.items()}
