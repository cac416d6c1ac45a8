"""A trained model as an OpenAI-compatible endpoint: ``GET /v1/models`` and ``POST /v1/chat/completions``.

Requests take the shapes the project's captioner and evaluator send (rejection_sampling/chat_request.py):
messages whose content is a string or a list of ``text``, ``image_url`` and ``video_url`` parts, the
media as ``data:`` URLs of base64 JPEG/PNG (images) or MP4 (a clip); nothing is fetched from the network.
The model is listed under three ids, which say what a request's images are:

* ``NAME``: each image is an image (one: ``image``; several: ``multi_image``);
* ``NAME:volume``: the request's images are the slices of one volume, in order;
* ``NAME:video``: they are the frames of one clip (the captioner's ``media: images`` mode).

A ``video_url`` part is a clip whatever the id: its frames are read as ``omnivmed-chat --video`` reads a
file. Each visual input goes where its first part was, as ``<image>`` / ``<video>`` in the text.
Sampling: ``temperature`` (default 0: greedy), ``top_p``, ``seed`` (default 0), ``max_tokens`` (or
``max_completion_tokens``); one choice per request, no streaming. Requests are answered one at a time
(a request's text does not depend on what else is in flight).

Bound to 127.0.0.1 by default. With ``OMNIVMED_SERVE_API_KEY`` set, every request must carry
``Authorization: Bearer <key>`` (401 otherwise); another host is refused unless that key is set.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import json
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

API_KEY_ENV = "OMNIVMED_SERVE_API_KEY"
MODES = ("", "volume", "video")  # the id suffixes: NAME, NAME:volume, NAME:video
DEFAULT_MAX_TOKENS = 256
MAX_BODY = 512 << 20  # bytes: a request with a few hundred base64 slices


class RequestError(ValueError):
    """A request the server answers with a 4xx status and this message."""

    def __init__(self, message: str, status: int = 400, code: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.code = status, code


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_binding(host: str, api_key: str | None) -> None:
    """A non-loopback host needs an API key (from the environment): the model answers anyone who can reach it."""
    if not is_loopback(host) and not api_key:
        raise RequestError(f"--host {host} is reachable from other machines: set {API_KEY_ENV} to the key clients must send")


# --- requests -> queries ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Media:
    kind: str  # image or video
    data: bytes


def _data_url(url: str, what: str) -> tuple[str, bytes]:
    if not isinstance(url, str) or not url.startswith("data:"):
        raise RequestError(f"{what}: only data: URLs are taken (base64 JPEG/PNG images, MP4 clips), not {str(url)[:40]!r}")
    head, _, payload = url.partition(",")
    if not head.endswith(";base64"):
        raise RequestError(f"{what}: the data URL is not base64")
    try:
        return head[5 : -len(";base64")], base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(f"{what}: the data URL's base64 does not decode") from None


def _parts(content, where: str) -> list[str | _Media]:
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        raise RequestError(f"{where}: content must be a string or a list of parts")
    parts: list[str | _Media] = []
    for n, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        what = f"{where} part {n}"
        if kind == "text":
            parts.append(str(part.get("text", "")))
        elif kind in ("image_url", "video_url"):
            ref = part.get(kind)
            url = ref.get("url") if isinstance(ref, dict) else ref
            _, data = _data_url(url, what)
            parts.append(_Media("image" if kind == "image_url" else "video", data))
        else:
            raise RequestError(f"{what}: type {kind!r} is not text, image_url or video_url")
    return parts


def to_query(messages, mode: str, clip_frames: int):
    """The chat messages as a :class:`~omnivmed.trainer.inference.Query` (one visual input at most)."""
    from omnivmed.data.schema import IMAGE_TOKEN, VIDEO_TOKEN, Turn
    from omnivmed.trainer.inference import NO_VISUAL, Query, Visual, image_bytes, image_bytes_as_png, read_clip

    if not isinstance(messages, list) or not messages:
        raise RequestError("messages must be a non-empty list")
    turns, images, clips = [], [], []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant"):
            raise RequestError(f"messages[{i}]: role must be system, user or assistant")
        pieces, first_image = [], True
        for part in _parts(message.get("content"), f"messages[{i}]"):
            if isinstance(part, str):
                pieces.append(part)
                continue
            if part.kind == "video":
                clips.append(part.data)
                pieces.append(VIDEO_TOKEN + "\n")
                continue
            images.append(part.data)
            if mode == "" or first_image:  # a volume or clip sent as images is one placeholder
                pieces.append((VIDEO_TOKEN if mode == "video" else IMAGE_TOKEN) + "\n")
            first_image = False
        text = "".join(pieces).strip("\n") if pieces else ""
        turns.append(Turn(message["role"], text))
    if clips and images or len(clips) > 1:
        raise RequestError("one visual input a request: a clip (video_url), or images")
    if clips:
        with tempfile.NamedTemporaryFile(suffix=".mp4") as f:
            f.write(clips[0])
            f.flush()
            visual = read_clip(Path(f.name), frames=clip_frames)
    elif images:
        encoded = [image_bytes(data, f"image {n}") for n, data in enumerate(images)]
        formats = {fmt for _, fmt in encoded}
        frames = tuple(data if len(formats) == 1 else image_bytes_as_png(data) for data, _ in encoded)
        kind = {"": "image" if len(frames) == 1 else "multi_image", "volume": "volume", "video": "video"}[mode]
        visual = Visual(kind, frames, formats.pop() if len(formats) == 1 else "png")
    else:
        visual = NO_VISUAL
    return Query(tuple(turns), visual)


def settings_of(body: dict):
    from omnivmed.trainer.inference import Settings

    if body.get("stream"):
        raise RequestError("stream is not supported")
    if body.get("n", 1) != 1:
        raise RequestError("n must be 1")
    for unsupported in ("response_format", "tools", "stop", "logprobs"):
        if body.get(unsupported):
            raise RequestError(f"{unsupported} is not supported")
    try:
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS
        temperature = body.get("temperature")
        top_p = body.get("top_p")
        seed = body.get("seed")
        return Settings(
            max_new_tokens=int(max_tokens),
            temperature=0.0 if temperature is None else float(temperature),
            top_p=1.0 if top_p is None else float(top_p),
            seed=0 if seed is None else int(seed),
        )
    except (TypeError, ValueError) as err:
        raise RequestError(str(err)) from None


# --- the server ---------------------------------------------------------------------------------


class ModelServer:
    """``with ModelServer(runner, port=0) as server:`` serves until the block ends; ``server.base_url``.

    ``name``: the model id (default: the runner's, the stage folder's name)."""

    def __init__(self, runner, *, host: str = "127.0.0.1", port: int = 0, api_key: str | None = None, name: str | None = None):
        check_binding(host, api_key)
        self.runner, self.api_key, self.name = runner, api_key, name or runner.name
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer((host, port), _handler(self))
        self.httpd.daemon_threads = True
        self.host, self.port = host, self.httpd.server_address[1]
        self._thread: threading.Thread | None = None
        self.created = int(time.time())

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    @property
    def model_ids(self) -> list[str]:
        return [self.name + (f":{mode}" if mode else "") for mode in MODES]

    def start(self) -> "ModelServer":
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="omnivmed-serve", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> "ModelServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- answers -------------------------------------------------------------------------------

    def authorised(self, header: str | None) -> bool:
        if not self.api_key:
            return True
        given = (header or "").removeprefix("Bearer ").strip()
        return hmac.compare_digest(given.encode(), self.api_key.encode())

    def models(self) -> dict:
        entries = [{"id": i, "object": "model", "created": self.created, "owned_by": "omnivmed"} for i in self.model_ids]
        return {"object": "list", "data": entries}

    def complete(self, body: dict) -> dict:
        from omnivmed.trainer.inference import InputError

        if not isinstance(body, dict):
            raise RequestError("the body must be a JSON object")
        model = body.get("model")
        if model not in self.model_ids:
            raise RequestError(f"model {model!r} is not served; ids: {', '.join(self.model_ids)}", 404, "model_not_found")
        mode = model.partition(":")[2]
        try:
            settings = settings_of(body)
            query = to_query(body.get("messages"), mode, self.runner.spec.max_frames)
            with self._lock:
                (answer,) = self.runner.generate([query], settings)
        except InputError as err:
            raise RequestError(str(err)) from None
        used = len(answer.tokens)
        return {
            "id": f"chatcmpl-omnivmed-{time.time_ns()}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": answer.text}, "finish_reason": answer.finish_reason}
            ],
            "usage": {"prompt_tokens": answer.prompt_tokens, "completion_tokens": used, "total_tokens": answer.prompt_tokens + used},
        }


def _handler(server: ModelServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the openai client expects
        server_version = "omnivmed-serve"

        def _send(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str, code: str) -> None:
            self._send(status, {"error": {"message": message, "type": code, "code": code}})

        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                raise RequestError(f"the body is over {MAX_BODY >> 20} MiB", 413)
            return self.rfile.read(length) if length else b""

        def _allowed(self) -> bool:
            if server.authorised(self.headers.get("Authorization")):
                return True
            self._error(401, f"a valid API key is needed (Authorization: Bearer, the server's {API_KEY_ENV})", "invalid_api_key")
            return False

        def do_GET(self) -> None:
            if not self._allowed():
                return
            if self.path.rstrip("/").endswith("/models"):
                self._send(200, server.models())
            else:
                self._error(404, f"no route GET {self.path}", "not_found")

        def do_POST(self) -> None:
            try:
                raw = self._body()
            except RequestError as err:
                self.close_connection = True
                return self._error(err.status, str(err), err.code)
            if not self._allowed():
                return
            if not self.path.rstrip("/").endswith("/chat/completions"):
                return self._error(404, f"no route POST {self.path}", "not_found")
            try:
                body = json.loads(raw)
                self._send(200, server.complete(body))
            except json.JSONDecodeError:
                self._error(400, "the body is not JSON", "invalid_request_error")
            except RequestError as err:
                self._error(err.status, str(err), err.code)
            except Exception as err:  # noqa: BLE001 - the client gets a 500, the log the reason
                print(f"omnivmed-serve: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
                self._error(500, f"{type(err).__name__}: {err}", "server_error")

        def log_message(self, format: str, *args) -> None:  # one short line a request, on stderr
            print(f"omnivmed-serve: {self.command} {self.path} {args[1] if len(args) > 1 else ''}", file=sys.stderr, flush=True)

    return Handler
