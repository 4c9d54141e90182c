"""Merges an LLM grouper made that WordNet would not: a list for a person to review.

Two members of one synset are held distinct when WordNet knows both and no reading of one is a reading of
the other (their candidate senses are disjoint) and they are not spelling variants of each other
(`lexicon.variant_key`). Members that may be synonyms are put together; a synset whose members fall into two
or more such clusters is a suspect, reported with each cluster's sense as chosen in the context of all the
grouped labels (`senses.choose_senses`): {"synset": "car", "senses": {"car.n.01": ["car", "auto"],
"truck.n.01": ["truck"]}, "definitions": {...}}. Members WordNet does not know are never suspect.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llm2labels.grouping.lexical import lexical_groups
from llm2labels.grouping.lexicon import Lexicon, variant_key
from llm2labels.grouping.senses import SenseModel


def _clusters(members: Sequence[str], lexicon: Lexicon) -> list[list[str]]:
    """Known members joined while they share a candidate sense or a variant key (union-find)."""
    known = [m for m in members if lexicon.senses(m)]
    parent = list(range(len(known)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, a in enumerate(known):
        senses_a = {s.synset for s in lexicon.senses(a)}
        for j in range(i + 1, len(known)):
            b = known[j]
            if variant_key(a) == variant_key(b) or senses_a & {s.synset for s in lexicon.senses(b)}:
                parent[root(j)] = root(i)
    groups: dict[int, list[str]] = {}
    for i, m in enumerate(known):
        groups.setdefault(root(i), []).append(m)
    return list(groups.values())


def suspect_merges(synsets: Sequence[dict[str, Any]], lexicon: Lexicon,
                   model: SenseModel | None = None) -> list[dict[str, Any]]:
    """The suspects among `synsets` (vocabulary.json rows), in their order."""
    found = [(synset, clusters) for synset in synsets
             if len(clusters := _clusters([str(m) for m in synset.get("members") or []], lexicon)) > 1]
    if not found:
        return []
    labels = [str(m) for s in synsets for m in s.get("members") or []]
    sense_of = {m: g.synset for g in lexical_groups(labels, lexicon, model or SenseModel()) for m in g.members}
    suspects = []
    for synset, clusters in found:
        senses: dict[str, list[str]] = {}
        for cluster in clusters:
            sense = next((sense_of[m] for m in cluster if sense_of.get(m)), lexicon.senses(cluster[0])[0].synset)
            senses.setdefault(sense, []).extend(cluster)
        suspects.append({"synset": synset.get("name"), "senses": senses,
                         "definitions": {s: lexicon.definition(s) for s in senses}})
    return suspects
