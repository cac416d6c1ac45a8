"""One chat request in two forms: the canonical one (media as content hashes), which is hashed
into the cache key, and the wire body sent to the endpoint (media as base64).

The key covers everything that can change a reply: endpoint model, messages,
sampling parameters including the seed, the response format, the candidate
index, the attempt and the prompt version. A prompt change therefore
invalidates exactly the replies it affects; nothing else is re-bought.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from typing import Callable

KEY_FORMAT = 1  # bump when the canonical form itself changes


@dataclass(frozen=True)
class Media:
    """An image or a video travelling inside a message; hashed, encoded only when sent."""

    kind: str  # "image" or "video"
    mime: str  # image/jpeg, video/mp4
    sha256: str  # of the content the model sees (for a video: of its source frames and fps)
    load: Callable[[], bytes] = field(compare=False, repr=False)

    def canonical(self) -> dict:
        return {"type": self.kind, "mime": self.mime, "sha256": self.sha256}

    def wire(self) -> dict:
        url = f"data:{self.mime};base64,{base64.b64encode(self.load()).decode('ascii')}"
        if self.kind == "video":
            return {"type": "video_url", "video_url": {"url": url}}
        return {"type": "image_url", "image_url": {"url": url}}



@dataclass(frozen=True)
class Message:
    role: str
    parts: tuple  # str (text) or Media

    def canonical(self) -> dict:
        return {"role": self.role, "content": [p if isinstance(p, str) else p.canonical() for p in self.parts]}

    def wire(self) -> dict:
        if all(isinstance(p, str) for p in self.parts):
            return {"role": self.role, "content": "".join(self.parts)}
        return {
            "role": self.role,
            "content": [{"type": "text", "text": p} if isinstance(p, str) else p.wire() for p in self.parts],
        }


@dataclass(frozen=True)
class ChatRequest:
    """Everything that goes to the endpoint, plus what the cache key needs to tell requests apart."""

    stage: str  # "caption" or "judge:<name>"
    endpoint: str  # endpoint name (for accounting; the model is what the key holds)
    model: str
    messages: tuple[Message, ...]
    temperature: float
    top_p: float
    max_tokens: int
    seed: int
    response_format: dict | None
    clip_id: str
    candidate: int
    attempt: int
    prompt_version: str

    def canonical(self) -> dict:
        return {
            "key_format": KEY_FORMAT,
            "model": self.model,
            "messages": [m.canonical() for m in self.messages],
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
            "response_format": self.response_format,
            "stage": self.stage,
            "clip_id": self.clip_id,
            "candidate": self.candidate,
            "attempt": self.attempt,
            "prompt_version": self.prompt_version,
        }

    @property
    def key(self) -> str:
        text = json.dumps(self.canonical(), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def body(self) -> dict:
        """The chat-completions body (what the batch file holds and ``create(**body)`` takes)."""
        body = {
            "model": self.model,
            "messages": [m.wire() for m in self.messages],
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
        }
        if self.response_format is not None:
            body["response_format"] = self.response_format
        return body


def derived_seed(*parts) -> int:
    """A 31-bit seed from any parts (stable across machines and Python versions)."""
    digest = hashlib.sha256("\x00".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF
