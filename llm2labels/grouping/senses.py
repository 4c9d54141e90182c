"""Choose each term's WordNet sense from the other terms of the same vocabulary.

A label alone is ambiguous ("mouse": the rodent or the device); among "keyboard" and "monitor" it is the
device. Each term t gets, for each of its candidate senses s:

    score(s) = log prior(s) + strength * (evidence(s) - taken * taken(s))

- prior(s) = log(1 + log(1 + count)) + rank * log(rank_decay) - [figurative]: WordNet's own order (most
  frequent sense first) and the SemCor count of the label's lemma in s, flattened so that context can
  overturn them. Image labels name visible things, so an abstract reading ("television" as broadcasting) or
  a person reading of a word that is not first of all a person ("dog" as a man) loses `figurative`.
- evidence(s): the mean, over the `neighbours` other terms closest to s, of p * decay^hops, where hops is
  the path length between s and the other term's sense s' through their lowest common ancestor along
  `Lexicon.chain` (0 for the same synset) and p the other term's probability of s' relative to its likeliest
  reading. A path length, unlike a depth ratio such as Wu-Palmer's, does not make the deep animal branches
  look alike ("man" among "dog" and "horse" stays the adult male, not the genus Homo). A term that names an
  ancestor of s counts `below` times as much: vocabularies list kinds side by side (keyboard, mouse), not a
  word and a slang kind of it ("dog" among "man" and "woman" stays the animal). Common ancestors shallower
  than `min_depth` (entity, physical entity, object, whole, ...) make no neighbours. Only the nearest few
  terms count, so a big vocabulary does not pull every word towards its most populous branch (a dataset of
  furniture would otherwise read "dog" as an andiron).
- taken(s), for a sense that is not the term's first: how surely another term reads s as *its* first sense
  ("guy" names guy.n.01, one reading of "cat"). A vocabulary that lists both words most likely means two
  things. Terms whose embeddings are at least `alike` similar (when the grouper has embeddings) are exempt:
  "pavement" may still be read as a sidewalk beside "sidewalk".
- A compound whose last words are the term ("railway car" for "car") is no neighbour of it and takes
  nothing from it: it names a kind of the head word's thing, so that it shares a synset with one reading of
  the head word ("car" as a railway car) says nothing about which reading the dataset means.
The scores become probabilities (softmax) and are recomputed for `rounds` rounds, so that terms settle on
readings that support each other; each term then takes its best sense. The constants were chosen with
`experiments.grouping_benchmark` and a set of hand-checked vocabularies (tests/grouping/test_senses.py).
"""

from __future__ import annotations

import heapq
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from llm2labels.grouping.lexicon import Lexicon, Sense


@dataclass(frozen=True)
class SenseModel:
    """The constants of the score in the module docstring."""

    strength: float = 8.0  # weight of the context against the prior (0: WordNet's first sense, counts aside)
    decay: float = 0.7  # similarity lost per hop between two senses
    neighbours: int = 3  # nearest terms averaged into the evidence
    below: float = 0.25  # weight of a term that names an ancestor of the sense
    taken: float = 0.5  # weight of another term already naming the sense
    alike: float = 0.6  # embedding cosine from which two terms do not take each other's readings
    figurative: float = 1.5  # log-prior cost of an abstract reading, or a person reading of a non-person
    rank_decay: float = 0.75  # prior ratio between consecutive senses in WordNet's order
    min_depth: int = 5  # common ancestors shallower than this make no neighbours
    rounds: int = 2  # rounds of re-reading the other terms with their updated probabilities
    bucket_cap: int = 64  # senses looked at per common ancestor, most probable first


# Lexicographer files of readings an image label rarely means: abstractions, and people for a word whose
# first reading is not a person (the figurative "dog" = a man, "mouse" = a timid person, "cat" = a guy).
ABSTRACT = frozenset(f"noun.{n}" for n in (
    "act attribute cognition communication event feeling motive possession process quantity relation "
    "state time group").split())


def _prior(senses: Sequence[Sense], model: SenseModel) -> list[float]:
    """log prior of each sense: WordNet's order and counts, and the image-label reading (see `ABSTRACT`)."""
    first_is_person = bool(senses) and senses[0].lexname == "noun.person"
    out = []
    for rank, s in enumerate(senses):
        value = math.log(1.0 + math.log1p(s.count)) + rank * math.log(model.rank_decay)
        if s.lexname in ABSTRACT or (s.lexname == "noun.person" and not first_is_person):
            value -= model.figurative
        out.append(value)
    return out


def _softmax(scores: list[float]) -> list[float]:
    top = max(scores)
    weights = [math.exp(x - top) for x in scores]
    total = sum(weights)
    return [w / total for w in weights]


def _compounds(texts: Sequence[str]) -> dict[int, set[int]]:
    """term index -> indexes of the terms that are it with words in front ("railway car" for "car")."""
    index = {text: i for i, text in enumerate(texts)}
    found: dict[int, set[int]] = defaultdict(set)
    for i, text in enumerate(texts):
        words = text.split()
        for start in range(1, len(words)):
            head = index.get(" ".join(words[start:]))
            if head is not None and head != i:
                found[head].add(i)
    return found


class _Index:
    """Every candidate sense of every term, filed under each of its ancestors down to `min_depth`."""

    def __init__(self, candidates: Sequence[Sequence[Sense]], lexicon: Lexicon, min_depth: int) -> None:
        self.depth: dict[str, int] = {}
        self.chains: dict[str, tuple[str, ...]] = {}
        self.under: dict[str, list[tuple[int, int]]] = defaultdict(list)  # ancestor -> [(term, sense index)]
        for t, senses in enumerate(candidates):
            for j, sense in enumerate(senses):
                chain = self.chains.get(sense.synset)
                if chain is None:
                    full = lexicon.chain(sense.synset)
                    self.depth[sense.synset] = len(full) - 1
                    chain = self.chains[sense.synset] = tuple(
                        a for d, a in enumerate(full) if len(full) - 1 - d >= min_depth)
                    for d, a in enumerate(full):
                        self.depth.setdefault(a, len(full) - 1 - d)
                for a in chain:
                    self.under[a].append((t, j))

    def sort(self, probs: Sequence[Sequence[float]]) -> None:
        """Most probable senses first in every bucket, so that a capped scan sees the likely readings."""
        for entries in self.under.values():
            entries.sort(key=lambda e: -probs[e[0]][e[1]])


def _evidence(t: int, synset: str, index: _Index, candidates: Sequence[Sequence[Sense]],
              probs: Sequence[Sequence[float]], skip: set[int], model: SenseModel) -> float:
    """Mean similarity of the `neighbours` terms closest to `synset` (see the module docstring)."""
    best: dict[int, float] = {}
    own_depth = index.depth[synset]
    for a in index.chains[synset]:
        up = own_depth - index.depth[a]
        for other, j in index.under[a][: model.bucket_cap]:
            if other == t or other in skip:
                continue
            down = index.depth[candidates[other][j].synset] - index.depth[a]
            p = probs[other][j] / max(probs[other])  # relative to the term's likeliest reading
            value = p * model.decay ** (up + down)
            if down == 0 and up > 0:  # the other term names an ancestor of s ("man" for "dog" as a man)
                value *= model.below
            if value > best.get(other, 0.0):
                best[other] = value
        if len(best) >= model.neighbours:  # higher ancestors only give longer paths
            break
    top = heapq.nlargest(model.neighbours, best.values())
    return sum(top) / max(1, min(model.neighbours, len(candidates) - 1 - len(skip)))


def _taken(t: int, synset: str, firsts: dict[str, list[int]], probs: Sequence[Sequence[float]],
           skip: set[int], affinity: Callable[[int, int], float] | None, alike: float) -> float:
    """How surely another term (not a compound of t, not used alike) reads `synset` as its first sense."""
    return max((probs[o][0] for o in firsts.get(synset, ())
                if o != t and o not in skip and not (affinity is not None and affinity(t, o) >= alike)),
               default=0.0)


def choose_senses(texts: Sequence[str], candidates: Sequence[Sequence[Sense]], lexicon: Lexicon,
                  model: SenseModel = SenseModel(), affinity: Callable[[int, int], float] | None = None
                  ) -> list[str | None]:
    """The chosen synset name per term (None where a term has no sense). `texts[i]` is term i's
    normalised text and `candidates[i]` its senses in WordNet's order. `affinity(i, j)`, when given, says
    how alike terms i and j are used (their embeddings' cosine similarity, clipped to [0, 1]): terms at
    least `model.alike` alike do not discount each other's readings (`taken`)."""
    index = _Index(candidates, lexicon, model.min_depth)
    priors = [_prior(senses, model) for senses in candidates]
    compounds = _compounds(texts)
    firsts: dict[str, list[int]] = defaultdict(list)  # synset -> terms whose first sense it is
    for t, senses in enumerate(candidates):
        if senses:
            firsts[senses[0].synset].append(t)
    probs = [_softmax(p) if p else [] for p in priors]
    scores = priors
    for _ in range(model.rounds if model.strength > 0 else 0):
        index.sort(probs)
        scores = []
        for t, senses in enumerate(candidates):
            if len(senses) < 2:
                scores.append(list(priors[t]))
                continue
            skip = compounds.get(t, set())
            scores.append([prior + model.strength * (
                _evidence(t, s.synset, index, candidates, probs, skip, model)
                - (rank > 0) * model.taken * _taken(t, s.synset, firsts, probs, skip, affinity, model.alike))
                for rank, (s, prior) in enumerate(zip(senses, priors[t]))])
        probs = [_softmax(s) if s else [] for s in scores]
    return [senses[max(range(len(s)), key=s.__getitem__)].synset if senses else None
            for senses, s in zip(candidates, scores)]
