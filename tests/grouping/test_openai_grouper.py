"""The OpenAI-compatible grouper against a scripted chat-completions server on 127.0.0.1."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from loopback import loopback_server

from llm2labels.errors import ConfigError
from llm2labels.grouping.openai_compat import GrouperError, OpenAICompatGrouper
from llm2labels.scoring.rank import RankedLabel

GOOD = '{"synsets": {"car": ["car", "automobile"], "sky": ["sky"]}, "hierarchy": {}}'
LABELS = ["car", "sky", "automobile"]


class Script:
    """Replies in order, one per request: (HTTP status, answer text or raw body, seconds to wait first)."""

    def __init__(self, replies: list[tuple[int, str, float]]) -> None:
        self.replies = list(replies)
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []  # (headers, JSON body) received


@pytest.fixture
def server() -> Iterator[tuple[str, Script]]:
    script = Script([])

    def respond(path: str, body: dict[str, Any]) -> tuple[int, bytes, float]:
        status, text, delay = script.replies.pop(0) if script.replies else (200, GOOD, 0.0)
        payload = (json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]})
                   if status == 200 else text)
        return status, payload.encode(), delay

    with loopback_server(respond, script.requests) as url:
        yield url, script


def ranked(labels: list[str]) -> list[RankedLabel]:
    return [RankedLabel(i + 1, lab, 1.0 / (i + 1), 0.5, 0.5, 9 - i, [lab]) for i, lab in enumerate(labels)]


def grouper(url: str, **kw: Any) -> OpenAICompatGrouper:
    return OpenAICompatGrouper(**{**dict(model="test-model", base_url=url, timeout=5.0, backoff_s=0.01,
                                         api_key_env="LLM2LABELS_TEST_KEY"), **kw})


def synsets(vocab: dict[str, Any]) -> list[tuple[str, list[str]]]:
    return [(s["name"], s["members"]) for s in vocab["synsets"]]


def test_good_answer(server: tuple[str, Script], monkeypatch: pytest.MonkeyPatch) -> None:
    url, script = server
    monkeypatch.delenv("LLM2LABELS_TEST_KEY", raising=False)
    vocab = grouper(url, temperature=0.2, max_new_tokens=300)(ranked(LABELS))
    assert synsets(vocab) == [("car", ["car", "automobile"]), ("sky", ["sky"])]
    assert vocab["grouper"]["llm_calls"] == 1 and vocab["grouper"]["base_url"] == url
    headers, body = script.requests[0]
    assert "Authorization" not in headers  # no key set: none sent (local servers)
    assert (body["model"], body["temperature"], body["max_tokens"]) == ("test-model", 0.2, 300)
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert '["car", "sky", "automobile"]' in body["messages"][1]["content"]


def test_authorization_header_when_the_key_is_set(server: tuple[str, Script],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    url, script = server
    monkeypatch.setenv("LLM2LABELS_TEST_KEY", "sk-test-123")
    grouper(url)(ranked(LABELS))
    assert script.requests[0][0]["Authorization"] == "Bearer sk-test-123"


def test_malformed_answer_then_good_one_takes_the_correction_path(server: tuple[str, Script]) -> None:
    url, script = server
    script.replies = [(200, "Sure! The car and the automobile are the same.", 0.0), (200, GOOD, 0.0)]
    vocab = grouper(url)(ranked(LABELS))
    assert synsets(vocab) == [("car", ["car", "automobile"]), ("sky", ["sky"])]
    info = vocab["grouper"]
    assert (info["llm_calls"], info["retries"], info["fallbacks"]) == (2, 1, 0)
    messages = script.requests[1][1]["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[2]["content"] == "Sure! The car and the automobile are the same."


def test_http_500_is_retried(server: tuple[str, Script]) -> None:
    url, script = server
    script.replies = [(500, "overloaded", 0.0), (503, "still loading", 0.0), (200, GOOD, 0.0)]
    vocab = grouper(url, max_retries=2)(ranked(LABELS))
    assert synsets(vocab)[0] == ("car", ["car", "automobile"])
    assert len(script.requests) == 3 and vocab["grouper"]["llm_calls"] == 1  # one LLM call, three HTTP tries


def test_http_400_is_not_retried(server: tuple[str, Script]) -> None:
    url, script = server
    script.replies = [(400, '{"error": "max_tokens is too large"}', 0.0)]
    with pytest.raises(GrouperError) as info:
        grouper(url, max_retries=3)(ranked(LABELS))
    assert len(script.requests) == 1
    assert str(info.value).startswith(f"{url}/chat/completions: HTTP 400") and "\n" not in str(info.value)


def test_timeouts_are_retried_then_fail_in_one_line_naming_the_url(server: tuple[str, Script]) -> None:
    url, script = server
    script.replies = [(200, GOOD, 1.0)] * 3
    start = time.monotonic()
    with pytest.raises(GrouperError) as info:
        grouper(url, timeout=0.2, max_retries=2)(ranked(LABELS))
    message = str(info.value)
    assert time.monotonic() - start < 3 and len(script.requests) == 3
    assert "\n" not in message and f"{url}/chat/completions" in message and "3 attempts" in message


def test_refused_connection_fails_in_one_line() -> None:
    with pytest.raises(GrouperError, match=r"http://127\.0\.0\.1:9/v1/chat/completions: no answer after 2"):
        grouper("http://127.0.0.1:9/v1", max_retries=1)(ranked(LABELS))


def test_chunking_uses_the_chars_per_token_estimate(server: tuple[str, Script]) -> None:
    url, script = server
    script.replies = [(200, "no", 0.0)] * 10
    labels = [f"label number {i}" for i in range(40)]  # '"label number 12", ' = 18-19 chars: 5 tokens each
    g = grouper(url, context_tokens=500, max_new_tokens=100, chars_per_token=4.0, retries=0)
    overhead = g.count_tokens(g.render(g.prompts.ask([])))  # retries=0: no correction exchange to fit
    per_chunk = (500 - 100 - overhead) // 5
    vocab = g(ranked(labels))
    sent = [json.loads(body["messages"][1]["content"].split("first:\n")[1].split("\n")[0])
            for _, body in script.requests]
    assert 1 < per_chunk < 40 and [len(c) for c in sent] == [len(labels[i:i + per_chunk])
                                                             for i in range(0, 40, per_chunk)]
    assert vocab["grouper"]["chunks"] == len(sent) and sum(sent, []) == labels
    assert vocab["grouper"]["fallbacks"] == len(sent)  # "no" is no grouping: singletons, no merge round
    for _, body in script.requests:  # each request within the estimated context
        assert g.count_tokens(g.render(body["messages"])) + 100 <= 500


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="base_url"):
        OpenAICompatGrouper(base_url="localhost:8000")
    with pytest.raises(ConfigError, match="chars_per_token"):
        OpenAICompatGrouper(chars_per_token=0)
