"""`grouper=openai`: the LLM grouping through any OpenAI-compatible `/v1/chat/completions` endpoint.

vLLM, SGLang, Ollama, the llama.cpp server and hosted APIs all speak it. The same prompts, chunking, retries
and merging as `grouper=llm` (`prompts.py`); tokens are estimated as characters / `chars_per_token`, since
the server's tokenizer is not at hand. Standard library only (urllib + json). Transport failures (timeouts,
refused connections, HTTP 429 and 5xx) are retried with exponential backoff; other 4xx are not.
"""

from __future__ import annotations

import json
import math
from typing import Any
from urllib.parse import urlparse

from llm2labels.errors import require
from llm2labels.grouping.prompts import ChatGrouper, Message
from llm2labels.openai_http import OpenAIError, post_json

# The LLM server could not be used; the one-line message names the URL and what to check. The transport
# (llm2labels.openai_http) is shared with proposer=openai, so this is its OpenAIError under the old name.
GrouperError = OpenAIError


class OpenAICompatGrouper(ChatGrouper):
    """Group ranked labels with a chat model behind an OpenAI-compatible HTTP API."""

    name = "openai"

    def __init__(self, model: str = "meta-llama/Llama-2-7b-chat-hf", base_url: str = "http://localhost:8000/v1",
                 api_key_env: str = "OPENAI_API_KEY", timeout: float = 300.0, max_retries: int = 3,
                 backoff_s: float = 1.0, chars_per_token: float = 4.0, **chat: Any) -> None:
        """`chat`: the settings every chat grouper shares (`ChatGrouper`); `max_new_tokens` is sent as the
        request's `max_tokens`."""
        super().__init__(**chat)
        problems = {
            "model must be the name the server knows the model by": bool(model),
            f"base_url must be an http(s) URL, got {base_url!r}": urlparse(base_url).scheme in ("http", "https"),
            f"timeout must be > 0 seconds, got {timeout}": timeout > 0,
            f"max_retries and backoff_s must be >= 0, got {max_retries}, {backoff_s}":
                max_retries >= 0 and backoff_s >= 0,
            f"chars_per_token must be > 0, got {chars_per_token}": chars_per_token > 0,
        }
        require(problems, "grouper=openai: ")
        self.model, self.base_url, self.api_key_env = model, base_url.rstrip("/"), api_key_env
        self.timeout, self.max_retries, self.backoff_s = float(timeout), max_retries, float(backoff_s)
        self.chars_per_token = float(chars_per_token)

    @property
    def url(self) -> str:
        return f"{self.base_url}/chat/completions"

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.model, "base_url": self.base_url,
                "context_tokens": self.context_tokens, "max_new_tokens": self.max_new_tokens,
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

    def _post(self, body: dict[str, Any]) -> Any:
        """The decoded JSON reply; transient failures retried max_retries times with exponential backoff
        (or the server's Retry-After, if it sends one, capped at 30 s)."""
        return post_json(self.url, body, model=self.model, api_key_env=self.api_key_env, timeout=self.timeout,
                         max_retries=self.max_retries, backoff_s=self.backoff_s)
