"""A local OpenAI-compatible server (loopback only) for tests, benchmarks and the offline demo.

It speaks just enough HTTP/1.1 (keep-alive, Content-Length bodies) for the
``openai`` client: ``POST /v1/chat/completions`` and ``GET /v1/models``.
Replies come from a *responder*, a function of the request body and headers
that returns a :class:`Reply` or a fault:

* :class:`HttpError` (500, 429 with ``Retry-After``, ...),
* :class:`Stall` (answer late, to trip the client's timeout),
* :class:`Drop` (close the connection without answering: a drop mid-run),
* :class:`TruncatedBody` (promise more bytes than are sent, then close).

Truncated JSON or out-of-range scores are ordinary replies with bad content.
Every request is logged with the request key the client sends in a header,
so tests can count repeats. ``latency_s`` adds a fixed delay to each reply
(the benchmark's L). The demo responder (a real small model) is in demo_model.py.

``run_batch`` is the local stand-in for ``vllm run-batch``: it answers a batch
input file with the same responder and writes the batch output format.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import itertools
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable, Union

from omnivmed.rejection_sampling.client import REQUEST_KEY_HEADER

LOOPBACK = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class Reply:
    content: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str = "stop"


@dataclass(frozen=True)
class HttpError:
    status: int
    retry_after: str | None = None
    message: str = "injected fault"


@dataclass(frozen=True)
class Stall:
    seconds: float
    then: Reply | None = None


@dataclass(frozen=True)
class Drop:
    pass


@dataclass(frozen=True)
class TruncatedBody:
    pass


Outcome = Union[Reply, HttpError, Stall, Drop, TruncatedBody]
Responder = Callable[[dict, dict], Union[Outcome, Awaitable[Outcome]]]


@dataclass(frozen=True)
class LogEntry:
    key: str | None
    outcome: str  # "reply", "http_500", "stall", "drop", "truncated"


def completion_body(body: dict, reply: Reply, number: int) -> dict:
    prompt_tokens = reply.prompt_tokens if reply.prompt_tokens is not None else max(1, len(json.dumps(body.get("messages", ""))) // 4)
    completion_tokens = reply.completion_tokens if reply.completion_tokens is not None else max(1, len(reply.content) // 4)
    return {
        "id": f"chatcmpl-local-{number}",
        "object": "chat.completion",
        "created": 0,
        "model": body.get("model", "local"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.content}, "finish_reason": reply.finish_reason}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens},
    }


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 408: "Request Timeout", 429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}


class LocalServer:
    """Run with ``with LocalServer(responder) as server:``; ``server.base_url`` goes into the config."""

    def __init__(self, responder: Responder, *, host: str = "127.0.0.1", port: int = 0, latency_s: float = 0.0, api_key: str | None = None):
        """``api_key``: when set, every request without ``Authorization: Bearer <api_key>`` gets 401
        (what vLLM started with ``--api-key`` does)."""
        if host not in LOOPBACK:
            raise ValueError(f"the local server binds to loopback only, not {host!r}")
        self.responder = responder
        self.api_key = api_key
        self.host, self.port, self.latency_s = host, port, latency_s
        self.log: list[LogEntry] = []
        self._numbers = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    # -- lifecycle --------------------------------------------------------
    def start(self) -> "LocalServer":
        ready = threading.Event()
        errors: list[BaseException] = []

        def serve():
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(asyncio.start_server(self._handle, self.host, self.port, backlog=1024))
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as err:  # noqa: BLE001 - reported to the starting thread
                errors.append(err)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=serve, name="local-openai-server", daemon=True)
        self._thread.start()
        ready.wait()
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        """Stop listening and cut every open connection (what a crashed server looks like)."""
        if self._loop is None:
            return

        async def shutdown():
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop = None

    def __enter__(self) -> "LocalServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- counting ---------------------------------------------------------
    def keys(self, outcome: str | None = "reply") -> list[str | None]:
        with self._lock:
            return [e.key for e in self.log if outcome is None or e.outcome == outcome]

    def _record(self, key, outcome) -> None:
        with self._lock:
            self.log.append(LogEntry(key, outcome))

    # -- HTTP -------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                request_line = await reader.readline()
                if not request_line:
                    return
                method, path, _ = request_line.decode("latin-1").split(" ", 2)
                headers = {}
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = line.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0"))
                raw = await reader.readexactly(length) if length else b""
                if not await self._route(method, path, headers, raw, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _send(self, writer, status: int, payload: dict, extra: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}", "Content-Type: application/json", f"Content-Length: {len(data)}"]
        head += [f"{k}: {v}" for k, v in (extra or {}).items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        await writer.drain()

    async def _route(self, method: str, path: str, headers: dict, raw: bytes, writer) -> bool:
        """Answer one request; False when the connection is to be closed."""
        if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
            self._record(headers.get(REQUEST_KEY_HEADER.lower()), "http_401")
            await self._send(writer, 401, {"error": {"message": "invalid API key", "type": "authentication_error"}})
            return True
        if method == "GET" and path.rstrip("/").endswith("/models"):
            await self._send(writer, 200, {"object": "list", "data": [{"id": "local", "object": "model", "owned_by": "omnivmed"}]})
            return True
        if method != "POST" or not path.rstrip("/").endswith("/chat/completions"):
            await self._send(writer, 404, {"error": {"message": f"no route {method} {path}"}})
            return True
        key = headers.get(REQUEST_KEY_HEADER.lower())
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            await self._send(writer, 400, {"error": {"message": "body is not JSON"}})
            return True
        outcome = self.responder(body, headers)
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if isinstance(outcome, Stall):
            self._record(key, "stall")
            await asyncio.sleep(outcome.seconds)
            outcome = outcome.then or Reply("")
            # The client has long gone; what it would have got is not logged as received.
            try:
                await self._send(writer, 200, completion_body(body, outcome, next(self._numbers)))
            except ConnectionError:
                return False
            return True
        if isinstance(outcome, Drop):
            self._record(key, "drop")
            writer.transport.abort()
            return False
        if isinstance(outcome, TruncatedBody):
            self._record(key, "truncated")
            data = json.dumps(completion_body(body, Reply("x" * 64), 0)).encode()
            writer.write(f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data[: len(data) // 2])
            await writer.drain()
            writer.transport.abort()
            return False
        if isinstance(outcome, HttpError):
            self._record(key, f"http_{outcome.status}")
            extra = {"Retry-After": outcome.retry_after} if outcome.retry_after is not None else None
            await self._send(writer, outcome.status, {"error": {"message": outcome.message, "type": "injected"}}, extra)
            return True
        self._record(key, "reply")
        await self._send(writer, 200, completion_body(body, outcome, next(self._numbers)))
        return True


def echo_responder(body: dict, headers: dict) -> Reply:
    """A fixed valid reply for any request: scores for a judge (it asks for JSON), a caption otherwise."""
    if body.get("response_format") or "JSON" in json.dumps(body.get("messages", ""))[-400:]:
        return Reply('{"relevance": 4, "fluency": 4, "accuracy": 4, "rationale": "echo"}', 100, 20)
    return Reply("A grasper retracts the gallbladder while the hook dissects Calot's triangle.", 100, 20)


def run_batch(input_path: Path, output_path: Path, responder: Responder) -> int:
    """Answer an OpenAI batch input file the way ``vllm run-batch`` does; returns the lines written."""
    lines = []
    for number, text in enumerate(Path(input_path).read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        item = json.loads(text)
        outcome = responder(item["body"], {REQUEST_KEY_HEADER.lower(): item["custom_id"]})
        if inspect.isawaitable(outcome):
            outcome = asyncio.run(outcome)
        if isinstance(outcome, Reply):
            response = {"status_code": 200, "request_id": f"batch-{number}", "body": completion_body(item["body"], outcome, number)}
            error = None
        else:
            status = outcome.status if isinstance(outcome, HttpError) else 500
            response, error = {"status_code": status, "request_id": f"batch-{number}", "body": None}, {"code": status, "message": "failed"}
        lines.append(json.dumps({"id": f"batch-{number}", "custom_id": item["custom_id"], "response": response, "error": error}))
    Path(output_path).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return len(lines)


def main(argv: list[str] | None = None) -> None:
    """``python -m omnivmed.rejection_sampling.server``: serve the echo responder (or the demo model) and
    print the base URL on the first line of stdout."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free one)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every reply")
    parser.add_argument("--demo", action="store_true", help="serve SmolLM2-135M-Instruct (demo model) instead of the echo")
    args = parser.parse_args(argv)
    responder: Responder = echo_responder
    if args.demo:
        from omnivmed.rejection_sampling.demo_model import DemoModel

        responder = DemoModel().responder
    server = LocalServer(responder, port=args.port, latency_s=args.latency).start()
    print(server.base_url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
