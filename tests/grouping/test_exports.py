import json
import re
import xml.etree.ElementTree as ET

import pandas as pd
import pytest

from llm2labels.classes import load_class_list
from llm2labels.grouping.exports import (
    FILES,
    colours,
    label_studio_config,
    write_all,
    write_coco_categories,
    write_csv,
    write_label_studio,
    write_openseg,
)
from llm2labels.grouping.hierarchy import suffix_hierarchy
from llm2labels.grouping.vocabulary import build_vocabulary
from llm2labels.scoring.rank import RankedLabel

LABELS = ["bus", "sky", "double-decker bus", "motorcycle", "motorbike", "red double-decker bus", 'r&d "quote" <x>',
          "none"]


@pytest.fixture
def vocab():
    ranked = [RankedLabel(i + 1, lab, 1.0 / (i + 1), 0.25, 0.5, 40 - i, [lab]) for i, lab in enumerate(LABELS)]
    synsets = [("motorcycle", ["motorbike", "motorcycle"])]
    names = ["bus", "sky", "double-decker bus", "motorcycle", "red double-decker bus", 'r&d "quote" <x>', "none"]
    return build_vocabulary(ranked, synsets, suffix_hierarchy(names), {"name": "test"})


def test_openseg_file_loads_back_as_a_class_list(vocab, tmp_path):
    path = write_openseg(vocab, tmp_path / "openseg.txt")
    lines = path.read_text().splitlines()
    assert lines[0] == "1:bus" and lines[3] == "4:motorcycle,motorbike" and len(lines) == 7
    classes = load_class_list(path)
    assert [(c.id, c.name) for c in classes][:4] == [(0, "bus"), (1, "sky"), (2, "double-decker bus"),
                                                     (3, "motorcycle")]
    assert [c.synonyms for c in classes] == [tuple([s["name"], *[m for m in s["members"] if m != s["name"]]])
                                             for s in vocab["synsets"]]


def test_openseg_replaces_its_separators_inside_labels(tmp_path):
    ranked = [RankedLabel(1, "table, round: wooden", 1.0, 0.1, 0.1, 1, [])]
    vocab = build_vocabulary(ranked, [("table, round: wooden", ["table, round: wooden"])])
    path = write_openseg(vocab, tmp_path / "o.txt")
    assert path.read_text() == "1:table round wooden\n"
    assert load_class_list(path)[0].synonyms == ("table round wooden",)


def test_coco_categories_use_the_hierarchy_root(vocab, tmp_path):
    data = json.loads(write_coco_categories(vocab, tmp_path / "c.json").read_text())
    cats = {c["name"]: c for c in data["categories"]}
    assert [c["id"] for c in data["categories"]] == list(range(1, 8))
    assert cats["red double-decker bus"]["supercategory"] == "bus"  # grandchild -> root
    assert cats["double-decker bus"]["supercategory"] == "bus" and cats["sky"]["supercategory"] == "sky"
    assert cats["motorcycle"] == {"id": 4, "name": "motorcycle", "supercategory": "motorcycle",
                                  "synonyms": ["motorcycle", "motorbike"]}


def test_label_studio_config_parses_with_escaping_and_distinct_colours(vocab, tmp_path):
    path = write_label_studio(vocab, tmp_path / "ls.xml")
    text = path.read_text()
    assert "&amp;" in text and "&lt;x&gt;" in text and "&quot;quote&quot;" in text
    root = ET.parse(path).getroot()
    assert root.tag == "View" and root.find("Image").attrib == {"name": "image", "value": "$image"}
    brushes = root.find("BrushLabels")
    assert brushes.attrib == {"name": "tag", "toName": "image"}
    values = [label.get("value") for label in brushes.findall("Label")]
    assert values == [s["name"] for s in vocab["synsets"]] and 'r&d "quote" <x>' in values
    backgrounds = [label.get("background") for label in brushes.findall("Label")]
    assert len(set(backgrounds)) == 7 and all(re.fullmatch(r"#[0-9a-f]{6}", b) for b in backgrounds)
    assert label_studio_config(vocab) == text  # deterministic


def test_colours_are_distinct_and_deterministic():
    many = colours(3000)
    assert len(set(many)) == 3000 and colours(5) == many[:5]


def test_csv_reads_back_with_pandas(vocab, tmp_path):
    frame = pd.read_csv(write_csv(vocab, tmp_path / "v.csv"), keep_default_na=False)
    assert list(frame.columns) == ["id", "name", "members", "score", "occ", "images", "parent"]
    rows = frame.set_index("name")
    assert rows.loc["motorcycle", "members"].split("|") == ["motorcycle", "motorbike"]
    assert rows.loc["motorcycle", "images"] == 37 and rows.loc["motorcycle", "score"] == pytest.approx(0.25)
    assert rows.loc["red double-decker bus", "parent"] == "double-decker bus" and rows.loc["bus", "parent"] == ""
    assert rows.loc["none", "id"] == 7  # the label "none" is not a missing value


def test_write_all_writes_every_file_atomically(vocab, tmp_path):
    written = write_all(vocab, tmp_path / "out")
    assert set(written) == set(FILES) and all(p.is_file() for p in written.values())
    assert json.loads(written["vocabulary"].read_text()) == vocab
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(FILES.values())  # no .tmp left
