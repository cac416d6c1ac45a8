"""One OpenAI-compatible endpoint, reached with the official ``openai`` package (AsyncOpenAI).

* a bounded pool: at most ``concurrency`` requests in flight (a semaphore held
  per attempt, so a request waiting out its backoff frees its slot);
* a per-request timeout;
* retries with jittered exponential backoff on connection errors, timeouts,
  408, 429 (``Retry-After`` / ``retry-after-ms`` honoured) and 5xx; other
  statuses (400, 401, 404...) fail at once, since asking again cannot help.
  The ``openai`` client's own retries are switched off so every attempt is
  counted here;
* the reply body is returned as sent (JSON), not re-serialised through the
  client's models: it is what the cache and the audit table keep.

The key goes to the client and nowhere else.
"""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass

import openai

try:  # the HTTP library under openai: httpx2 in openai 3, httpx before
    import httpx2 as _http
except ImportError:  # pragma: no cover - depends on the installed openai
    import httpx as _http

from omnivmed.rejection_sampling.chat_request import ChatRequest
from omnivmed.rejection_sampling.config import EndpointConfig

REQUEST_KEY_HEADER = "X-Omnivmed-Request"
RETRYABLE_STATUS = frozenset({408, 429})
CHAT_PATH = "/chat/completions"


class TransportFailure(Exception):
    """A request that got no usable reply: ``kind`` (timeout, connection, http_503...) and tries made."""

    def __init__(self, kind: str, detail: str, tries: int, error_class: str | None = None):
        super().__init__(f"{kind} after {tries} tries: {detail}")
        self.kind, self.detail, self.tries = kind, detail, tries
        self.error_class = error_class or kind
        """The exception class under the failure (``ConnectError``, ``ReadTimeout``) or ``HTTP 503``."""


@dataclass
class EndpointStats:
    sent: int = 0  # attempts that went out
    replies: int = 0
    retries: int = 0
    failures: int = 0


def retry_after_s(headers) -> float | None:
    """Seconds the server asked us to wait (``retry-after-ms`` first, then ``retry-after``)."""
    if headers is None:
        return None
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) / divisor)
        except ValueError:
            continue  # an HTTP date: fall back to our own backoff
    return None


class EndpointClient:
    def __init__(self, config: EndpointConfig, *, rng: random.Random | None = None):
        self.config = config
        self.stats = EndpointStats()
        self._rng = rng or random.Random()
        self._client: openai.AsyncOpenAI | None = None
        self._semaphore: asyncio.Semaphore | None = None

    def _open(self) -> openai.AsyncOpenAI:
        # Created inside the running loop: the HTTP pool belongs to the loop that uses it.
        if self._client is None:
            self._client = openai.AsyncOpenAI(
                base_url=self.config.base_url,
                api_key=self.config.resolve_key(),
                max_retries=0,
                timeout=self.config.timeout_s,
            )
            self._semaphore = asyncio.Semaphore(self.config.concurrency)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def _wait_s(self, retry: int, asked: float | None) -> float:
        backoff = self.config.backoff_s * (2**retry) * self._rng.uniform(0.5, 1.5)
        return min(self.config.max_backoff_s, max(backoff, asked or 0.0))

    async def send(self, request: ChatRequest) -> dict:
        """The reply body of ``request``; raises :class:`TransportFailure` when every try failed."""
        client = self._open()
        body = request.body()
        last_kind, last_detail, last_class = "connection", "", None
        tries = 0
        for retry in range(self.config.max_retries + 1):
            asked = None
            async with self._semaphore:
                tries += 1
                self.stats.sent += 1
                try:
                    # The SDK's own route for raw requests: the body goes out as built (its typed
                    # create() re-walks every message part, 40% of the client's time here), and the
                    # reply comes back unparsed, as the cache keeps it. Errors raise as in create().
                    raw = await client.post(
                        CHAT_PATH,
                        cast_to=_http.Response,
                        body=body,
                        options={"timeout": self.config.timeout_s, "headers": {REQUEST_KEY_HEADER: request.key}},
                    )
                    text = raw.text
                except openai.APITimeoutError as err:
                    last_kind, last_detail = "timeout", f"no reply within {self.config.timeout_s:g} s"
                    last_class = cause_name(err)
                except openai.APIConnectionError as err:
                    last_kind, last_detail, last_class = "connection", _describe(err), cause_name(err)
                except openai.APIStatusError as err:
                    status = err.status_code
                    last_kind, last_detail, last_class = f"http_{status}", _status_detail(err), f"HTTP {status}"
                    if status not in RETRYABLE_STATUS and status < 500:
                        self.stats.failures += 1
                        raise TransportFailure(last_kind, last_detail, tries, last_class) from None
                    asked = retry_after_s(err.response.headers)
                else:
                    try:
                        reply = json.loads(text)
                        if not isinstance(reply, dict) or not isinstance(reply.get("choices"), list):
                            raise ValueError("no choices")
                    except ValueError as err:
                        last_kind, last_detail = "invalid_body", f"reply body is not a chat completion ({err})"
                        last_class = "invalid body"
                    else:
                        self.stats.replies += 1
                        return reply
            if retry < self.config.max_retries:
                self.stats.retries += 1
                await asyncio.sleep(self._wait_s(retry, asked))
        self.stats.failures += 1
        raise TransportFailure(last_kind, last_detail, tries, last_class)


def cause_name(err: Exception) -> str:
    """The class of the error under an ``openai`` wrapper (``ConnectError``, ``ReadTimeout``...)."""
    cause = err.__cause__ or err.__context__
    return type(cause if cause is not None else err).__name__


def _describe(err: Exception) -> str:
    cause = err.__cause__ or err.__context__
    return f"{type(cause).__name__}: {cause}" if cause is not None else str(err)


def _status_detail(err: openai.APIStatusError) -> str:
    message = str(getattr(err, "message", "") or err)
    return message[:300]
