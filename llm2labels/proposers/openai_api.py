"""`proposer=openai`: a VLM behind an OpenAI-compatible `/v1/chat/completions` server (vLLM, SGLang, hosted).

One POST per crop asks for `n = len(seeds)` answers with `logprobs: true`; servers that refuse n > 1 (an
HTTP 4xx whose message is about n or choices) or silently return fewer choices get one request per sample
instead, each with its own seed, and the proposer remembers that for the rest of the run. Up to
`max_concurrency` requests are in flight at once (a thread pool per `propose` call).

Reproducibility is the server's: with one request per sample, sample k carries `seeds[k]` as `seed`, which
vLLM and SGLang honour. With n > 1 only `seeds[0]` is sent, and how sample k of that request is drawn is up to
the server (vLLM derives it from the seed and k, so it is still repeatable on the same server version).

The server's tokenizer is remote, so `token_ids` are unknown (-1 each). Each token's text comes from its
`bytes` (the exact UTF-8 bytes, since a token may hold part of a character) or else its `token` string; the
bytes are decoded incrementally, so a split character is credited to the token that completes it (as in
`token_ends.decode_with_ends`). See `fit_tokens` for how the tokens' text is reconciled with the answer's.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import urlparse

from PIL import Image

from llm2labels.errors import int_at_least, number_at_least
from llm2labels.openai_http import OpenAIError, one_line, post_json
from llm2labels.proposers.base import CropRequest, Generation
from llm2labels.proposers.settings import SamplingProposer
from llm2labels.proposers.token_ends import decode_pieces

# A refusal of n > 1: vLLM/OpenAI name the parameter ("n"), llama.cpp says "Only one completion choice ...".
# A false match only costs one request per sample, which then fails with the server's own message.
_REFUSES_N = re.compile(r"""\bn\b|["']n["']|choice""", re.IGNORECASE)
# Keys the proposer sets itself (or per request), which extra_body must not override.
_RESERVED = {"model", "messages", "n", "seed", "stream", "logprobs", "top_logprobs", "temperature", "top_p",
             "max_tokens", "repetition_penalty", "top_k"}
_log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


class OpenAIProposer(SamplingProposer):
    """Samples label lists from a served VLM, keeping the per-token log-probabilities the server returns.

    The sampling settings are `SamplingProposer`'s, but the server applies the chat template (no
    `template`) and its own defaults to what is left null (top_k, repetition_penalty, not sent).
    `logprobs` records which distribution the server's log-probs are from ("raw" or "processed"); it
    changes nothing in the request, since the server decides. vLLM returns raw log-probs unless started
    with `--logprobs-mode processed_logprobs`; other servers and hosted APIs rarely say which they return.
    """

    error_prefix = "proposer=openai: "
    served = True

    def __init__(
        self,
        model: str,
        *,
        base_url: str = "http://localhost:8000/v1",
        repetition_penalty: float | None = None,
        top_k: int | None = None,
        logprobs: str = "processed",
        extra_body: Mapping[str, Any] | None = None,
        use_n: bool = True,
        jpeg_quality: int = 90,
        max_concurrency: int = 8,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 300.0,
        max_retries: int = 3,
        backoff_s: float = 1.0,
        **sampling: Any,
    ) -> None:
        super().__init__(repetition_penalty=repetition_penalty, top_k=top_k, logprobs=logprobs, **sampling)
        self.model, self.base_url = model, str(base_url).rstrip("/")
        self.extra_body = dict(extra_body or {})
        self.use_n, self.jpeg_quality, self.max_concurrency = use_n, jpeg_quality, max_concurrency
        self.api_key_env, self.timeout, self.max_retries, self.backoff_s = api_key_env, timeout, max_retries, backoff_s
        self._validate()
        self._n_refused = False  # set once the server refused (or ignored) n > 1
        self._warned = False

    def _validate(self) -> None:
        server = {
            "model must be the name the server knows the model by": bool(self.model),
            f"base_url must be an http(s) URL, got {self.base_url!r}":
                urlparse(self.base_url).scheme in ("http", "https"),
        }
        request = {  # message -> holds
            f"extra_body must not set {sorted(_RESERVED & set(self.extra_body))} (they have keys of their own)":
                not _RESERVED & set(self.extra_body),
            "extra_body must be a JSON-serialisable mapping": _jsonable(self.extra_body),
            f"use_n must be true or false, got {self.use_n!r}": isinstance(self.use_n, bool),
            f"jpeg_quality must be an int in [1, 95], got {self.jpeg_quality}":
                int_at_least(self.jpeg_quality, 1) and self.jpeg_quality <= 95,
            f"max_concurrency must be an int >= 1, got {self.max_concurrency}": int_at_least(self.max_concurrency, 1),
            f"timeout must be > 0 seconds, got {self.timeout}": number_at_least(self.timeout, 0.0) and self.timeout > 0,
            f"max_retries must be an int >= 0, got {self.max_retries}": int_at_least(self.max_retries, 0),
            f"backoff_s must be >= 0, got {self.backoff_s}": number_at_least(self.backoff_s, 0.0),
        }
        self.check(server, request)

    @property
    def url(self) -> str:
        return f"{self.base_url}/chat/completions"

    def fingerprint(self) -> dict[str, Any]:
        """What changes a sample; not the key, the concurrency or the transport settings. The keys and values
        name the sample store's folder: keep them as they are (`max_tokens` is `max_new_tokens`,
        `logprob_mode` is `logprobs`)."""
        return {"backend": "openai", "base_url": self.base_url, "model": self.model, "prompt": self.prompt,
                "temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_new_tokens,
                "repetition_penalty": self.repetition_penalty, "top_k": self.top_k, "extra_body": self.extra_body,
                "use_n": self.use_n, "jpeg_quality": self.jpeg_quality, "logprob_mode": self.logprob_mode}

    def setup(self, device: str = "cpu") -> None:
        """Nothing to load: the model lives on the server (`device` is not used)."""

    def propose(self, requests: list[CropRequest]) -> list[list[Generation]]:
        out: list[list[Generation]] = [[] for _ in requests]
        todo = [i for i, r in enumerate(requests) if r.seeds]
        with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
            urls = dict(zip(todo, _map(pool, lambda i: data_url(requests[i].image, self.jpeg_quality), todo)))
            if self.use_n and not self._n_refused:
                batched = [i for i in todo if len(requests[i].seeds) > 1]
                for i, gens in zip(batched, _map(pool, lambda i: self._sample_n(urls[i], requests[i].seeds),
                                                 batched)):
                    out[i] = gens or []
            singles = [(i, seed) for i in todo if not out[i] for seed in requests[i].seeds]
            for (i, _), gen in zip(singles, _map(pool, lambda job: self._sample_one(urls[job[0]], job[1]),
                                                 singles)):
                out[i].append(gen)
        return out

    def _sample_n(self, image_url: str, seeds: list[int]) -> list[Generation] | None:
        """All samples of a crop in one request; None when the server refuses or ignores n > 1."""
        if self._n_refused:  # another thread found out meanwhile
            return None
        try:
            reply = self._post(image_url, n=len(seeds), seed=seeds[0])
        except OpenAIError as err:
            if err.status is None or not _REFUSES_N.search(err.detail):
                raise
            self._refuse_n(f"refused n={len(seeds)} ({one_line(err.detail)[:100]})")
            return None
        choices = self._choices(reply)
        if len(choices) < len(seeds):
            self._refuse_n(f"returned {len(choices)} choices for n={len(seeds)}")
            return None
        return [self._generation(c) for c in choices[: len(seeds)]]

    def _sample_one(self, image_url: str, seed: int) -> Generation:
        return self._generation(self._choices(self._post(image_url, n=1, seed=seed))[0])

    def _refuse_n(self, why: str) -> None:
        if not self._n_refused:
            _log.warning("%s %s: asking one request per sample from now on", self.url, why)
        self._n_refused = True

    def _post(self, image_url: str, n: int, seed: int) -> Any:
        content = [{"type": "text", "text": self.prompt}, {"type": "image_url", "image_url": {"url": image_url}}]
        body: dict[str, Any] = {"model": self.model, "messages": [{"role": "user", "content": content}], "n": n,
                                "seed": seed, "temperature": self.temperature, "top_p": self.top_p,
                                "max_tokens": self.max_new_tokens, "logprobs": True, "top_logprobs": 0}
        if self.repetition_penalty is not None:  # vLLM / SGLang extensions, accepted as top-level keys
            body["repetition_penalty"] = self.repetition_penalty
        if self.top_k is not None:
            body["top_k"] = self.top_k
        body.update(self.extra_body)
        return post_json(self.url, body, model=self.model, api_key_env=self.api_key_env, timeout=self.timeout,
                         max_retries=self.max_retries, backoff_s=self.backoff_s)

    def _choices(self, reply: Any) -> list[dict[str, Any]]:
        choices = reply.get("choices") if isinstance(reply, dict) else None
        if not choices or not all(isinstance(c, dict) for c in choices):
            raise OpenAIError(f"{self.url}: the reply has no choices ({json.dumps(reply)[:200]}); "
                              "is this an OpenAI-compatible server?")
        return sorted(choices, key=lambda c: c.get("index", 0))

    def _generation(self, choice: dict[str, Any]) -> Generation:
        content = (choice.get("message") or {}).get("content") or ""
        items = (choice.get("logprobs") or {}).get("content")
        if items is None and content:
            raise OpenAIError(f"{self.url}: the reply has no choices[].logprobs.content; the server must support "
                              "logprobs for chat completions (vLLM, SGLang, OpenAI do)")
        try:
            pieces = [bytes(t["bytes"]) if t.get("bytes") is not None else str(t["token"]).encode()
                      for t in items or []]
            logprobs = [_finite(float(t["logprob"])) for t in items or []]
        except (KeyError, TypeError, ValueError) as err:
            raise OpenAIError(f"{self.url}: unreadable logprobs.content entry ({err!r}); expected "
                              '{"token", "logprob", "bytes"} per token') from None
        text, ends = decode_pieces(pieces)
        fitted, ends, logprobs = fit_tokens(text, ends, logprobs, content)
        if fitted != content and not self._warned:
            self._warned = True
            _log.warning("%s: an answer's text differs from its tokens' text; the tokens' text is kept "
                         "(answer %r, tokens %r)", self.url, content[:80], fitted[:80])
        return Generation(text=fitted, token_ids=[-1] * len(ends), token_ends=ends, logprobs=logprobs)


def data_url(image: Image.Image, quality: int) -> str:
    """The image as a base64 JPEG data URL (the form every OpenAI-compatible server accepts)."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def fit_tokens(text: str, ends: list[int], logprobs: list[float], content: str
               ) -> tuple[str, list[int], list[float]]:
    """Reconcile the tokens' text with the answer's `content`; returns (text, token_ends, logprobs).

    Usually they are equal. When the content is the tokens' text without leading whitespace or without a
    tail (an EOS token with a text, a stop string: servers return its token but cut its text), the content
    is kept, with only the tokens that overlap it, their ends clipped to it. Otherwise (the server changed
    the text in some other way) the tokens' text is kept, since the labels' probabilities come from the
    tokens. Either way `token_ends[-1] == len(text)` whenever there are tokens.
    """
    offset = text.find(content)  # 0 for an empty content: then no token is kept
    if text == content or not (offset >= 0 and not text[:offset].strip()):
        return text, ends, logprobs
    stop, keep = offset + len(content), []
    for j, end in enumerate(ends):
        start = ends[j - 1] if j else 0
        if end > offset and start < stop:
            keep.append(j)
    return content, [min(ends[j], stop) - offset for j in keep], [logprobs[j] for j in keep]


def _map(pool: ThreadPoolExecutor, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """`pool.map`, but the first error cancels the calls not yet started (a dead server fails once)."""
    futures = [pool.submit(fn, item) for item in items]
    try:
        return [f.result() for f in futures]
    except BaseException:
        for f in futures:
            f.cancel()
        raise


def _finite(logprob: float) -> float:
    """Servers send -9999 or -inf for impossible tokens; keep them finite for JSON."""
    return logprob if math.isfinite(logprob) else -1e9


def _jsonable(value: Any) -> bool:
    try:
        return bool(json.dumps(value))
    except (TypeError, ValueError):
        return False
