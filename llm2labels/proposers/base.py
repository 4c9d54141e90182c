"""The proposer interface: a crop in, N sampled generations with per-token log-probabilities out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from PIL import Image


@dataclass
class Generation:
    """One sampled answer for one crop.

    `token_ends[i]` is the character offset in `text` where token i's decoded text ends, so a label's
    character span maps back to the tokens that produced it. `logprobs[i]` is log p(token i | prefix, image)
    under the distribution named by the proposer's `logprob_mode` ("raw" or "processed").
    """

    text: str
    token_ids: list[int]
    token_ends: list[int]
    logprobs: list[float]


@dataclass
class CropRequest:
    """One crop to sample from, with one seed per wanted sample (so len(seeds) samples come back)."""

    image: Image.Image
    seeds: list[int]


class MissingWeightsError(RuntimeError):
    """Weights for a model id are neither cached nor downloadable; the message says how to get them."""


class Proposer(ABC):
    """A label proposer. Three methods: `fingerprint`, `setup`, `propose`.

    Implementations load nothing in `__init__` (it must stay cheap and picklable, so that the config can be
    validated and the object shipped to worker processes); heavy loading happens in `setup`.
    """

    #: True when every sample of a crop is the same (a classifier): the pipeline then asks for one sample.
    deterministic: bool = False
    #: "raw" (softmax of unprocessed logits) or "processed" (the distribution actually sampled from).
    logprob_mode: str = "raw"

    @abstractmethod
    def fingerprint(self) -> dict[str, Any]:
        """Everything that changes a sample (model id, prompt, sampling parameters, ...), JSON-serialisable."""

    @abstractmethod
    def setup(self, device: str = "cpu") -> None:
        """Load weights onto `device`. Called once per process before `propose`."""

    @abstractmethod
    def propose(self, requests: list[CropRequest]) -> list[list[Generation]]:
        """Sample `len(r.seeds)` generations for each request; output[i][k] is sample k of request i.

        Sample k of a request must depend only on the crop, the fingerprint and `seeds[k]`, not on the batch
        it was computed in, so that runs are reproducible and resumable.
        """


def token_ends_from_pieces(pieces: list[str]) -> tuple[str, list[int]]:
    """Join decoded token pieces into the text and each token's end offset."""
    ends, pos = [], 0
    for piece in pieces:
        pos += len(piece)
        ends.append(pos)
    return "".join(pieces), ends
