"""SamplesDataset: the packaged photos, their ground truth and their credits."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

import llm2labels
from llm2labels.classes import load_class_list
from llm2labels.data.samples import SamplesDataset, samples_root

FILES = ["astronaut.jpg", "camera.jpg", "chelsea.jpg", "coffee.jpg", "motorcycle.jpg", "rocket.jpg"]


def test_samples_are_packaged_and_load_as_rgb() -> None:
    ds = SamplesDataset()
    assert ds.name == "samples"
    assert ds.root == Path(llm2labels.__file__).parent / "assets" / "samples" == samples_root()
    entries = ds.entries()
    assert [e.rel for e in entries] == FILES
    for entry in entries:
        img = ds.load(entry.path)
        assert img.mode == "RGB" and max(img.size) <= 640 and min(img.size) >= 300
    with Image.open(ds.root / "camera.jpg") as raw:
        assert raw.mode == "L"  # stored grayscale on purpose


def test_ground_truth_is_ade150_ids_keyed_by_rel_and_follows_the_subset() -> None:
    mapping = json.loads((samples_root() / "ground_truth.json").read_text(encoding="utf-8"))
    assert sorted(mapping) == FILES
    ids = {c.name: c.id for c in load_class_list("ade20k_150")}  # on disk: primary names
    expected = {rel: sorted(ids[name] for name in names) for rel, names in mapping.items()}
    ds = SamplesDataset()
    assert ds.class_list == "ade20k_150" and ds.ground_truth() == expected
    truth = ds.ground_truth()
    assert truth["coffee.jpg"] == [15, 142, 147]  # table, plate, cup (objectInfo150 rows 16, 143, 148)
    assert truth["chelsea.jpg"] == [126] and 116 in truth["motorcycle.jpg"]  # animal, minibike
    small = SamplesDataset(limit=2, seed=5)
    rels = [e.rel for e in small.entries()]
    assert len(rels) == 2 and small.ground_truth() == {rel: expected[rel] for rel in rels}
    assert [e.rel for e in SamplesDataset(limit=2, seed=5).entries()] == rels


def test_every_sample_is_credited() -> None:
    text = (samples_root() / "ATTRIBUTION.md").read_text(encoding="utf-8")
    for name in FILES:
        assert f"`{name}`" in text
    for credit in ("NASA", "Rachel Michetti", "Stefan van der Walt", "SpaceX", "Lav Varshney", "Scharstein"):
        assert credit in text
