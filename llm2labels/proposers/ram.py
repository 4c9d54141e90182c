"""RAM++ / RAM / Tag2Text image taggers (Huang et al. 2023; the paper's supervised baseline) as proposers.

`recognize-anything` is not on PyPI: install it from its repository (`INSTALL`); it brings timm and
torchvision and fetches the bert-base-uncased tokenizer from the Hugging Face hub when a model is built.
The checkpoints live on the hub too (`VARIANTS`), or give a local `checkpoint` path. Nothing is imported
before `setup`, so the config instantiates without the package.

Each crop gives one "sample": the tags whose sigmoid score passes the threshold, highest score first, as a
Python list with one pseudo-token per tag whose log-probability is log(sigmoid(logit)), so a tag's label
probability is its tagger score (like `imagenet`). `threshold: null` keeps the model's own per-class
thresholds (RAM/RAM++: calibrated per class; Tag2Text: 0.68, the value the paper compares at), and the
tags the package deletes (`delete_tag_index`) stay deleted. The scores are read from the model's `fc`
layer (the tagging head's output, which the package's `generate_tag` / `generate` thresholds internally)
with a forward hook, so the package's own inference code runs unchanged.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from PIL import Image

from llm2labels.errors import ConfigError, int_at_least
from llm2labels.proposers.base import CropRequest, Generation, Proposer, token_ends_from_pieces

INSTALL = "pip install git+https://github.com/xinyu1205/recognize-anything.git"
# variant -> (hub repo, checkpoint file, vision backbone), as the package's README lists them
VARIANTS = {
    "ram_plus": ("xinyu1205/recognize-anything-plus-model", "ram_plus_swin_large_14m.pth", "swin_l"),
    "ram": ("xinyu1205/recognize_anything_model", "ram_swin_large_14m.pth", "swin_l"),
    "tag2text": ("xinyu1205/recognize_anything_model", "tag2text_swin_14m.pth", "swin_b"),
}
# ImageNet normalisation, as ram.get_transform
_MEAN, _STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


class RAMProposer(Proposer):
    """Tags above threshold per crop, scores as single-token probabilities. See the module docstring."""

    deterministic = True
    logprob_mode = "raw"

    def __init__(self, variant: str = "ram_plus", checkpoint: str | None = None, image_size: int = 384,
                 threshold: float | None = None, batch_size: int = 8) -> None:
        if variant not in VARIANTS:
            raise ConfigError(f"proposer.variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
        if image_size not in (224, 384):
            raise ConfigError(f"proposer.image_size must be 224 or 384 (its configs), got {image_size}")
        if threshold is not None and not 0.0 < threshold < 1.0:
            raise ConfigError(f"proposer.threshold must be in (0, 1) or null, got {threshold}")
        if not int_at_least(batch_size, 1):
            raise ConfigError(f"proposer.batch_size must be a whole number >= 1, got {batch_size!r}")
        self.variant, self.checkpoint, self.image_size = variant, checkpoint, image_size
        self.threshold, self.batch_size = threshold, batch_size
        self._model: torch.nn.Module | None = None
        self._tags: list[str] = []
        self._thresholds = torch.empty(0)
        self._deleted: list[int] = []
        self._device = "cpu"

    def fingerprint(self) -> dict[str, Any]:
        repo, filename, _ = VARIANTS[self.variant]
        return {"backend": "recognize_anything", "variant": self.variant,
                "checkpoint": self.checkpoint or f"{repo}/{filename}", "image_size": self.image_size,
                "threshold": self.threshold, "ram_code": 1}

    def setup(self, device: str = "cpu") -> None:
        if self._model is not None:
            return
        try:
            import ram.models as ram_models
        except ImportError:
            raise ConfigError(f"proposer=ram needs recognize-anything (not on PyPI): {INSTALL}") from None
        repo, filename, vit = VARIANTS[self.variant]
        path = self.checkpoint or _download(repo, filename)
        model = getattr(ram_models, self.variant)(pretrained=path, image_size=self.image_size, vit=vit)
        self._model = model.eval().to(device)
        self._tags = [str(tag) for tag in model.tag_list]
        own = torch.as_tensor(model.class_threshold, dtype=torch.float32).reshape(-1)
        self._thresholds = own if self.threshold is None else torch.full_like(own, self.threshold)
        self._deleted = [int(i) for i in getattr(model, "delete_tag_index", [])]
        self._device = device

    def _tensor(self, image: Image.Image) -> torch.Tensor:
        """ram.get_transform without torchvision: RGB, bilinear resize to a square, ImageNet normalisation."""
        im = image.convert("RGB").resize((self.image_size, self.image_size), Image.BILINEAR)
        x = (np.asarray(im, dtype=np.float32) / 255.0 - _MEAN) / _STD
        return torch.from_numpy(x.astype(np.float32)).permute(2, 0, 1)

    def tag_logits(self, x: torch.Tensor) -> torch.Tensor:
        """[B, num_tags] tagging logits of a batch, captured from `model.fc` while the package tags it."""
        assert self._model is not None, "call setup() first"
        captured: list[torch.Tensor] = []
        handle = self._model.fc.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            with torch.inference_mode():
                if self.variant == "tag2text":  # tags, then a caption we do not use
                    self._model.generate(x, tag_input=None, max_length=50, return_tag_predict=True)
                else:
                    self._model.generate_tag(x)
        finally:
            handle.remove()
        return captured[0].reshape(x.shape[0], -1).float()

    def propose(self, requests: list[CropRequest]) -> list[list[Generation]]:
        self.setup(self._device)
        out: list[list[Generation]] = []
        for start in range(0, len(requests), self.batch_size):
            chunk = requests[start : start + self.batch_size]
            x = torch.stack([self._tensor(r.image) for r in chunk]).to(self._device)
            logits = self.tag_logits(x).cpu()
            keep = torch.sigmoid(logits) > self._thresholds
            keep[:, self._deleted] = False
            logprobs = torch.nn.functional.logsigmoid(logits)
            for r, row_keep, row_lp in zip(chunk, keep, logprobs, strict=True):
                index = [int(i) for i in torch.nonzero(row_keep).flatten()]
                index.sort(key=lambda i: -float(row_lp[i]))
                scores = [float(row_lp[i]) for i in index]
                gen = tags_generation([self._tags[i] for i in index], index, scores)
                out.append([gen] * len(r.seeds))
        return out


def tags_generation(tags: list[str], ids: list[int], logprobs: list[float]) -> Generation:
    """A Python-list Generation with one pseudo-token per tag (pieces "['a'", ", 'b'", "]" as `imagenet`)."""
    if not tags:
        return Generation("", [], [], [])
    pieces = [("[" if i == 0 else ", ") + repr(tag) for i, tag in enumerate(tags)]
    pieces[-1] += "]"
    text, ends = token_ends_from_pieces(pieces)
    return Generation(text, list(ids), ends, [lp if math.isfinite(lp) else -1e9 for lp in logprobs])


def _download(repo: str, filename: str) -> str:
    """The checkpoint from the Hugging Face cache, else the hub; a one-line MissingWeightsError otherwise."""
    from huggingface_hub import hf_hub_download

    from llm2labels.proposers.hf_hub import from_cache_or_hub

    # "REPO FILE" reads right both in the message and in the `hf download REPO FILE` it suggests
    return from_cache_or_hub(
        f"{repo} {filename}", lambda local_only: hf_hub_download(repo, filename, local_files_only=local_only)
    )
