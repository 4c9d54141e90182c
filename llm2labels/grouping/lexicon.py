"""What WordNet says about a label: its noun senses, its spelling variants, and where a sense sits in the tree.

- **Variant key**: the label normalised (`normalize_label`), each word in American spelling (`breame`'s
  British/American table: "colour" -> "color", "centre" -> "center"), hyphens and spaces removed. Labels with
  one key are one term: "cell phone" / "cellphone" / "cell-phone", "colour" / "color", "trees" / "tree".
- **Senses**: WordNet's noun synsets for the label, looked up as written ("palm_tree"), with hyphens as
  spaces and removed, in American spelling and collapsed ("cell phone" is not a WordNet lemma, "cellphone"
  is). NLTK's `morphy` also finds base forms ("bicycles" -> "bicycle"). Senses keep WordNet's order (most
  frequent first) and the SemCor count of the label's own lemma in each, the prior of `senses.py`.
- Last resorts for a label WordNet lacks: its last word in the plural ("scissor" -> "scissors"), and for a
  compound whose first words name a kind of what its last words name ("apple fruit", "oak tree"), the
  first words' senses that are such a kind.
- **Compound**: a label WordNet does not know split into a modifier and its longest known word suffix, the
  head ("wooden" + "bench"): it names a kind of the head's thing.
- **Chain**: a synset's path to the root through its deepest hypernym at each step (instance hypernyms
  included: "Paris" is an instance of a city; the first by name on a tie), so that every synset has one
  parent and the hierarchy is a tree.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from llm2labels.normalize import normalize_label

MAX_SENSES = 8  # senses kept per label: later ones are rare and only cost time


@functools.lru_cache(maxsize=1 << 16)
def american(word: str) -> str:
    """American spelling of one lower-case word (itself when it has none)."""
    from breame.spelling import BRITISH_ENGLISH_SPELLINGS

    return BRITISH_ENGLISH_SPELLINGS.get(word, word)


def _words(label: str) -> list[str]:
    return normalize_label(label).replace("-", " ").split()


def variant_key(label: str) -> str:
    """One key per spelling/format variant group (see the module docstring); '' for a non-label."""
    return "".join(american(w) for w in _words(label))


@dataclass(frozen=True)
class Sense:
    """One noun sense of a label: the synset's name ("mouse.n.04"), the label lemma's SemCor count, and the
    synset's lexicographer file ("noun.artifact", "noun.person", ...)."""

    synset: str
    count: int
    lexname: str = "noun.Tops"


class Lexicon:
    """WordNet noun lookups with per-process caches; `wordnet` is NLTK's reader (`wordnet_data.load_wordnet`)."""

    def __init__(self, wordnet: Any) -> None:
        self.wordnet = wordnet
        self._synsets: dict[str, Any] = {}
        self._senses: dict[str, tuple[Sense, ...]] = {}
        self._chains: dict[str, tuple[str, ...]] = {}
        self._counts: dict[str, int] | None = None

    def synset(self, name: str) -> Any:
        found = self._synsets.get(name)
        if found is None:
            found = self._synsets[name] = self.wordnet.synset(name)
        return found

    def forms(self, label: str) -> list[str]:
        """The lemma spellings tried for `label`, in order (WordNet writes spaces as underscores)."""
        text = normalize_label(label)
        words = _words(label)
        if not text:
            return []
        candidates = [text, text.replace("-", " "), text.replace("-", ""),
                      " ".join(american(w) for w in words), "".join(american(w) for w in words)]
        return list(dict.fromkeys(c.replace(" ", "_") for c in candidates if c))

    def senses(self, label: str) -> tuple[Sense, ...]:
        """The label's noun senses (at most MAX_SENSES), most frequent first; () when WordNet lacks it."""
        text = normalize_label(label)
        cached = self._senses.get(text)
        if cached is not None:
            return cached
        found: dict[str, Sense] = {}
        for form in self.forms(text):
            for name, sense in self._lookup(form).items():
                found.setdefault(name, sense)
        if not found:
            found = self._last_resort(text)
        result = self._senses[text] = tuple(list(found.values())[:MAX_SENSES])
        return result

    def _lookup(self, form: str) -> dict[str, Sense]:
        found: dict[str, Sense] = {}
        for synset in self.wordnet.synsets(form, pos="n"):
            self._synsets.setdefault(synset.name(), synset)
            found.setdefault(synset.name(), Sense(synset.name(), self._lemma_count(synset, form), synset.lexname()))
        return found

    def _last_resort(self, text: str) -> dict[str, Sense]:
        """Senses of the plural ("scissor"), else of a kind-of compound's first words ("apple fruit")."""
        head, _, last = text.rpartition(" ")
        plural = _plural(last)
        if plural and plural != last:
            found = self._lookup((f"{head} {plural}" if head else plural).replace(" ", "_"))
            if found:
                return found
        split = self.compound(text)
        if split is None:
            return {}
        modifier, head_word = split
        kinds_of = {s.synset for s in self.senses(head_word)}
        return {s.synset: s for s in self.senses(modifier) if kinds_of & self.ancestors(s.synset)}

    def _lemma_count(self, synset: Any, form: str) -> int:
        """SemCor count of `form`'s lemma in `synset` (0 when the form reached it through morphy or is
        untagged). NLTK's `Lemma.count` binary-searches cntlist.rev through a slow stream on every call;
        the file (sense key, sense number, count per line) is read once instead, through the same reader."""
        if self._counts is None:
            self._counts = {}
            try:
                with self.wordnet.open("cntlist.rev") as lines:
                    for line in lines:  # "sense_key sense_number tag_count"
                        fields = line.split()
                        if len(fields) == 3:
                            self._counts[fields[0]] = int(fields[2])
            except (OSError, ValueError):  # a WordNet copy without counts: the order alone is the prior
                self._counts = {}
        wanted = form.lower()
        for lemma in synset.lemmas():
            if lemma.name().lower() == wanted:
                return self._counts.get(lemma.key(), 0)
        return 0

    def ancestors(self, name: str) -> set[str]:
        """Every hypernym of the synset, on every path to the root."""
        return {a.name() for path in self.synset(name).hypernym_paths() for a in path[:-1]}

    def compound(self, label: str) -> tuple[str, str] | None:
        """(modifier, head) with head the longest proper word suffix WordNet knows ("wooden", "bench");
        None for a single word or when no suffix is known."""
        words = normalize_label(label).split()
        for start in range(1, len(words)):
            suffix = " ".join(words[start:])
            if self.senses(suffix):  # as a label of its own ("xyz a" has no head: "a" is no label)
                return " ".join(words[:start]), suffix
        return None

    def chain(self, name: str) -> tuple[str, ...]:
        """`name` and its ancestors up to the root, through the deepest hypernym at each step."""
        cached = self._chains.get(name)
        if cached is not None:
            return cached
        synset = self.synset(name)
        parents = synset.hypernyms() + synset.instance_hypernyms()
        if not parents:
            chain: tuple[str, ...] = (name,)
        else:
            # NLTK keeps a synset's pointers in a set, so their order changes with the hash seed: the
            # deepest parent, and the first by name among equally deep ones, keeps the chain reproducible.
            best = max(sorted(parents, key=lambda p: p.name()), key=lambda p: p.max_depth())
            self._synsets.setdefault(best.name(), best)
            chain = (name, *self.chain(best.name()))
        self._chains[name] = chain
        return chain

    def depth(self, name: str) -> int:
        """Hops from the root along `chain` (entity.n.01 is 0)."""
        return len(self.chain(name)) - 1

    def lemma(self, name: str) -> str:
        """The synset's first lemma as display text ("palm_tree" -> "palm tree")."""
        return self.synset(name).lemma_names()[0].replace("_", " ")

    def definition(self, name: str) -> str:
        return self.synset(name).definition()


def _plural(word: str) -> str:
    from llm2labels.normalize import _ENGINE

    return _ENGINE.plural_noun(word) if word.isalpha() else ""


