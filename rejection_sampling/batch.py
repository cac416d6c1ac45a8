"""Offline batch mode: OpenAI batch-format JSONL for ``vllm run-batch`` (or the OpenAI Batch API),
and ingestion of its output file into the same request cache.

Written: one file per endpoint, ``<dir>/<endpoint>.jsonl``, one line per request the
cache lacks: ``{"custom_id": <request key>, "method": "POST", "url":
"/v1/chat/completions", "body": {...}}``, in clip order. The requests are
also remembered in the cache (``batch_requests``), so an output line can be
stored under its full request without the input file.

Read: vLLM / OpenAI output lines ``{"custom_id", "response": {"status_code",
"body"}, "error"}``. A 200 reply is cached; an error line is recorded as a
failure (not cached); a line that is not JSON, lacks a custom_id or names a
request this cache never wrote is reported with the file and line number,
and the rest of the file goes on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from omnivmed.data.fileio import atomic_write_bytes
from omnivmed.rejection_sampling.cache import ReplyCache
from omnivmed.rejection_sampling.chat_request import ChatRequest

BATCH_URL = "/v1/chat/completions"

_TABLE = """
CREATE TABLE IF NOT EXISTS batch_requests (
    key TEXT PRIMARY KEY, stage TEXT NOT NULL, endpoint TEXT NOT NULL, model TEXT NOT NULL,
    clip_id TEXT NOT NULL, candidate INTEGER NOT NULL, attempt INTEGER NOT NULL, prompt_version TEXT NOT NULL
)
"""


@dataclass
class IngestReport:
    cached: int = 0
    already_cached: int = 0
    failed: int = 0
    problems: list[str] = field(default_factory=list)


def _db(cache: ReplyCache):
    db = cache._db  # the batch table lives in the same file, next to the replies it leads to
    db.execute(_TABLE)
    return db


def write_batch_files(cache: ReplyCache, requests: list[ChatRequest], folder: Path) -> dict[str, Path]:
    """One JSONL file per endpoint with ``requests`` (already in the order to write)."""
    folder = Path(folder)
    db = _db(cache)
    lines: dict[str, list[str]] = {}
    for r in requests:
        db.execute(
            "INSERT OR IGNORE INTO batch_requests VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (r.key, r.stage, r.endpoint, r.model, r.clip_id, r.candidate, r.attempt, r.prompt_version),
        )
        line = {"custom_id": r.key, "method": "POST", "url": BATCH_URL, "body": r.body()}
        lines.setdefault(r.endpoint, []).append(json.dumps(line, ensure_ascii=False, sort_keys=True))
    written = {}
    for endpoint, rows in sorted(lines.items()):
        path = folder / f"{endpoint}.jsonl"
        atomic_write_bytes(path, ("\n".join(rows) + "\n").encode())
        written[endpoint] = path
    return written


@dataclass(frozen=True)
class StoredRequest:
    """What the cache needs of a request to store its reply (the messages stay in the batch file)."""

    key: str
    stage: str
    endpoint: str
    model: str
    clip_id: str
    candidate: int
    attempt: int
    prompt_version: str


def ingest_batch_output(cache: ReplyCache, path: Path, run: int) -> IngestReport:
    path = Path(path)
    db = _db(cache)
    report = IngestReport()
    try:
        handle = open(path, encoding="utf-8")
    except OSError as err:
        report.problems.append(f"{path}: cannot read ({err.strerror})")
        return report
    with handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            where = f"{path.name}:{number}"
            try:
                line = json.loads(text)
            except json.JSONDecodeError as err:
                report.problems.append(f"{where}: not JSON ({err.msg}; a truncated file?)")
                continue
            key = line.get("custom_id") if isinstance(line, dict) else None
            if not isinstance(key, str):
                report.problems.append(f"{where}: no custom_id")
                continue
            row = db.execute("SELECT * FROM batch_requests WHERE key = ?", (key,)).fetchone()
            if row is None:
                report.problems.append(f"{where}: custom_id {key[:16]}... was not written from this cache")
                continue
            request = StoredRequest(*row)
            if key in cache:
                report.already_cached += 1
                continue
            response = line.get("response") or {}
            status = response.get("status_code")
            body = response.get("body")
            if line.get("error") or status != 200 or not isinstance(body, dict) or not isinstance(body.get("choices"), list):
                detail = json.dumps(line.get("error") or {"status_code": status}, sort_keys=True)[:300]
                cache.record_failure(run, request, f"batch_{status}", detail, 1)
                report.failed += 1
                continue
            cache.put(request, body, origin="batch")
            report.cached += 1
    return report
