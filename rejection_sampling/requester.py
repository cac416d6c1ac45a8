"""Cache first, endpoint second: how every request of a run is answered, and what it cost.

Three modes share the loop above this module, so online runs, offline batch
runs and dry runs walk the same clips and build the same requests:

* ``online``: a cache miss is sent (:class:`~omnivmed.rejection_sampling.client.EndpointClient`),
  the reply committed to the cache before anyone reads it;
* ``batch``: a cache miss is collected for an OpenAI batch file and the work
  that depends on it waits (:class:`Deferred`);
* ``dry_run``: a cache miss is only counted.

Failures are recorded in the cache's ``failures`` table with the run number
(once each, see cache.py), with every key this run may send redacted from
their text, and counted per endpoint and error class for the console.
Every request answered by an endpoint (or failed for good) is also reported
to ``on_request`` as a :class:`RequestEvent`, which is how progress is shown. Token usage is
summed per stage, split into what this run paid for and what the cache served.

Cache reads and writes run on one helper thread: a commit waits for the disk
(fsync), and the event loop must keep every other request moving meanwhile.
A reply is still committed before the request that asked for it returns.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from omnivmed.rejection_sampling.cache import PARSE_FAILURE, CachedReply, ReplyCache
from omnivmed.rejection_sampling.chat_request import ChatRequest
from omnivmed.rejection_sampling.client import EndpointClient, TransportFailure
from omnivmed.rejection_sampling.prompts import ParseError

MODES = ("online", "batch", "dry_run")


class Deferred(Exception):
    """The request is not answered in this run (written to a batch file, or a dry run)."""


class ParseExhausted(Exception):
    """Every attempt replied, none parsed: deterministic given the cache, so it is an outcome, not a failure to retry."""

    def __init__(self, detail: str, attempts: list["Attempt"]):
        super().__init__(detail)
        self.detail, self.attempts = detail, attempts


class RequestFailed(Exception):
    """No reply after every retry (recorded; the next run asks again)."""

    def __init__(self, failure: TransportFailure, attempts: list["Attempt"], endpoint: str = ""):
        super().__init__(f"{endpoint}: {failure}" if endpoint else str(failure))
        self.failure, self.attempts, self.endpoint = failure, attempts, endpoint


@dataclass(frozen=True)
class FailureKey:
    """What a failed request is counted under: the endpoint, where it is, and what went wrong."""

    endpoint: str
    base_url: str
    kind: str  # connection, timeout, http_503...
    error_class: str  # ConnectError, ReadTimeout, HTTP 503...

    def describe(self) -> str:
        return f"{self.endpoint} at {self.base_url}: {self.kind} ({self.error_class})"


@dataclass(frozen=True)
class RequestEvent:
    """One request answered by an endpoint (``failed`` None) or failed after every retry."""

    stage: str
    endpoint: str
    clip_id: str
    candidate: int
    attempt: int
    seconds: float
    completion_tokens: int = 0
    failed: FailureKey | None = None
    detail: str = ""


@dataclass(frozen=True)
class Attempt:
    """One request of a parse-retry chain and what became of it."""

    key: str
    content: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None
    error: str | None  # parse error, or None for the one that parsed


@dataclass
class StageUsage:
    sent: int = 0  # requests answered by the endpoint in this run
    cached: int = 0  # requests answered from the cache
    failed: int = 0  # requests with no reply after every retry
    deferred: int = 0  # written to a batch file or counted by a dry run
    unparsed: int = 0  # replies that did not parse (each one re-asked while retries last)
    prompt_tokens: int = 0  # paid in this run
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0  # paid in an earlier run, reused
    cached_completion_tokens: int = 0


@dataclass
class Requester:
    cache: ReplyCache
    clients: dict[str, EndpointClient]
    run: int
    mode: str = "online"
    secrets: tuple[str, ...] = ()
    deferred: dict[str, ChatRequest] = field(default_factory=dict)
    usage: dict[str, StageUsage] = field(default_factory=lambda: defaultdict(StageUsage))
    first_send: float | None = None
    last_reply: float | None = None
    on_request: Callable[[RequestEvent], None] | None = None
    failures: Counter = field(default_factory=Counter)  # FailureKey -> requests failed in this run
    _io: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="reply-cache"))

    async def _db(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    def close(self) -> None:
        self._io.shutdown(wait=True)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    async def reply(self, request: ChatRequest) -> CachedReply:
        usage = self.usage[request.stage]
        hit = await self._db(self.cache.get, request.key)
        if hit is not None:
            usage.cached += 1
            usage.cached_prompt_tokens += hit.prompt_tokens
            usage.cached_completion_tokens += hit.completion_tokens
            return hit
        if self.mode != "online":
            usage.deferred += 1
            self.deferred[request.key] = request
            raise Deferred(request.key)
        started = time.perf_counter()
        if self.first_send is None:
            self.first_send = started
        client = self.clients[request.endpoint]
        try:
            body = await client.send(request)
        except TransportFailure as failure:
            usage.failed += 1
            detail = self.redact(failure.detail)
            await self._db(self.cache.record_failure, self.run, request, failure.kind, detail, failure.tries)
            key = FailureKey(request.endpoint, client.config.base_url, failure.kind, failure.error_class)
            self.failures[key] += 1
            self._report(RequestEvent(request.stage, request.endpoint, request.clip_id, request.candidate, request.attempt,
                                      time.perf_counter() - started, failed=key, detail=detail))
            raise
        reply = await self._db(self.cache.put, request, body)
        self.last_reply = time.perf_counter()
        usage.sent += 1
        usage.prompt_tokens += reply.prompt_tokens
        usage.completion_tokens += reply.completion_tokens
        self._report(RequestEvent(request.stage, request.endpoint, request.clip_id, request.candidate, request.attempt,
                                  self.last_reply - started, reply.completion_tokens))
        return reply

    def _report(self, event: RequestEvent) -> None:
        if self.on_request is not None:
            self.on_request(event)

    async def parsed(self, make: Callable[[int], ChatRequest], parse: Callable[[str], object], parse_retries: int):
        """(value, attempts): ask, parse, re-ask with the next attempt number while replies do not parse."""
        attempts: list[Attempt] = []
        for attempt in range(parse_retries + 1):
            request = make(attempt)
            try:
                reply = await self.reply(request)
            except TransportFailure as failure:
                raise RequestFailed(failure, attempts, request.endpoint) from None
            try:
                value = parse(reply.content)
            except ParseError as err:
                self.usage[request.stage].unparsed += 1
                await self._db(self.cache.record_failure, self.run, request, PARSE_FAILURE, self.redact(str(err)), 1)
                attempts.append(Attempt(reply.key, reply.content, reply.prompt_tokens, reply.completion_tokens, reply.finish_reason, str(err)))
                continue
            attempts.append(Attempt(reply.key, reply.content, reply.prompt_tokens, reply.completion_tokens, reply.finish_reason, None))
            return value, attempts
        raise ParseExhausted(attempts[-1].error or "no parse", attempts)

    def requests_per_second(self) -> float | None:
        sent = sum(u.sent for u in self.usage.values())
        if not sent or self.first_send is None or self.last_reply is None or self.last_reply <= self.first_send:
            return None
        return sent / (self.last_reply - self.first_send)
