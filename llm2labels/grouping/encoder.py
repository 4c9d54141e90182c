"""The packaged all-MiniLM-L6-v2 as a plain Transformers model: mean pooling, then L2 normalisation.

That is the whole of the model's sentence-transformers pipeline (its modules.json: Transformer, mean
Pooling, Normalize; inputs cut at 256 tokens), so the vectors equal `SentenceTransformer(...).encode(...,
normalize_embeddings=True)` (tests/grouping/test_encoder.py checks it to 1e-5). Importing
sentence-transformers costs ~4 s on a 2-core machine and Transformers alone ~2 s, which matters when a
command groups a list in a few seconds; any other model still goes through sentence-transformers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

MAX_TOKENS = 256  # the model's max_seq_length (sentence_bert_config.json)


class MeanPoolEncoder:
    """`encode(texts, batch_size=...)` -> float32 (n, d), rows of unit length, in input order."""

    def __init__(self, folder: Path, device: str = "cpu") -> None:
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging

        bars = logging.is_progress_bar_enabled()
        logging.disable_progress_bar()  # no "Loading weights" bar on stderr for a 90 MB local model
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
            self.model = AutoModel.from_pretrained(str(folder)).to(device).eval()
        finally:
            if bars:
                logging.enable_progress_bar()
        self.device = device

    def encode(self, texts: Sequence[str], batch_size: int = 256, **_: Any) -> np.ndarray:
        import torch

        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths pad less
        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                rows = order[start:start + batch_size]
                batch = self.tokenizer([texts[i] for i in rows], padding=True, truncation=True,
                                       max_length=MAX_TOKENS, return_tensors="pt").to(self.device)
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out[rows] = pooled.float().cpu().numpy()
        return out
