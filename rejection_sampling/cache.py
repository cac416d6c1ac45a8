"""The request cache: every reply an endpoint sent, stored durably the moment it arrives.

SQLite in WAL mode with ``synchronous=FULL``: each reply is one committed
transaction (fsynced: 0.3 ms here), so a run killed at any point keeps every
reply it received, and a reader never sees half a row. Keys are request
hashes (:attr:`ChatRequest.key`), so a re-run asks only for what is missing.

Only replies are cached. Transport failures (timeouts, refused connections,
429/5xx after the last retry) are recorded in ``failures`` and asked again by
the next run. Each failure is recorded once: a transport failure once per
request and run (the next run asks again, and may fail again), a parse
failure once per reply ever (it is read again by every run, but it is the same
reply). A reply that does not parse *is* a reply (it was paid for), so it
is cached like any other; parsing happens when it is read, and the re-ask it
causes is a new request (next ``attempt``) with its own key.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from omnivmed.rejection_sampling.chat_request import ChatRequest

CACHE_NAME = "requests.sqlite"
PARSE_FAILURE = "parse"  # the kind of a reply that did not parse

_SCHEMA = """
CREATE TABLE IF NOT EXISTS replies (
    key TEXT PRIMARY KEY,
    stage TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    model TEXT NOT NULL,
    clip_id TEXT NOT NULL,
    candidate INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    content TEXT NOT NULL,
    finish_reason TEXT,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    response_json TEXT NOT NULL,
    origin TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (run INTEGER PRIMARY KEY AUTOINCREMENT, mode TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS failures (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run INTEGER NOT NULL,
    key TEXT NOT NULL,
    stage TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    clip_id TEXT NOT NULL,
    candidate INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL,
    tries INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS failures_by_key ON failures (key);
"""


class CacheError(RuntimeError):
    """The cache file exists but is not a usable request cache."""


@dataclass(frozen=True)
class CachedReply:
    key: str
    stage: str
    content: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    response_json: str
    origin: str  # "online" or "batch"


class ReplyCache:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # A generous busy timeout: worker processes of a spread run commit to the same file.
            self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=120.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as err:
            raise CacheError(f"{self.path}: not a request cache ({err})") from None

    def __enter__(self) -> "ReplyCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def begin_run(self, mode: str) -> int:
        """A run number for the failures this run records (no clock involved)."""
        return self._db.execute("INSERT INTO runs (mode) VALUES (?)", (mode,)).lastrowid

    def get(self, key: str) -> CachedReply | None:
        row = self._db.execute(
            "SELECT key, stage, content, finish_reason, prompt_tokens, completion_tokens, response_json, origin "
            "FROM replies WHERE key = ?",
            (key,),
        ).fetchone()
        return None if row is None else CachedReply(*row)

    def __contains__(self, key: str) -> bool:
        return self._db.execute("SELECT 1 FROM replies WHERE key = ?", (key,)).fetchone() is not None

    def put(self, request: ChatRequest, response: dict, origin: str = "online") -> CachedReply:
        """Store one chat-completion reply (the response body as JSON); committed before returning.

        ``request`` needs only key, stage, endpoint, model, clip_id, candidate and attempt
        (a batch output is stored from those, see batch.py).

        A second reply for a key already stored is ignored (the first one stays the truth)."""
        choice = (response.get("choices") or [{}])[0]
        content = (choice.get("message") or {}).get("content") or ""
        usage = response.get("usage") or {}
        reply = CachedReply(
            key=request.key,
            stage=request.stage,
            content=content,
            finish_reason=choice.get("finish_reason"),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            response_json=json.dumps(response, sort_keys=True, ensure_ascii=False),
            origin=origin,
        )
        self._db.execute(
            "INSERT OR IGNORE INTO replies VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                reply.key,
                request.stage,
                request.endpoint,
                request.model,
                request.clip_id,
                request.candidate,
                request.attempt,
                reply.content,
                reply.finish_reason,
                reply.prompt_tokens,
                reply.completion_tokens,
                reply.response_json,
                origin,
            ),
        )
        return self.get(request.key)

    def record_failure(self, run: int, request: ChatRequest, kind: str, detail: str, tries: int) -> bool:
        """Record one failure; False when it is already recorded (a parse failure of this reply in any
        run, another failure of this request in this run)."""
        if kind == PARSE_FAILURE:
            seen = self._db.execute("SELECT 1 FROM failures WHERE key = ? AND kind = ?", (request.key, kind)).fetchone()
        else:
            seen = self._db.execute("SELECT 1 FROM failures WHERE key = ? AND run = ?", (request.key, run)).fetchone()
        if seen is not None:
            return False
        self._db.execute(
            "INSERT INTO failures (run, key, stage, endpoint, clip_id, candidate, attempt, kind, detail, tries) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (run, request.key, request.stage, request.endpoint, request.clip_id, request.candidate, request.attempt, kind, detail, tries),
        )
        return True

    def failures(self, run: int | None = None) -> list[dict]:
        query = "SELECT run, key, stage, endpoint, clip_id, candidate, attempt, kind, detail, tries FROM failures"
        rows = self._db.execute(query + (" WHERE run = ?" if run is not None else "") + " ORDER BY seq", (() if run is None else (run,))).fetchall()
        names = ("run", "key", "stage", "endpoint", "clip_id", "candidate", "attempt", "kind", "detail", "tries")
        return [dict(zip(names, row)) for row in rows]

    def keys(self) -> set[str]:
        return {row[0] for row in self._db.execute("SELECT key FROM replies")}

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0]
