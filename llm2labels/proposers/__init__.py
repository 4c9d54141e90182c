"""Label proposers: one backend per file, all behind the small interface in `base`."""

from llm2labels.proposers.base import CropRequest, Generation, Proposer

__all__ = ["CropRequest", "Generation", "Proposer"]
