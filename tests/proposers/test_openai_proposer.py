"""OpenAIProposer against a fake `/v1/chat/completions` server on 127.0.0.1 that returns logprobs."""

from __future__ import annotations

import base64
import io
import json
import math
import pickle
import time
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
from loopback import loopback_server
from PIL import Image

from llm2labels.app import run
from llm2labels.cli import user_error
from llm2labels.errors import ConfigError
from llm2labels.grouping.openai_compat import GrouperError
from llm2labels.openai_http import OpenAIError
from llm2labels.proposers.base import CropRequest
from llm2labels.proposers.openai_api import OpenAIProposer, fit_tokens
from llm2labels.proposers.settings import DEFAULT_PROMPT
from llm2labels.proposers.token_ends import decode_pieces

# The fake model's answers as its tokens' UTF-8 bytes; "é" (c3 a9) is split across two tokens.
ANSWERS = [
    [b"['", b"caf\xc3", b"\xa9", b"',", b" '", b"sky", b"']"],  # ['café', 'sky']
    [b"['", b"tree", b"',", b" '", b"road", b"']"],  # ['tree', 'road']
    [b"['", b"sky", b"']"],  # ['sky']
]
CAFE_ENDS = [2, 5, 6, 8, 10, 13, 15]  # by hand: "['" 2, "caf" 5, "é" 6, "'," 8, " '" 10, "sky" 13, "']" 15


def answer_of(seed: int) -> int:
    """The fake server's choice k of a request with `seed` is answer (seed + k) % 3."""
    return seed % len(ANSWERS)


def text_of(answer: int) -> str:
    return b"".join(ANSWERS[answer]).decode()


def logprob(j: int) -> float:
    return -(j + 1) / 8  # token j's log-prob, exact in binary


def choice(index: int, answer: int) -> dict[str, Any]:
    tokens = []
    for j, piece in enumerate(ANSWERS[answer]):
        token: dict[str, Any] = {"token": piece.decode("utf-8", "replace"), "logprob": logprob(j)}
        if not piece.isascii() or j % 2 == 0:  # odd ASCII tokens come without `bytes`: `token` is used
            token["bytes"] = list(piece)
        tokens.append(token)
    return {"index": index, "message": {"role": "assistant", "content": text_of(answer)},
            "logprobs": {"content": tokens}, "finish_reason": "stop"}


class Script:
    """What the fake server does: scripted (status, body, delay) replies first, then sampled answers."""

    def __init__(self) -> None:
        self.replies: list[tuple[int, str, float]] = []
        self.refuse_n = False  # HTTP 400 for n > 1, as llama.cpp's server answers
        self.ignore_n = False  # one choice whatever n is, as servers that drop unknown keys do
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []  # (headers, JSON body) received

    def answer(self, body: dict[str, Any]) -> tuple[int, str, float]:
        if self.replies:
            return self.replies.pop(0)
        n = body.get("n", 1)
        if self.refuse_n and n > 1:
            return 400, json.dumps({"error": {"message": "Only one completion choice is allowed",
                                              "type": "invalid_request_error"}}), 0.0
        seed = body["seed"]
        choices = [choice(k, answer_of(seed + k)) for k in range(1 if self.ignore_n else n)]
        return 200, json.dumps({"object": "chat.completion", "choices": choices}), 0.0


@pytest.fixture
def server() -> Iterator[tuple[str, Script]]:
    script = Script()

    def respond(path: str, body: dict[str, Any]) -> tuple[int, bytes, float]:
        status, payload, delay = script.answer(body) if path == "/v1/chat/completions" else (404, "no such route", 0.0)
        return status, payload.encode(), delay

    with loopback_server(respond, script.requests) as url:
        yield url, script


def proposer(url: str, **kw: Any) -> OpenAIProposer:
    return OpenAIProposer(**{**dict(model="fake-vlm", base_url=url, timeout=5.0, backoff_s=0.01,
                                    api_key_env="LLM2LABELS_TEST_KEY"), **kw})


def crops(seeds: list[list[int]]) -> list[CropRequest]:
    colours = [(220, 20, 20), (20, 20, 220)]
    return [CropRequest(Image.new("RGB", (64 - 16 * i, 48), colours[i % 2]), s) for i, s in enumerate(seeds)]


def sent_image(body: dict[str, Any]) -> Image.Image:
    url = body["messages"][0]["content"][1]["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def test_two_crops_three_seeds_come_back_as_the_server_sent_them(server: tuple[str, Script]) -> None:
    url, script = server
    out = proposer(url, max_concurrency=2).propose(crops([[0, 1, 2], [10, 11, 12]]))
    assert [len(gens) for gens in out] == [3, 3]
    for first, gens in zip([0, 10], out):
        for k, gen in enumerate(gens):
            answer = answer_of(first + k)
            assert gen.text == text_of(answer) and gen.token_ids == [-1] * len(ANSWERS[answer])
            assert gen.logprobs == [logprob(j) for j in range(len(ANSWERS[answer]))]
            assert gen.token_ends[-1] == len(gen.text)
    cafe = out[0][0]
    assert cafe.text == "['café', 'sky']" and cafe.token_ends == CAFE_ENDS
    assert [cafe.text[a:b] for a, b in zip([0, *CAFE_ENDS], CAFE_ENDS)][1:3] == ["caf", "é"]
    assert out[1][0].token_ends == [2, 6, 8, 10, 14, 16]  # "['" "tree" "'," " '" "road" "']"
    bodies = sorted((body for _, body in script.requests), key=lambda b: b["seed"])
    assert len(bodies) == 2 and [b["seed"] for b in bodies] == [0, 10]  # with n > 1: the first seed
    for body, size, red in zip(bodies, [(64, 48), (48, 48)], [True, False]):
        assert body["n"] == 3 and body["model"] == "fake-vlm"
        assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.3, 0.9, 100)
        assert body["logprobs"] is True and body["top_logprobs"] == 0
        assert "repetition_penalty" not in body and "top_k" not in body  # not sent unless configured
        assert body["messages"][0]["role"] == "user"
        assert body["messages"][0]["content"][0] == {"type": "text", "text": DEFAULT_PROMPT}
        image = sent_image(body)
        r, _, b = image.convert("RGB").getpixel((10, 10))
        assert image.size == size and image.format == "JPEG" and (r > 180 and b < 60) == red


def test_vllm_extras_and_extra_body_are_top_level_keys(server: tuple[str, Script]) -> None:
    url, script = server
    proposer(url, repetition_penalty=2.0, top_k=50, extra_body={"min_p": 0.05}, temperature=0.7,
             top_p=0.5, max_new_tokens=30, prompt="List the objects.").propose(crops([[5]]))
    body = script.requests[0][1]
    assert (body["repetition_penalty"], body["top_k"], body["min_p"]) == (2.0, 50, 0.05)
    assert (body["temperature"], body["top_p"], body["max_tokens"], body["n"], body["seed"]) == (0.7, 0.5, 30, 1, 5)
    assert body["messages"][0]["content"][0]["text"] == "List the objects."


@pytest.mark.parametrize("server_does", ["refuse_n", "ignore_n", "use_n=false"])
def test_one_request_per_seed_when_n_is_refused_ignored_or_off(server: tuple[str, Script],
                                                               server_does: str) -> None:
    url, script = server
    if server_does != "use_n=false":
        setattr(script, server_does, True)
    p = proposer(url, max_concurrency=1, use_n=server_does != "use_n=false")
    seeds = [[0, 1, 2], [10, 11, 12]]
    out = p.propose(crops(seeds))
    for crop_seeds, gens in zip(seeds, out):  # sample k is the server's answer for seeds[k] alone
        assert [g.text for g in gens] == [text_of(answer_of(s)) for s in crop_seeds]
    bodies = [body for _, body in script.requests]
    asked_n = [b for b in bodies if b["n"] > 1]
    assert len(asked_n) == (0 if server_does == "use_n=false" else 1)  # found out once, then remembered
    assert sorted(b["seed"] for b in bodies if b["n"] == 1) == sorted(sum(seeds, []))
    script.requests.clear()
    assert [g.text for g in p.propose(crops([[7, 8]]))[0]] == [text_of(answer_of(7)), text_of(answer_of(8))]
    assert [(b["n"], b["seed"]) for _, b in script.requests] == [(1, 7), (1, 8)]


def test_http_500_is_retried(server: tuple[str, Script]) -> None:
    url, script = server
    script.replies = [(500, "overloaded", 0.0), (503, "loading", 0.0)]
    out = proposer(url, max_retries=2).propose(crops([[3]]))
    assert out[0][0].text == text_of(answer_of(3)) and len(script.requests) == 3


@pytest.mark.parametrize("failure", ["timeout", "http500"])
def test_failures_are_retried_then_end_in_one_line_naming_the_url(server: tuple[str, Script],
                                                                  failure: str) -> None:
    url, script = server
    script.replies = [(200, "{}", 1.0) if failure == "timeout" else (500, "boom", 0.0)] * 3
    start = time.monotonic()
    with pytest.raises(OpenAIError) as info:
        proposer(url, timeout=0.2, max_retries=2).propose(crops([[0, 1]]))
    message = str(info.value)
    assert time.monotonic() - start < 3 and len(script.requests) == 3
    assert "\n" not in message and message.startswith(f"{url}/chat/completions: no answer after 3 attempts")
    assert isinstance(info.value, GrouperError) and user_error(info.value) == message  # the CLI's one line


def test_http_400_is_not_retried(server: tuple[str, Script]) -> None:
    url, script = server
    script.replies = [(400, '{"error": {"message": "model fake-vlm does not exist"}}', 0.0)]
    with pytest.raises(OpenAIError, match=r"chat/completions: HTTP 400 .*does not exist") as info:
        proposer(url, max_retries=3).propose(crops([[0, 1]]))
    assert len(script.requests) == 1 and info.value.status == 400


def test_reply_without_logprobs_is_a_one_line_error(server: tuple[str, Script]) -> None:
    url, script = server
    reply = {"choices": [{"index": 0, "message": {"content": "['sky']"}, "logprobs": None}]}
    script.replies = [(200, json.dumps(reply), 0.0)]
    with pytest.raises(OpenAIError, match="no choices\\[\\].logprobs.content; the server must support logprobs"):
        proposer(url).propose(crops([[0]]))


def test_authorization_header_only_when_the_key_is_set(server: tuple[str, Script],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    url, script = server
    monkeypatch.delenv("LLM2LABELS_TEST_KEY", raising=False)
    proposer(url).propose(crops([[0]]))
    monkeypatch.setenv("LLM2LABELS_TEST_KEY", "sk-test-123")
    proposer(url).propose(crops([[0]]))
    assert "Authorization" not in script.requests[0][0]
    assert script.requests[1][0]["Authorization"] == "Bearer sk-test-123"


@pytest.mark.parametrize(("tokens", "content", "expected"), [
    (["['", "sky", "']"], "['sky']", ("['sky']", [2, 5, 7], [-1, -2, -3])),
    (["['", "sky", "']", "</s>"], "['sky']", ("['sky']", [2, 5, 7], [-1, -2, -3])),  # EOS text cut
    (["['", "sky", "']\n\nDone"], "['sky']", ("['sky']", [2, 5, 7], [-1, -2, -3])),  # stop string mid-token
    ([" ", "['", "sky']"], "['sky']", ("['sky']", [2, 7], [-2, -3])),  # leading space stripped
    (["</s>"], "", ("", [], [])),
    (["['", "SKY", "']"], "['sky']", ("['SKY']", [2, 5, 7], [-1, -2, -3])),  # other change: tokens win
])
def test_fit_tokens_keeps_the_content_when_it_can(tokens: list[str], content: str,
                                                  expected: tuple[str, list[int], list[float]]) -> None:
    text, ends = decode_pieces([t.encode() for t in tokens])
    assert fit_tokens(text, ends, [-1.0, -2.0, -3.0, -4.0][: len(tokens)], content) == expected


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"base_url": "localhost:8000"}, "base_url must be an http(s) URL"),
    ({"top_p": 0}, "top_p must be in (0, 1]"),
    ({"temperature": -1}, "temperature must be >= 0"),
    ({"max_new_tokens": 0}, "max_new_tokens must be an int >= 1"),
    ({"repetition_penalty": 0}, "repetition_penalty must be null"),
    ({"top_k": 0}, "top_k must be null (not sent) or an int >= 1"),
    ({"logprobs": "both"}, "logprobs must be raw or processed"),
    ({"max_tokens": 30}, "max_tokens is now called max_new_tokens"),
    ({"logprob_mode": "raw"}, "logprob_mode is now called logprobs"),
    ({"template": "USER: {prompt}"}, "template is not used (the server applies the model's chat template)"),
    ({"extra_body": {"n": 4}}, "extra_body must not set ['n']"),
    ({"extra_body": {"x": object()}}, "extra_body must be a JSON-serialisable mapping"),
    ({"max_concurrency": 0}, "max_concurrency must be an int >= 1"),
    ({"jpeg_quality": 100}, "jpeg_quality must be an int in [1, 95]"),
    ({"timeout": 0}, "timeout must be > 0 seconds"),
    ({"model": ""}, "model must be the name"),
])
def test_bad_values_are_one_line_config_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        OpenAIProposer(**{"model": "m", **kwargs})
    assert str(info.value).startswith("proposer=openai: ") and message in str(info.value)
    assert "\n" not in str(info.value)


def test_fingerprint_holds_what_changes_samples_only() -> None:
    base = OpenAIProposer("m", base_url="http://h:1/v1/")
    fp = base.fingerprint()
    assert fp["base_url"] == "http://h:1/v1" and fp["logprob_mode"] == "processed" and fp["temperature"] == 0.3
    assert OpenAIProposer("m", base_url="http://h:1/v1", max_concurrency=1, api_key_env="X", timeout=1,
                          max_retries=0).fingerprint() == fp
    assert OpenAIProposer("m", base_url="http://h:1/v1", temperature=0.5).fingerprint() != fp
    assert pickle.loads(pickle.dumps(base)).fingerprint() == fp  # shipped to worker processes


def test_the_prompt_defaults_to_the_one_all_sampling_proposers_share() -> None:
    assert OpenAIProposer("m").prompt == OpenAIProposer("m", prompt=None).prompt == DEFAULT_PROMPT
    assert OpenAIProposer("m", prompt="List the objects.").prompt == "List the objects."


def test_app_end_to_end_against_the_fake_server(make_cfg, tmp_path, server: tuple[str, Script]) -> None:
    url, script = server
    summary = run(make_cfg("proposer=openai", f"proposer.base_url={url}", "dataset.limit=2", "grouper=none",
                           "filter=none"))
    assert summary["images"] == 2 and summary["generations"] == 16 and summary["cache_hits"] == 0  # 2 x 8
    assert summary["proposer"]["backend"] == "openai" and len(script.requests) == 2  # n = 8 per image
    labels = pd.read_csv(tmp_path / "out" / "labels.csv").set_index("label")
    # Every image's 8 samples hold all three answers; an image keeps a label's best sample (pool=max), and a
    # label's probability is the product of its tokens' (aggregator=product): café is "caf" + "é", tokens 1, 2.
    expected = {"sky": -2 / 8, "tree": -2 / 8, "café": -(2 + 3) / 8, "road": -5 / 8}
    assert set(labels.index) == set(expected)
    for label, lp in expected.items():
        assert labels.loc[label, "occ"] == 1.0 and labels.loc[label, "prob"] == pytest.approx(math.exp(lp))
