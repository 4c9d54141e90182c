"""The LLM groupers' shared logic (chunk planning, merging, retries) and the Hugging Face backend."""

from __future__ import annotations

import json
import pickle
from typing import Any

import pytest

from llm2labels.errors import ConfigError
from llm2labels.grouping.answers import parse_answer
from llm2labels.grouping.llm import LLMGrouper
from llm2labels.grouping.prompts import (
    ChatGrouper,
    ChunkedGrouping,
    Message,
    Prompts,
    label_cost,
    plan_chunks,
)
from llm2labels.proposers.base import MissingWeightsError
from llm2labels.scoring.rank import RankedLabel


def ranked(labels: list[str]) -> list[RankedLabel]:
    return [RankedLabel(i + 1, lab, 1.0 / (i + 1), 0.5, 0.5, 100 - i, [lab]) for i, lab in enumerate(labels)]


def test_plan_chunks_hand_case() -> None:
    # costs 1, 2, 3, 4, 1 against a budget of 5: [a, bb] (3; + ccc = 6), [ccc] (+ dddd = 7), [dddd, e] (5)
    assert plan_chunks(["a", "bb", "ccc", "dddd", "e"], len, 5) == [["a", "bb"], ["ccc"], ["dddd", "e"]]
    assert plan_chunks(["a", "toolong", "b"], len, 3) == [["a"], ["toolong"], ["b"]]  # oversize: alone
    assert plan_chunks([], len, 5) == []


def test_label_cost_is_the_labels_share_of_the_prompt_list() -> None:
    assert label_cost("car", len) == len('"car", ') == 7
    assert label_cost("café", len) == len('"café", ')  # not escaped to \\u00e9


class ConceptLLM(ChatGrouper):
    """1 token per character; answers group the prompt's labels by a fixed synonym table."""

    name = "concept"
    SAME = {"automobile": "car", "auto": "car", "trees": "tree"}

    def __init__(self, **kw: Any) -> None:
        super().__init__(**{**dict(context_tokens=10_000, max_new_tokens=100, retries=0, max_labels=100,
                                   merge_rounds=3, chunk_tokens=None, system_prompt="S", user_prompt="L={labels}",
                                   correction_prompt="again"), **kw})
        self.seen: list[list[str]] = []

    def render(self, messages: list[Message]) -> str:
        return "".join(m["content"] for m in messages)

    def count_tokens(self, text: str) -> int:
        return len(text)

    def chat(self, messages: list[Message]) -> str:
        labels = json.loads(messages[1]["content"][2:])
        self.seen.append(labels)
        groups: dict[str, list[str]] = {}
        for label in labels:
            groups.setdefault(self.SAME.get(label, label), []).append(label)
        synsets = {members[0]: members for members in groups.values()}
        return json.dumps({"synsets": synsets, "hierarchy": {"vehicle": {labels[0]: {}}}})

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}


def test_chunks_then_a_merge_round_over_canonical_names() -> None:
    labels = ["car", "tree", "automobile", "auto", "sky", "trees"]  # label costs 7, 8, 14, 8, 7, 9
    llm = ConceptLLM(chunk_tokens=40)
    assert ChunkedGrouping(llm).chunks(labels) == [["car", "tree", "automobile", "auto"], ["sky", "trees"]]
    vocab = llm(ranked(labels))
    # chunk 1 -> car {car, automobile, auto}, tree; chunk 2 -> sky, trees; the merge round sees the four
    # canonical names (7 + 8 + 7 + 9 = 31 <= 40 tokens: one prompt) and joins tree and trees.
    assert llm.seen == [["car", "tree", "automobile", "auto"], ["sky", "trees"], ["car", "tree", "sky", "trees"]]
    assert [(s["name"], s["members"]) for s in vocab["synsets"]] == [
        ("car", ["car", "automobile", "auto"]), ("tree", ["tree", "trees"]), ("sky", ["sky"])]
    info = vocab["grouper"]
    assert (info["chunks"], info["merge_rounds"], info["llm_calls"], info["retries"], info["fallbacks"]) == \
        (2, 1, 3, 0, 0)
    assert vocab["dropped"] == [] and vocab["invented"] == ["vehicle"] and info["invented"] == 1
    assert vocab["hierarchy"] == []  # every tree hung a label under the invented "vehicle": contracted away


class ScriptedLLM(ConceptLLM):
    """Answers from a script, in order."""

    def __init__(self, answers: list[str], **kw: Any) -> None:
        super().__init__(**kw)
        self.answers = iter(answers)

    def chat(self, messages: list[Message]) -> str:
        self.seen.append(json.loads(messages[1]["content"][2:]))
        return next(self.answers)


def test_merge_round_omissions_keep_synsets_and_real_labels_are_not_invented() -> None:
    llm = ScriptedLLM([
        '{"synsets": {"car": ["car", "automobile", "auto"], "tree": ["tree"], "bush": ["bush"]}}',  # invents
        '{"synsets": {"trees": ["trees"]}}',  # drops sky
        # the merge round leaves car and sky out, and names automobile, a label but none of its names
        '{"synsets": {"tree": ["tree", "trees", "automobile"]}, "hierarchy": {"tree": {"car": {}}}}',
    ], chunk_tokens=40)
    vocab = llm(ranked(["car", "tree", "automobile", "auto", "sky", "trees"]))
    assert llm.seen[2] == ["car", "tree", "sky", "trees"]
    assert [(s["name"], s["members"]) for s in vocab["synsets"]] == [
        ("car", ["car", "automobile", "auto"]), ("tree", ["tree", "trees"]), ("sky", ["sky"])]
    assert vocab["dropped"] == ["sky"] and vocab["invented"] == ["bush"]
    assert vocab["hierarchy"] == [{"name": "tree", "children": [{"name": "car", "children": []}]}]


def test_merge_stops_when_nothing_merges_and_at_the_round_limit() -> None:
    llm = ConceptLLM(chunk_tokens=8)  # one label per prompt: no chunk can merge anything
    vocab = llm(ranked(["car", "auto", "sky"]))
    assert llm.seen == [["car"], ["auto"], ["sky"]] and vocab["grouper"]["merge_rounds"] == 0
    llm = ConceptLLM(chunk_tokens=40, merge_rounds=0)
    vocab = llm(ranked(["car", "tree", "automobile", "auto", "sky", "trees"]))
    assert len(llm.seen) == 2 and len(vocab["synsets"]) == 4


def test_labels_beyond_max_labels_stay_singletons_unseen() -> None:
    llm = ConceptLLM(max_labels=2)
    vocab = llm(ranked(["car", "sky", "automobile"]))
    assert llm.seen == [["car", "sky"]]
    assert [s["members"] for s in vocab["synsets"]] == [["car"], ["sky"], ["automobile"]]
    assert vocab["grouper"]["ungrouped"] == 1 and vocab["dropped"] == []


def test_config_errors_are_one_line() -> None:
    with pytest.raises(ConfigError, match=r"context_tokens must be a whole number > max_new_tokens \(512\)"):
        LLMGrouper(context_tokens=512, max_new_tokens=512)
    with pytest.raises(ConfigError, match="retries must be a whole number >= 0, got 'abc'"):
        LLMGrouper(retries="abc")
    with pytest.raises(ConfigError, match="{labels}"):
        LLMGrouper(user_prompt="group these")
    with pytest.raises(ConfigError, match="dtype"):
        LLMGrouper(dtype="int3")
    with pytest.raises(ConfigError, match="no room for labels"):
        ConceptLLM(context_tokens=120, max_new_tokens=100, system_prompt="S" * 30)(ranked(["car"]))


def tiny(**kw: Any) -> LLMGrouper:
    return LLMGrouper(**{**dict(model="tiny", dtype="float32", device="cpu"), **kw})


def test_tiny_lm_end_to_end_chunks_retries_and_falls_back() -> None:
    labels = [f"{w} {k}" for k in range(9) for w in ("tree", "sky", "car", "wall", "road")]  # 45 labels
    grouper = tiny(context_tokens=448, max_new_tokens=12, retries=2)
    prompts: list[str] = []
    answers: list[str] = []
    generate = grouper.generate

    def recording(prompt: str) -> str:
        prompts.append(prompt)
        answers.append(generate(prompt))
        return answers[-1]

    grouper.generate = recording  # type: ignore[method-assign]
    vocab = grouper(ranked(labels))
    info = vocab["grouper"]
    chunks = info["chunks"]
    assert chunks > 1 and all(parse_answer(a) is None for a in answers)  # gibberish, never a grouping
    # every chunk: 1 question + 2 corrections, then singletons; nothing merged, so no merge round
    assert info["llm_calls"] == len(answers) == chunks * (1 + 2)
    assert (info["retries"], info["fallbacks"], info["merge_rounds"]) == (chunks * 2, chunks, 0)
    assert [s["members"] for s in vocab["synsets"]] == [[label] for label in labels]
    assert vocab["dropped"] == [] and vocab["invented"] == [] and vocab["hierarchy"] == []
    assert max(grouper.count_tokens(p) for p in prompts) + 12 <= 448  # every prompt fits the context
    assert "<|assistant|>" in prompts[1] and prompts[1].count("<|user|>") == 2  # the correction exchange


def test_scripted_answers_retry_once_then_drop_and_invent() -> None:
    grouper = tiny(retries=2)
    script = iter(["Sure, here you go: synsets = car and automobile",
                   '```json\n{"synsets": {"car": ["car", "automobile", "scooter"], "tree": ["tree"], '
                   '"plant": ["plant"]}, "hierarchy": {"plant": {"tree": {}}}}\n```'])
    prompts: list[str] = []
    grouper.generate = lambda prompt: prompts.append(prompt) or next(script)  # type: ignore[method-assign]
    vocab = grouper(ranked(["car", "tree", "automobile", "sky", "plant"]))
    assert [(s["name"], s["members"]) for s in vocab["synsets"]] == [
        ("car", ["car", "automobile"]), ("tree", ["tree"]), ("sky", ["sky"]), ("plant", ["plant"])]
    assert vocab["invented"] == ["scooter"] and vocab["dropped"] == ["sky"]
    assert vocab["hierarchy"] == [{"name": "plant", "children": [{"name": "tree", "children": []}]}]
    info = vocab["grouper"]
    assert (info["chunks"], info["llm_calls"], info["retries"], info["fallbacks"]) == (1, 2, 1, 0)
    assert (info["dropped"], info["invented"], info["model"]) == (1, 1, "tiny")
    assert "synsets = car and automobile" in prompts[1] and Prompts().correction in prompts[1]


def test_correction_quotes_a_long_answer_shortened_to_fit() -> None:
    grouper = tiny(context_tokens=512, max_new_tokens=32, retries=1)
    replies = iter(["x" * 5000, "still no json"])
    prompts: list[str] = []
    grouper.generate = lambda prompt: prompts.append(prompt) or next(replies)  # type: ignore[method-assign]
    vocab = grouper(ranked(["car", "tree"]))
    assert vocab["grouper"]["fallbacks"] == 1 and "xxxx" in prompts[1]
    assert grouper.count_tokens(prompts[1]) + 32 <= 512


def test_render_without_a_system_role_or_without_a_template() -> None:
    grouper = tiny()  # its own deep copy of the cached tokenizer: changing it here leaks nowhere
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    grouper.tokenizer.chat_template = (  # Gemma-like: refuses a system turn
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
        "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}")
    assert grouper.render(messages) == "[user] S\n\nU\n"
    grouper.tokenizer.chat_template = None  # a base model
    assert grouper.render(messages) == "<s>System: S\n\nUser: U\n\nAssistant:"


def test_picklable_before_and_after_loading() -> None:
    grouper = tiny()
    grouper.setup()
    clone = pickle.loads(pickle.dumps(grouper))
    assert clone._model is None and clone.model_id == "tiny" and grouper._model is not None


def test_missing_weights_offline_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingWeightsError) as info:
        LLMGrouper(model="llm2labels-tests/no-such-chat-model")(ranked(["car"]))
    message = str(info.value)
    assert "\n" not in message and "hf download llm2labels-tests/no-such-chat-model" in message


def test_grouper_configs_instantiate(make_cfg: Any) -> None:
    from hydra.utils import instantiate

    from llm2labels.grouping.openai_compat import OpenAICompatGrouper

    llm, small, remote = (instantiate(make_cfg(f"grouper={g}").grouper) for g in ("llm", "tiny_llm", "openai"))
    assert isinstance(llm, LLMGrouper) and llm.prompts == Prompts()  # the yaml's prompts are the defaults
    assert (llm.model_id, llm.context_tokens, llm.max_new_tokens, llm.retries) == \
        ("meta-llama/Llama-2-7b-chat-hf", 4096, 1024, 2)
    assert (small.model_id, small.context_tokens, small.dtype, small.device) == ("tiny", 512, "float32", "cpu")
    assert isinstance(remote, OpenAICompatGrouper) and remote.url == "http://localhost:8000/v1/chat/completions"


def test_merges_of_distinct_wordnet_synsets_are_reported_as_suspects() -> None:
    llm = ScriptedLLM(['{"synsets": {"car": ["car", "automobile", "truck"], "sofa": ["sofa", "couch"],'
                       ' "gizmo": ["gizmo", "qzxv"]}}'])
    vocab = llm(ranked(["car", "automobile", "truck", "sofa", "couch", "gizmo", "qzxv"]))
    # car.n.01 holds "automobile"; truck.n.01 is another synset; sofa.n.01 holds "couch"; "qzxv" is unknown
    assert [(s["synset"], s["senses"]) for s in vocab["suspects"]] == [
        ("car", {"car.n.01": ["car", "automobile"], "truck.n.01": ["truck"]})]
    assert vocab["suspects"][0]["definitions"]["truck.n.01"] == "an automotive vehicle suitable for hauling"
    assert vocab["grouper"]["suspects"] == 1


def test_suspects_are_null_when_wordnet_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    from llm2labels.grouping import wordnet_data

    def missing() -> None:
        raise ConfigError("WordNet not found (...): reinstall llm2labels")

    monkeypatch.setattr(wordnet_data, "load_wordnet", missing)
    vocab = ScriptedLLM(['{"synsets": {"car": ["car", "truck"]}}'])(ranked(["car", "truck"]))
    assert vocab["suspects"] is None and vocab["grouper"]["suspects"].startswith("not checked: WordNet not found")
    assert [s["members"] for s in vocab["synsets"]] == [["car", "truck"]]  # the LLM's work is kept
