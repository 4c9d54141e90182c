"""Loading a VLM checkpoint from the Hugging Face cache or hub; a one-line error when neither has it."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlparse

import torch
from transformers import PreTrainedModel, ProcessorMixin

from llm2labels.proposers.base import MissingWeightsError

T = TypeVar("T")

DTYPES: dict[str, torch.dtype | str] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "auto": "auto",
}


# What `load_pretrained` builds: the auto classes of the model and of what reads its input.
KINDS = {"vlm": ("AutoModelForImageTextToText", "AutoProcessor"),  # the proposers
         "causal_lm": ("AutoModelForCausalLM", "AutoTokenizer")}  # the LLM grouper


def load_pretrained(model_id: str, revision: str | None, dtype: str, trust_remote_code: bool,
                    kind: str = "vlm") -> tuple[PreTrainedModel, ProcessorMixin]:
    """`from_pretrained` of model + processor (or tokenizer, `kind="causal_lm"`) on the CPU (`device_map`
    would need `accelerate`); from the local cache first, from the hub only when it is reachable, else
    MissingWeightsError."""
    import transformers

    model_class, reader_class = (getattr(transformers, name) for name in KINDS[kind])

    def load(local_only: bool) -> tuple[PreTrainedModel, ProcessorMixin]:
        kwargs = dict(revision=revision, trust_remote_code=trust_remote_code, local_files_only=local_only)
        transformers.AutoConfig.from_pretrained(model_id, **kwargs)  # fails fast on a missing model
        reader = reader_class.from_pretrained(model_id, **kwargs)
        model = model_class.from_pretrained(model_id, dtype=DTYPES[dtype], **kwargs)
        return model, reader

    return from_cache_or_hub(model_id, load)


def from_cache_or_hub(model_id: str, load: Callable[[bool], T]) -> T:
    """`load(local_only)` from the local cache first; from the hub only when it is reachable; else a one-line
    MissingWeightsError naming the model id and how to get it. Shared by every Hugging Face loader."""
    try:
        return load(True)
    except OSError:
        if _hub_offline():
            raise MissingWeightsError(_missing_message(model_id, "HF_HUB_OFFLINE is set")) from None
        if not _hub_reachable():
            raise MissingWeightsError(_missing_message(model_id, "the hub is unreachable")) from None
    try:
        return load(False)
    except OSError:
        raise MissingWeightsError(_missing_message(model_id, "the download failed")) from None


def _missing_message(model_id: str, why: str) -> str:
    from huggingface_hub.constants import HF_HUB_CACHE

    return (
        f"{model_id}: weights not in the Hugging Face cache ({HF_HUB_CACHE}) and {why}; run "
        f"`hf download {model_id}` on a connected machine, or set HF_HOME to a cache that has it"
    )


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    """A TCP connect to the hub endpoint, so that a machine without network fails in seconds, not after
    the hub client's retries (~30 s). With a proxy configured, we cannot tell: let the client try."""
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection(
            (url.hostname or "huggingface.co", url.port or 443), timeout=timeout_s
        ).close()
        return True
    except OSError:
        return False
