"""What the LLM groupers share: the prompts, fitting the labels into the context, retries and merging.

A chat backend (Hugging Face model, OpenAI-compatible server) only renders messages, counts tokens and
answers; `ChatGrouper.__call__` does the rest. When the labels do not fit one prompt they are split into
rank-ordered chunks (`plan_chunks`), each chunk is grouped on its own, and a merge round then groups the
chunks' canonical names (each name carrying its synset's members along), recursively while that shrinks.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from llm2labels.errors import ConfigError, int_at_least, number_at_least, require
from llm2labels.grouping.answers import ParsedGrouping, Tree, forest, parse_answer
from llm2labels.grouping.vocabulary import build_vocabulary, enforce_coverage
from llm2labels.scoring.rank import RankedLabel

Message = dict[str, str]
Synsets = list[tuple[str, list[str]]]
ANSWER_FORM = ('{"synsets": {"<name>": ["<name>", "<synonym>", ...]}, '
               '"hierarchy": {"<broad name>": {"<narrower name>": {}}}}')
# The defaults are repeated in conf/grouper/llm.yaml (a test keeps the two equal). {labels} is replaced by
# the JSON list of labels; no other braces are special.
DEFAULT_SYSTEM = (
    "You curate the label vocabulary of an image segmentation dataset. "
    "You reply with a single JSON object and no other text."
)
DEFAULT_USER = f"""These candidate labels were proposed for the images of one dataset, most frequent first:
{{labels}}

Group them into synsets. A synset holds the labels that name the same kind of object or region
(synonyms, spelling variants, singular and plural). Name each synset after its clearest label and list
all its members, that label included; a label without synonyms is a synset on its own.
Then arrange the synset names into a hierarchy: put a name under a broader name from the list when it is
a kind or a part of it. Roots are the broadest names; a name with nothing under it maps to {{}}.
Use only the labels above, spelled exactly as given, and put each label in exactly one synset.
Reply in this form:
{ANSWER_FORM}"""
DEFAULT_CORRECTION = f"""Your reply could not be read as the JSON object asked for:
{ANSWER_FORM}
Reply again with that JSON object only, built from the labels given: no explanation, no code fence."""


def format_labels(labels: Sequence[str]) -> str:
    """The label list as it appears in the prompt: a JSON array (quotes keep commas inside labels apart)."""
    return "[" + ", ".join(json.dumps(label, ensure_ascii=False) for label in labels) + "]"


def label_cost(label: str, count_tokens: Callable[[str], int]) -> int:
    """Tokens one label adds to the prompt's list, separator included."""
    return count_tokens(json.dumps(label, ensure_ascii=False) + ", ")


def plan_chunks(labels: Sequence[str], cost: Callable[[str], int], budget: int) -> list[list[str]]:
    """Consecutive, rank-ordered chunks whose summed label cost stays within `budget` tokens.

    Greedy: a chunk takes labels until the next one would overflow. A label costing more than the budget
    on its own still gets a chunk (of one). Every label lands in exactly one chunk, in input order.
    """
    chunks: list[list[str]] = []
    current: list[str] = []
    used = 0
    for label in labels:
        c = cost(label)
        if current and used + c > budget:
            chunks.append(current)
            current, used = [], 0
        current.append(label)
        used += c
    if current:
        chunks.append(current)
    return chunks


@dataclass(frozen=True)
class Prompts:
    """System, user (with a `{labels}` slot) and correction messages."""

    system: str = DEFAULT_SYSTEM
    user: str = DEFAULT_USER
    correction: str = DEFAULT_CORRECTION

    def ask(self, labels: Sequence[str]) -> list[Message]:
        return [{"role": "system", "content": self.system},
                {"role": "user", "content": self.user.replace("{labels}", format_labels(labels))}]

    def correct(self, labels: Sequence[str], answer: str) -> list[Message]:
        """The first exchange, the unreadable answer, and the request to answer again."""
        return [*self.ask(labels), {"role": "assistant", "content": answer},
                {"role": "user", "content": self.correction}]


@dataclass
class Stats:
    """What one grouping run cost and how often the LLM failed."""

    chunks: int = 0  # chunks of the first round
    merge_rounds: int = 0  # rounds over canonical names after it
    llm_calls: int = 0
    retries: int = 0  # correction follow-ups sent
    fallbacks: int = 0  # chunks left as singletons after every retry failed
    dropped: list[str] = field(default_factory=list)  # labels the LLM left out of their first-round chunk
    invented: list[str] = field(default_factory=list)  # names it returned that are no input label at all


class ChatGrouper(ABC):
    """A grouper over any chat LLM; subclasses say how to render, count and answer."""

    name = "chat"

    def __init__(self, *, context_tokens: int = 4096, max_new_tokens: int = 1024, temperature: float = 0.0,
                 retries: int = 2, max_labels: int = 1000, merge_rounds: int = 3, chunk_tokens: int | None = None,
                 system_prompt: str = DEFAULT_SYSTEM, user_prompt: str = DEFAULT_USER,
                 correction_prompt: str = DEFAULT_CORRECTION) -> None:
        """The settings every chat grouper shares (conf/grouper/llm.yaml says what each means)."""
        counts = {"retries": retries, "max_labels": max_labels, "merge_rounds": merge_rounds}
        checks = {
            f"max_new_tokens must be a whole number > 0, got {max_new_tokens!r}": int_at_least(max_new_tokens, 1),
            f"context_tokens must be a whole number > max_new_tokens ({max_new_tokens}), got {context_tokens!r}":
                int_at_least(context_tokens, 2) and int_at_least(max_new_tokens, 1)
                and context_tokens > max_new_tokens,
            f"temperature must be a number >= 0 (0 = greedy), got {temperature!r}": number_at_least(temperature, 0),
            **{f"{key} must be a whole number >= 0, got {value!r}": int_at_least(value, 0)
               for key, value in counts.items()},
            f"chunk_tokens must be null or a whole number > 0, got {chunk_tokens!r}":
                chunk_tokens is None or int_at_least(chunk_tokens, 1),
            "user_prompt must contain the {labels} slot": isinstance(user_prompt, str) and "{labels}" in user_prompt,
        }
        require(checks, f"grouper={self.name}: ")
        self.context_tokens, self.max_new_tokens, self.retries = context_tokens, max_new_tokens, retries
        self.max_labels, self.merge_rounds, self.chunk_tokens = max_labels, merge_rounds, chunk_tokens
        self.temperature = float(temperature)
        self.prompts = Prompts(system_prompt, user_prompt, correction_prompt)

    @abstractmethod
    def render(self, messages: list[Message]) -> str:
        """The text the model reads for these messages (its chat template)."""

    @abstractmethod
    def count_tokens(self, text: str) -> int:
        """Tokens in `text`, exact or estimated."""

    @abstractmethod
    def chat(self, messages: list[Message]) -> str:
        """The model's answer to the messages, at most max_new_tokens long."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Name, model and settings for the vocabulary's grouper record."""

    def __call__(self, ranked: list[RankedLabel]) -> dict[str, Any]:
        """Group the top `max_labels` labels; the rest stay singletons. Returns build_vocabulary's dict."""
        labels = [r.label for r in ranked]
        head, tail = labels[:self.max_labels], labels[self.max_labels:]
        run = ChunkedGrouping(self, head)
        synsets = run.group(head, depth=0) if head else []
        order = {label: i for i, label in enumerate(labels)}
        canonical = {m: name for name, members in synsets for m in members}
        hierarchy = forest(run.trees, canonical, order)
        stats = run.stats
        info = {**self.describe(), "chunks": stats.chunks, "merge_rounds": stats.merge_rounds,
                "llm_calls": stats.llm_calls, "retries": stats.retries, "fallbacks": stats.fallbacks,
                "ungrouped": len(tail)}
        vocab = build_vocabulary(ranked, synsets + [(t, [t]) for t in tail], hierarchy, info)
        # The synsets above already cover every label: report what the LLM itself dropped and invented.
        vocab["dropped"], vocab["invented"] = stats.dropped, stats.invented
        vocab["grouper"].update(dropped=len(stats.dropped), invented=len(stats.invented))
        review(vocab)
        return vocab


def review(vocab: dict[str, Any]) -> None:
    """Add `suspects` (`suspects.suspect_merges`) to an LLM's vocabulary; null, with the reason in the
    grouper record, when WordNet cannot be read (the LLM's work is kept either way)."""
    from llm2labels.grouping.lexicon import Lexicon
    from llm2labels.grouping.suspects import suspect_merges
    from llm2labels.grouping.wordnet_data import load_wordnet

    try:
        vocab["suspects"] = suspect_merges(vocab["synsets"], Lexicon(load_wordnet()))
        vocab["grouper"]["suspects"] = len(vocab["suspects"])
    except ConfigError as e:
        vocab["suspects"] = None
        vocab["grouper"]["suspects"] = f"not checked: {e}"


class ChunkedGrouping:
    """One grouping run: chunking, asking with retries, falling back, merging; counts in `stats`."""

    def __init__(self, grouper: ChatGrouper, labels: Sequence[str] = ()) -> None:
        self.g, self.stats, self.known = grouper, Stats(), set(labels)
        self.trees: list[Tree] = []  # hierarchies of every answer, in the order they came
        self.budget = self._budget()

    def _tokens(self, messages: list[Message]) -> int:
        return self.g.count_tokens(self.g.render(messages))

    def _budget(self) -> int:
        """Label tokens one prompt can hold: context - answer - the prompt around the labels."""
        exchanges = [self.g.prompts.ask([])] + ([self.g.prompts.correct([], "")] if self.g.retries else [])
        overhead = max(self._tokens(messages) for messages in exchanges)  # a correction must fit too
        room = self.g.context_tokens - self.g.max_new_tokens - overhead
        if room <= 0:
            raise ConfigError(f"grouper={self.g.name}: the prompts alone take {overhead} tokens, leaving "
                              f"no room for labels in context_tokens={self.g.context_tokens} minus "
                              f"max_new_tokens={self.g.max_new_tokens}; raise the first or lower the second")
        return min(room, self.g.chunk_tokens) if self.g.chunk_tokens else room

    def chunks(self, labels: Sequence[str]) -> list[list[str]]:
        """`plan_chunks`, then halving any chunk whose rendered prompt still overflows (token merges across
        label boundaries can make the sum of label costs an underestimate)."""
        out: list[list[str]] = []
        todo = plan_chunks(labels, lambda s: label_cost(s, self.g.count_tokens), self.budget)
        while todo:
            chunk = todo.pop(0)
            if len(chunk) > 1 and self._tokens(self.g.prompts.ask(chunk)) + self.g.max_new_tokens > \
                    self.g.context_tokens:
                half = len(chunk) // 2
                todo[:0] = [chunk[:half], chunk[half:]]
            else:
                out.append(chunk)
        return out

    def group(self, labels: list[str], depth: int) -> Synsets:
        """Synsets covering `labels` exactly, each canonical name one of its members."""
        chunks = self.chunks(labels)
        if depth == 0:
            self.stats.chunks = len(chunks)
        order = {label: i for i, label in enumerate(labels)}
        synsets = sorted((s for chunk in chunks for s in self.ask(chunk, depth)),
                         key=lambda s: min(order[m] for m in s[1]))
        names = [name for name, _ in synsets]
        # Stop when one prompt saw everything, when nothing merged (the next round would replay this one),
        # or at the round limit.
        if len(chunks) == 1 or len(names) == len(labels) or depth >= self.g.merge_rounds:
            return synsets
        self.stats.merge_rounds = max(self.stats.merge_rounds, depth + 1)
        members = dict(synsets)
        return [(name, [m for n in group for m in members[n]]) for name, group in self.group(names, depth + 1)]

    def ask(self, chunk: list[str], depth: int = 0) -> Synsets:
        """One chunk's synsets: the LLM's answer, corrected up to `retries` times, else singletons.

        A merge round (depth > 0) that leaves a name out keeps that name's synset as it was: only labels
        left out of their first-round chunk count as dropped.
        """
        answer = self._call(self.g.prompts.ask(chunk))
        parsed = self._usable(answer, chunk)
        for _ in range(self.g.retries):
            if parsed is not None:
                break
            self.stats.retries += 1
            answer = self._call(self.g.prompts.correct(chunk, self._quote(chunk, answer)))
            parsed = self._usable(answer, chunk)
        if parsed is None:
            self.stats.fallbacks += 1
            return [(label, [label]) for label in chunk]
        synsets, dropped, _ = enforce_coverage(chunk, parsed.synsets)
        if depth == 0:
            self.stats.dropped += dropped
        # Invented: named in the synsets or the hierarchy (where it is contracted away) but no input label.
        known = self.known | set(chunk)
        self.stats.invented += [n for n in parsed.names() if n not in known and n not in self.stats.invented]
        self.trees += parsed.hierarchy
        return synsets

    def _call(self, messages: list[Message]) -> str:
        self.stats.llm_calls += 1
        return self.g.chat(messages)

    def _usable(self, answer: str, chunk: list[str]) -> ParsedGrouping | None:
        """The parsed answer, if it parses and names at least one label of the chunk."""
        parsed = parse_answer(answer)
        if parsed is None:
            return None
        parsed = parsed.respelled(chunk)
        return parsed if not set(parsed.names()).isdisjoint(chunk) else None

    def _quote(self, chunk: list[str], answer: str) -> str:
        """The failed answer, shortened until the correction exchange fits the context."""
        for _ in range(8):
            over = self._tokens(self.g.prompts.correct(chunk, answer)) + self.g.max_new_tokens \
                - self.g.context_tokens
            if over <= 0 or not answer:
                break
            tokens = max(self.g.count_tokens(answer), 1)
            answer = answer[: int(len(answer) * max(tokens - over, 0) / tokens * 0.9)]
        return answer
