"""The HTTP side of OpenAI-compatible servers (vLLM, SGLang, Ollama, llama.cpp server, hosted APIs).

Standard library only (urllib + json), shared by `grouper=openai` and `proposer=openai`. Transport failures
(timeouts, refused connections, HTTP 429 and 5xx, replies that are not JSON) are retried with exponential
backoff; other 4xx are not, since the request itself is wrong. Every failure ends in one `OpenAIError` line
that names the URL and what to check.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from http.client import HTTPException
from typing import Any
from urllib.parse import urlparse

LOOPBACK = ("localhost", "127.0.0.1", "::1")
MAX_BACKOFF_S = 30.0


class OpenAIError(RuntimeError):
    """The server could not be used; the one-line message names the URL and what to check.

    For a request the server refused (HTTP 4xx other than 429), `status` is the HTTP status and `detail` the
    start of the server's answer, so callers can react to specific refusals; otherwise `status` is None.
    """

    status: int | None = None
    detail: str = ""


def one_line(text: str) -> str:
    """`text` on one line, whitespace runs collapsed."""
    return " ".join(str(text).split())


def _request(url: str, body: dict[str, Any], api_key_env: str) -> urllib.request.Request:
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    key = os.environ.get(api_key_env, "") if api_key_env else ""
    if key:  # local servers usually need none
        headers["Authorization"] = f"Bearer {key}"
    return urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")


def _opener(url: str) -> urllib.request.OpenerDirector:
    """Environment proxies apply, except to a server on this machine (a proxy cannot reach it)."""
    if urlparse(url).hostname in LOOPBACK:
        return urllib.request.build_opener(urllib.request.ProxyHandler({}))
    return urllib.request.build_opener()


def post_json(url: str, body: dict[str, Any], *, model: str, api_key_env: str, timeout: float,
              max_retries: int, backoff_s: float) -> Any:
    """POST `body` as JSON to `url` and return the decoded JSON reply.

    Transient failures are retried `max_retries` times, waiting `backoff_s` * 2**attempt seconds (or the
    server's numeric Retry-After), capped at MAX_BACKOFF_S. The key, if any, is read from the environment
    variable `api_key_env` at each call and sent as a Bearer token; `model` only goes into error messages.
    """
    opener, last = _opener(url), ""
    for attempt in range(max_retries + 1):
        wait = backoff_s * 2 ** attempt
        try:
            with opener.open(_request(url, body, api_key_env), timeout=timeout) as response:
                return json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as err:
            detail = err.read().decode("utf-8", "replace")[:200]
            last = f"HTTP {err.code} {detail}"
            if err.code != 429 and err.code < 500:  # the request itself is wrong: retrying will not help
                refused = OpenAIError(f"{url}: {one_line(last)}; check model ({model}), api_key_env "
                                      f"({api_key_env}) and max_tokens")
                refused.status, refused.detail = err.code, detail
                raise refused from None
            retry_after = (err.headers.get("Retry-After") or "").strip() if err.headers else ""
            wait = float(retry_after) if retry_after.isdigit() else wait
        except (urllib.error.URLError, TimeoutError, ConnectionError, HTTPException, OSError) as err:
            last = f"{type(err).__name__}: {getattr(err, 'reason', err)}"
        except ValueError as err:  # a reply that is not JSON
            last = f"unreadable reply ({err})"
        if attempt < max_retries:
            time.sleep(min(wait, MAX_BACKOFF_S))
    raise OpenAIError(f"{url}: no answer after {max_retries + 1} attempts (last: {one_line(last)}); "
                      f"check that the server runs and serves {model}, or raise timeout "
                      f"({timeout:g} s) / max_retries")
