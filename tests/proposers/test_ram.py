"""RAM / RAM++ / Tag2Text proposer, against a stand-in for the recognize-anything package (not on PyPI)."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image

from llm2labels.errors import ConfigError
from llm2labels.parsing import parse_labels, token_indices
from llm2labels.proposers.base import CropRequest
from llm2labels.proposers.ram import RAMProposer
from llm2labels.scoring.aggregate import TokenAggregator

PRODUCT = TokenAggregator("product")

TAGS = ["person", "dog", "two", "people's hat", "sky", "road"]


class GroupWiseLinear(torch.nn.Module):
    """Tag2Text's `fc`: one linear unit per tag, [B, tags, d] -> [B, tags] (RAM's Linear: [B, tags, 1])."""

    def __init__(self, tags: int, dim: int) -> None:
        super().__init__()
        self.W, self.b = (
            torch.nn.Parameter(torch.full((1, tags, dim), 0.5)),
            torch.nn.Parameter(torch.full((1, tags), 0.5)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.W * x).sum(-1) + self.b


class FakeTagger(torch.nn.Module):
    """The part of recognize-anything's models that RAMProposer touches: `fc`, `tag_list`, `class_threshold`,
    `delete_tag_index`, `generate_tag` (RAM, RAM++) and `generate` (Tag2Text)."""

    def __init__(self, pretrained: str, image_size: int, vit: str, group_wise: bool) -> None:
        super().__init__()
        self.kwargs = {"pretrained": pretrained, "image_size": image_size, "vit": vit}
        self.embed = torch.tensor([[4.0, 0, 0], [0, 4, 0], [3, 3, 3], [0, 0, 4], [-4, 0, 0], [1, 1, 1]])
        self.fc = GroupWiseLinear(len(TAGS), 3) if group_wise else torch.nn.Linear(3, 1)
        with torch.no_grad():
            for p in self.fc.parameters():
                p.fill_(0.5)
        self.tag_list = np.array(TAGS)
        self.class_threshold = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.5, 0.99])
        self.delete_tag_index = [2]
        self.seen: list[torch.Tensor] = []

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(2, 3))[:, None, :] * self.embed[None])  # embeddings [B, tags, 3]

    def generate_tag(self, x: torch.Tensor) -> tuple[list[str], list[str]]:
        self.seen.append(x)
        self.logits(x)
        return ["unused"] * len(x), ["unused"] * len(x)

    def generate(self, x: torch.Tensor, tag_input: None, max_length: int, return_tag_predict: bool) -> tuple:
        assert tag_input is None and return_tag_predict
        return ["a caption"], self.generate_tag(x)[0]


@pytest.fixture
def fake_ram(monkeypatch) -> types.ModuleType:
    models = types.ModuleType("ram.models")
    models.ram_plus = lambda **kw: FakeTagger(group_wise=False, **kw)
    models.tag2text = lambda **kw: FakeTagger(group_wise=True, **kw)
    package = types.ModuleType("ram")
    package.models = models
    monkeypatch.setitem(sys.modules, "ram", package)
    monkeypatch.setitem(sys.modules, "ram.models", models)
    return models


def test_ram_without_the_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ram", None)
    monkeypatch.setitem(sys.modules, "ram.models", None)
    proposer = RAMProposer(checkpoint="/nowhere.pth")
    with pytest.raises(
        ConfigError, match=r"pip install git\+https://github.com/xinyu1205/recognize-anything.git"
    ):
        proposer.setup("cpu")
    with pytest.raises(ConfigError, match="variant must be one of ram_plus, ram, tag2text"):
        RAMProposer(variant="ram2")


@pytest.mark.parametrize("variant", ["ram_plus", "tag2text"])
@pytest.mark.parametrize("threshold", [None, 0.3])
def test_ram_tags_become_single_token_labels_with_their_scores(fake_ram, variant, threshold):
    proposer = RAMProposer(variant=variant, checkpoint="/ckpt.pth", threshold=threshold, batch_size=2)
    proposer.setup("cpu")
    model = proposer._model
    vit = "swin_b" if variant == "tag2text" else "swin_l"
    assert model.kwargs == {"pretrained": "/ckpt.pth", "image_size": 384, "vit": vit}
    colours = [(255, 0, 128), (0, 200, 0), (30, 30, 30)]
    requests = [CropRequest(Image.new("RGB", (50, 40), c), [7, 8]) for c in colours]
    out = proposer.propose(requests)
    x = torch.cat(model.seen)
    assert x.shape == (3, 3, 384, 384)  # batches of 2 + 1
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    assert np.allclose(x[0, :, 5, 7].numpy(), (np.array(colours[0]) / 255 - mean) / std, atol=1e-5)
    with torch.no_grad():
        scores = torch.sigmoid(model.logits(x).reshape(3, -1)).double()
    thresholds = torch.tensor([threshold] * 6) if threshold else model.class_threshold
    for r, gens, row in zip(requests, out, scores, strict=True):
        assert len(gens) == len(r.seeds) and gens[0] == gens[1] and proposer.deterministic
        kept = sorted((i for i in range(6) if row[i] > thresholds[i] and i != 2), key=lambda i: -row[i])
        parsed = parse_labels(gens[0].text)
        assert [s.text for s in parsed] == [TAGS[i] for i in kept] and gens[0].token_ids == kept
        for span, i in zip(parsed, kept, strict=True):
            prob = PRODUCT(
                [gens[0].logprobs[t] for t in token_indices(gens[0].token_ends, span.start, span.end)]
            )
            assert prob == pytest.approx(float(row[i]), rel=1e-6)
    assert any(out[i][0].text for i in range(3)) and "two" not in "".join(g[0].text for g in out)
