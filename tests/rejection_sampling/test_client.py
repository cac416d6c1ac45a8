"""The endpoint client against the local server: every injected fault ends in a reply or a TransportFailure."""

from __future__ import annotations

import asyncio
import time

import pytest

from omnivmed.rejection_sampling.chat_request import ChatRequest, Message
from omnivmed.rejection_sampling.client import EndpointClient, TransportFailure, retry_after_s
from omnivmed.rejection_sampling.server import Drop, HttpError, LocalServer, Reply, Stall, TruncatedBody
from support.caption_fixtures import endpoint


def request(n: int = 0) -> ChatRequest:
    return ChatRequest(
        stage="caption", endpoint="gen", model="m", messages=(Message("user", (f"hello {n}",)),), temperature=0.0,
        top_p=1.0, max_tokens=8, seed=n, response_format=None, clip_id="c", candidate=n, attempt=0, prompt_version="t",
    )


class FirstFaults:
    """Answer the first ``len(faults)`` attempts with the given faults, then reply."""

    def __init__(self, *faults):
        self.faults = list(faults)
        self.calls = 0

    def __call__(self, body, headers):
        self.calls += 1
        return self.faults.pop(0) if self.faults else Reply("fine", 3, 1)


def send(server, *requests, **config):
    async def go():
        client = EndpointClient(endpoint(server.base_url, "gen", **config))
        try:
            return await asyncio.gather(*(client.send(r) for r in requests), return_exceptions=True), client.stats
        finally:
            await client.aclose()

    return asyncio.run(go())


@pytest.mark.parametrize(
    "fault, kind",
    [
        (HttpError(500), "http_500"),
        (HttpError(503), "http_503"),
        (HttpError(408), "http_408"),
        (Drop(), "connection"),
        (TruncatedBody(), "connection"),
    ],
)
def test_transient_faults_are_retried(fault, kind):
    script = FirstFaults(fault, fault)
    with LocalServer(script) as server:
        (reply,), stats = send(server, request())
        assert server.keys() == [request().key]  # one reply sent, after the two faults
    assert reply["choices"][0]["message"]["content"] == "fine" and reply["usage"]["prompt_tokens"] == 3
    assert script.calls == 3 and stats.retries == 2 and stats.replies == 1


def test_timeout_is_retried():
    script = FirstFaults(Stall(2.0, Reply("late")))
    with LocalServer(script) as server:
        start = time.perf_counter()
        (reply,), stats = send(server, request(), timeout_s=0.3)
        assert time.perf_counter() - start < 1.9  # did not wait for the stalled reply
    assert reply["choices"][0]["message"]["content"] == "fine" and stats.retries == 1


def test_retry_after_is_honoured():
    script = FirstFaults(HttpError(429, retry_after="1"))
    with LocalServer(script) as server:
        start = time.perf_counter()
        (reply,), _ = send(server, request(), max_backoff_s=5.0)
        waited = time.perf_counter() - start
    assert reply["choices"][0]["message"]["content"] == "fine"
    assert waited >= 1.0  # our own backoff is 10 ms here: the server's 1 s won


def test_retry_after_headers():
    assert retry_after_s({"retry-after-ms": "250"}) == 0.25
    assert retry_after_s({"retry-after": "3"}) == 3.0
    assert retry_after_s({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) is None
    assert retry_after_s({}) is None


def test_persistent_failure_gives_up_after_max_retries():
    with LocalServer(lambda body, headers: HttpError(503)) as server:
        (failure,), stats = send(server, request(), max_retries=3)
        assert len(server.keys("http_503")) == 4
    assert isinstance(failure, TransportFailure) and failure.kind == "http_503" and failure.tries == 4
    assert stats.failures == 1


def test_client_errors_are_not_retried():
    with LocalServer(lambda body, headers: HttpError(400, message="bad request")) as server:
        (failure,), _ = send(server, request())
        assert len(server.keys(None)) == 1
    assert isinstance(failure, TransportFailure) and failure.kind == "http_400" and failure.tries == 1


def test_refused_connection_is_a_failure():
    server = LocalServer(lambda body, headers: Reply("x")).start()
    server.stop()  # the port is free again: nothing listens there
    (failure,), _ = send(server, request(), max_retries=1)
    assert isinstance(failure, TransportFailure) and failure.kind == "connection" and failure.tries == 2


def test_in_flight_requests_are_bounded():
    state = {"now": 0, "peak": 0}

    async def slow(body, headers):
        state["now"] += 1
        state["peak"] = max(state["peak"], state["now"])
        await asyncio.sleep(0.05)
        state["now"] -= 1
        return Reply("ok")

    with LocalServer(slow) as server:
        replies, stats = send(server, *[request(n) for n in range(24)], concurrency=5)
    assert all(isinstance(r, dict) for r in replies) and stats.replies == 24
    assert state["peak"] == 5


def test_server_is_loopback_only():
    with pytest.raises(ValueError, match="loopback only"):
        LocalServer(lambda body, headers: Reply("x"), host="0.0.0.0")
