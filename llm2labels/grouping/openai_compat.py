"""`grouper=openai`: the LLM grouping through any OpenAI-compatible `/v1/chat/completions` endpoint.

vLLM, SGLang, Ollama, the llama.cpp server and hosted APIs all speak it. The same prompts, chunking, retries
and merging as `grouper=llm` (`prompts.py`); tokens are estimated as characters / `chars_per_token`, since
the server's tokenizer is not at hand. Standard library only (urllib + json). Transport failures (timeouts,
refused connections, HTTP 429 and 5xx) are retried with exponential backoff; other 4xx are not.
"""

from __future__ import annotations

import json
import math
import os
import time
import urllib.error
import urllib.request
from http.client import HTTPException
from typing import Any
from urllib.parse import urlparse

from llm2labels.errors import ConfigError
from llm2labels.grouping.prompts import (
    DEFAULT_CORRECTION,
    DEFAULT_SYSTEM,
    DEFAULT_USER,
    ChatGrouper,
    Message,
)

LOOPBACK = ("localhost", "127.0.0.1", "::1")
MAX_BACKOFF_S = 30.0


class GrouperError(RuntimeError):
    """The LLM server could not be used; the one-line message names the URL and what to check."""


class OpenAICompatGrouper(ChatGrouper):
    """Group ranked labels with a chat model behind an OpenAI-compatible HTTP API."""

    name = "openai"

    def __init__(
        self,
        model: str = "meta-llama/Llama-2-7b-chat-hf",
        base_url: str = "http://localhost:8000/v1",
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 300.0,
        max_retries: int = 3,
        backoff_s: float = 1.0,
        context_tokens: int = 4096,
        chars_per_token: float = 4.0,
        temperature: float = 0.0,
        max_tokens: int = 1024,
        retries: int = 2,
        max_labels: int = 1000,
        merge_rounds: int = 3,
        chunk_tokens: int | None = None,
        system_prompt: str = DEFAULT_SYSTEM,
        user_prompt: str = DEFAULT_USER,
        correction_prompt: str = DEFAULT_CORRECTION,
    ) -> None:
        super().__init__(context_tokens=context_tokens, max_new_tokens=max_tokens, retries=retries,
                         max_labels=max_labels, merge_rounds=merge_rounds, chunk_tokens=chunk_tokens,
                         system_prompt=system_prompt, user_prompt=user_prompt, correction_prompt=correction_prompt)
        problems = {
            "model must be the name the server knows the model by": bool(model),
            f"base_url must be an http(s) URL, got {base_url!r}": urlparse(base_url).scheme in ("http", "https"),
            f"timeout must be > 0 seconds, got {timeout}": timeout > 0,
            f"max_retries and backoff_s must be >= 0, got {max_retries}, {backoff_s}":
                max_retries >= 0 and backoff_s >= 0,
            f"chars_per_token must be > 0, got {chars_per_token}": chars_per_token > 0,
            f"temperature must be >= 0, got {temperature}": temperature >= 0,
        }
        for message, ok in problems.items():
            if not ok:
                raise ConfigError(f"grouper=openai: {message}")
        self.model, self.base_url, self.api_key_env = model, base_url.rstrip("/"), api_key_env
        self.timeout, self.max_retries, self.backoff_s = float(timeout), max_retries, float(backoff_s)
        self.chars_per_token, self.temperature = float(chars_per_token), float(temperature)

    @property
    def url(self) -> str:
        return f"{self.base_url}/chat/completions"

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.model, "base_url": self.base_url,
                "context_tokens": self.context_tokens, "max_tokens": self.max_new_tokens,
                "temperature": self.temperature}

    def render(self, messages: list[Message]) -> str:
        # What the server's template adds per message is unknown: "role: " stands in for it.
        return "".join(f"{m['role']}: {m['content']}\n" for m in messages)

    def count_tokens(self, text: str) -> int:
        return math.ceil(len(text) / self.chars_per_token)

    def chat(self, messages: list[Message]) -> str:
        body = {"model": self.model, "messages": messages, "temperature": self.temperature,
                "max_tokens": self.max_new_tokens}
        reply = self._post(body)
        try:
            return reply["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise GrouperError(f"{self.url}: the reply has no choices[0].message.content "
                               f"({json.dumps(reply)[:200]}); is this an OpenAI-compatible server?") from None

    def _request(self, body: dict[str, Any]) -> urllib.request.Request:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.api_key_env, "") if self.api_key_env else ""
        if key:  # local servers usually need none
            headers["Authorization"] = f"Bearer {key}"
        return urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")

    def _opener(self) -> urllib.request.OpenerDirector:
        """Environment proxies apply, except to a server on this machine (a proxy cannot reach it)."""
        if urlparse(self.base_url).hostname in LOOPBACK:
            return urllib.request.build_opener(urllib.request.ProxyHandler({}))
        return urllib.request.build_opener()

    def _post(self, body: dict[str, Any]) -> Any:
        """The decoded JSON reply; transient failures retried max_retries times with exponential backoff
        (or the server's Retry-After, if it sends one, capped at MAX_BACKOFF_S)."""
        opener, last = self._opener(), ""
        for attempt in range(self.max_retries + 1):
            wait = self.backoff_s * 2 ** attempt
            try:
                with opener.open(self._request(body), timeout=self.timeout) as response:
                    return json.loads(response.read().decode("utf-8"))
            except urllib.error.HTTPError as err:
                detail = err.read().decode("utf-8", "replace")[:200]
                last = f"HTTP {err.code} {detail}"
                if err.code != 429 and err.code < 500:  # the request itself is wrong: retrying will not help
                    raise GrouperError(f"{self.url}: {_line(last)}; check model ({self.model}), api_key_env "
                                       f"({self.api_key_env}) and max_tokens") from None
                retry_after = (err.headers.get("Retry-After") or "").strip() if err.headers else ""
                wait = float(retry_after) if retry_after.isdigit() else wait
            except (urllib.error.URLError, TimeoutError, ConnectionError, HTTPException, OSError) as err:
                last = f"{type(err).__name__}: {getattr(err, 'reason', err)}"
            except ValueError as err:  # a reply that is not JSON
                last = f"unreadable reply ({err})"
            if attempt < self.max_retries:
                time.sleep(min(wait, MAX_BACKOFF_S))
        raise GrouperError(f"{self.url}: no answer after {self.max_retries + 1} attempts (last: {_line(last)}); "
                           f"check that the server runs and serves {self.model}, or raise timeout "
                           f"({self.timeout:g} s) / max_retries")


def _line(text: str) -> str:
    """`text` on one line, whitespace runs collapsed."""
    return " ".join(str(text).split())
