"""`grouper=wordnet` (lexical only) and `grouper=hybrid` (WordNet + embeddings, the default).

Both start from the same lexical grouping:
1. labels with one variant key (`lexicon.variant_key`: spelling and format variants, plurals) are one term;
2. each term's WordNet sense is chosen from the other terms (`senses.choose_senses`);
3. terms with the same sense are one synset ("sofa" / "couch"); terms WordNet does not know stay apart.
`wordnet` stops there: two terms with different senses are never merged, so concepts WordNet holds apart
(bicycle / motorcycle, car / truck, chair / armchair, sea / lake) stay apart.

`hybrid` embeds every label first (all-MiniLM-L6-v2, `encoder.py`), lets the embeddings inform step 2
(two words used alike may share a reading), and then merges the groups by average cosine similarity under
WordNet's vetoes (`merge.merge_by_embedding`): labels WordNet does not know join the synset they are
closest to (`threshold`), known concepts merge only when their embeddings are very close
(`known_threshold`: "motorbike", a minibike in WordNet, with "motorcycle") and never when WordNet makes them
sisters (car / truck). The hierarchy is `taxonomy.wordnet_hierarchy` in both. A synset's canonical name is
its best-ranked member; each synset records its WordNet sense (`"wordnet"`, null when unknown).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from llm2labels.errors import ConfigError, int_at_least, number_at_least, require
from llm2labels.grouping.embedding import EmbeddingGrouper
from llm2labels.grouping.lexicon import Lexicon, Sense, variant_key
from llm2labels.grouping.merge import Group, merge_by_embedding
from llm2labels.grouping.senses import SenseModel, choose_senses
from llm2labels.grouping.taxonomy import Placed, wordnet_hierarchy
from llm2labels.grouping.vocabulary import build_vocabulary
from llm2labels.normalize import normalize_label
from llm2labels.scoring.rank import RankedLabel


def _terms(labels: Sequence[str]) -> list[list[str]]:
    """Labels with one variant key, in rank order of their best member; a label with no key stays alone."""
    by_key: dict[str, list[str]] = {}
    terms: list[list[str]] = []
    for label in labels:
        key = variant_key(label)
        if key and key in by_key:
            by_key[key].append(label)
            continue
        term = [label]
        terms.append(term)
        if key:
            by_key[key] = term
    return terms


def _candidates(term: Sequence[str], lexicon: Lexicon) -> tuple[Sense, ...]:
    """The union of the members' senses, best-ranked member's first."""
    found: dict[str, Sense] = {}
    for label in term:
        for sense in lexicon.senses(label):
            found.setdefault(sense.synset, sense)
    return tuple(found.values())


def lexical_groups(labels: Sequence[str], lexicon: Lexicon, model: SenseModel,
                   vectors: dict[str, np.ndarray] | None = None) -> list[Group]:
    """Steps 1-3 of the module docstring; groups in rank order of their best member. With `vectors`
    (label embeddings), how alike two terms' best members are informs the sense choice
    (`senses.choose_senses`'s affinity)."""
    terms = _terms(labels)
    candidates = [_candidates(term, lexicon) for term in terms]
    affinity = None
    if vectors is not None:
        def affinity(i: int, j: int) -> float:
            return min(1.0, max(0.0, float(vectors[terms[i][0]] @ vectors[terms[j][0]])))

    chosen = choose_senses([normalize_label(t[0]) for t in terms], candidates, lexicon, model, affinity)
    sense_of = {normalize_label(t[0]): synset for t, synset in zip(terms, chosen) if synset is not None}
    groups: list[Group] = []
    by_synset: dict[str, Group] = {}
    for term, synset in zip(terms, chosen):
        if synset is not None and synset in by_synset:
            by_synset[synset].members.extend(term)
            continue
        below = modifier = None
        split = lexicon.compound(term[0]) if synset is None else None
        if split is not None:  # an unknown compound: a kind of its head (read as the vocabulary reads it)
            below = sense_of.get(split[1]) or next((s.synset for s in lexicon.senses(split[1])), None)
            modifier = sense_of.get(split[0]) or next((s.synset for s in lexicon.senses(split[0])), None)
        group = Group(list(term), synset, below, modifier)
        groups.append(group)
        if synset is not None:
            by_synset[synset] = group
    return groups


class WordNetGrouper:
    """Synsets from WordNet senses chosen in context, spelling variants merged, hypernym hierarchy.

    min_depth: WordNet concepts shallower than this never become hierarchy nodes (entity = 0).
    max_labels: group only the best-ranked this many labels (None = all); the rest stay singletons.
    WordNet is loaded on first use (`wordnet_data.load_wordnet`), so building the grouper is free.
    """

    name = "wordnet"

    def __init__(self, min_depth: int = 6, max_labels: int | None = None, sense_strength: float = 8.0) -> None:
        require({
            f"min_depth must be an integer >= 0, got {min_depth!r}": int_at_least(min_depth, 0),
            f"max_labels must be an integer >= 1 or null (all labels), got {max_labels!r}":
                max_labels is None or int_at_least(max_labels, 1),
            f"sense_strength must be a number >= 0, got {sense_strength!r}": number_at_least(sense_strength, 0.0),
        }, f"grouper={self.name}: ")
        self.min_depth = min_depth
        self.max_labels = max_labels
        self.senses = replace(SenseModel(), strength=float(sense_strength))
        self._lexicon: Lexicon | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_lexicon": None}

    def lexicon(self) -> Lexicon:
        if self._lexicon is None:
            from llm2labels.grouping.wordnet_data import load_wordnet

            self._lexicon = Lexicon(load_wordnet())
        return self._lexicon

    def group(self, labels: Sequence[str]) -> list[Group]:
        return lexical_groups(labels, self.lexicon(), self.senses)

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "wordnet": getattr(self.lexicon().wordnet, "source", None),
                "min_depth": self.min_depth, "max_labels": self.max_labels,
                "sense_strength": self.senses.strength}

    def __call__(self, ranked: list[RankedLabel]) -> dict[str, Any]:
        ordered = [r.label for r in sorted(ranked, key=lambda r: r.rank)]
        head = ordered[: self.max_labels] if self.max_labels is not None else ordered
        groups = self.group(head) + [Group([label]) for label in ordered[len(head):]]
        rank = {label: i for i, label in enumerate(ordered)}
        for g in groups:  # canonical name = best-ranked member (an unknown term may join a later synset)
            g.members.sort(key=rank.__getitem__)
        groups.sort(key=lambda g: rank[g.members[0]])
        placed = [Placed(g.members[0], g.synset, g.below) for g in groups]
        hierarchy = wordnet_hierarchy(placed, self.lexicon(), self.min_depth)
        info = {**self.info(), "synsets": len(groups), "known": sum(g.synset is not None for g in groups)}
        vocab = build_vocabulary(ranked, [(g.members[0], g.members) for g in groups], hierarchy, info)
        sense_of = {g.members[0]: g.synset for g in groups}
        for row in vocab["synsets"]:
            row["wordnet"] = sense_of.get(row["name"])
        return vocab


class HybridGrouper(WordNetGrouper):
    """`wordnet`, plus sentence embeddings for the terms WordNet does not know (see the module docstring).

    threshold: minimum average cosine similarity for an unknown term to join a synset. model, device,
    batch_size: the embedding model (`grouper=embedding`'s settings).
    """

    name = "hybrid"

    def __init__(self, threshold: float = 0.7, known_threshold: float = 0.8, model: str = "all-MiniLM-L6-v2",
                 device: str = "cpu", batch_size: int = 256, min_depth: int = 6, max_labels: int | None = None,
                 sense_strength: float = 8.0) -> None:
        super().__init__(min_depth, max_labels, sense_strength)
        require({f"{key} must be a cosine similarity in [0, 1], got {value!r}":
                 number_at_least(value, 0.0) and value <= 1.0
                 for key, value in (("threshold", threshold), ("known_threshold", known_threshold))},
                f"grouper={self.name}: ")
        try:
            self.embedder = EmbeddingGrouper(threshold=threshold, model=model, device=device,
                                             batch_size=batch_size)
        except ConfigError as e:  # the embedding settings, checked there, under this grouper's name
            raise ConfigError(str(e).replace("grouper=embedding", f"grouper={self.name}", 1)) from e
        self.threshold = self.embedder.threshold
        self.known_threshold = float(known_threshold)

    def info(self) -> dict[str, Any]:
        return {**super().info(), "threshold": self.threshold, "known_threshold": self.known_threshold,
                "model": self.embedder.model}

    def group(self, labels: Sequence[str]) -> list[Group]:
        vectors = dict(zip(labels, self.embedder.embed(list(labels))))
        groups = lexical_groups(labels, self.lexicon(), self.senses, vectors)
        return merge_by_embedding(groups, vectors, self.threshold, self.known_threshold, self.lexicon())
