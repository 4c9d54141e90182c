"""What several benchmark scripts share, kept free of heavy imports: the GPU benchmark imports it on machines
that have torch and transformers but not the app's other dependencies."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


def language_model(model: nn.Module) -> nn.Module:
    """The text decoder: BLIP-2/InstructBLIP `language_model`, LLaVA `model.language_model`."""
    lm = getattr(model, "language_model", None)
    return lm if isinstance(lm, nn.Module) else model.model.language_model


@contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Point file descriptor 1 at stderr, so stdout holds the JSON alone: building a tiny model prints blank
    lines from native code (the tokenizer trainer's progress), which `contextlib.redirect_stdout` misses."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
