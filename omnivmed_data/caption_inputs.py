"""Captioning inputs: whole surgical videos cut into windows, with the QA text of the frames they span.

The captioner (``omnivmed-data caption``) reads these; they are not Samples
(no conversation yet), so they get their own small Arrow table,
``windows.arrow`` (IPC stream, one row per window), written atomically with a
``windows.json`` summary beside it. Window clips live in the same clip cache
as the QA clips, so a re-run only decodes what is missing.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from tqdm import tqdm

from omnivmed.builders.base import Reject
from omnivmed.builders.surgical import CaptionWindow, SurgicalVqaBuilder
from omnivmed.data.fileio import atomic_write_bytes, sha256_file, temporary_name

WINDOWS_NAME = "windows.arrow"
SUMMARY_NAME = "windows.json"
REJECTS_NAME = "rejects.jsonl"

WINDOW_SCHEMA = pa.schema(
    [
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("video", pa.string(), nullable=False),
        pa.field("source_path", pa.string(), nullable=False),
        pa.field("frame_format", pa.string(), nullable=False),
        pa.field("frames", pa.list_(pa.binary()), nullable=False),
        pa.field("frame_indices", pa.list_(pa.int64()), nullable=False),
        pa.field("timestamps_s", pa.list_(pa.float64())),
        pa.field("fps", pa.float64()),
        pa.field(
            "qa",
            pa.list_(pa.struct([("frame", pa.int64()), ("question", pa.string()), ("answer", pa.string())])),
            nullable=False,
        ),
    ]
)


@dataclass(frozen=True)
class WindowsResult:
    path: Path
    windows: int
    rejects: dict[str, int]


def _row(source: str, window: CaptionWindow) -> dict:
    clip = window.clip
    return {
        "clip_id": clip.id,
        "source": source,
        "split": window.split,
        "video": window.video,
        "source_path": window.source_path,
        "frame_format": "jpeg",
        "frames": list(clip.frames),
        "frame_indices": list(clip.frame_indices),
        "timestamps_s": None if clip.timestamps_s is None else list(clip.timestamps_s),
        "fps": clip.fps,
        "qa": [{"frame": f, "question": q, "answer": a} for f, q, a in window.qa],
    }


def write_caption_inputs(builder: SurgicalVqaBuilder, raw: Path, out: Path, *, step: int, progress: bool = True) -> WindowsResult:
    """Cut every video of ``raw`` into windows one every ``step`` frames; write them to ``out``."""
    raw, out = Path(raw), Path(out)
    builder.check_layout(raw)
    out.mkdir(parents=True, exist_ok=True)
    final = out / WINDOWS_NAME
    tmp = temporary_name(final)
    rejects: list[Reject] = []
    count = 0
    batch: list[dict] = []
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_stream(sink, WINDOW_SCHEMA) as writer:
        for item in tqdm(builder.windows(raw, out, step), desc=f"windows {builder.info.name}", unit="win", disable=not progress):
            if isinstance(item, Reject):
                rejects.append(item)
                continue
            batch.append(_row(builder.info.name, item))
            count += 1
            if len(batch) == 32:
                writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=WINDOW_SCHEMA))
                batch = []
        if batch:
            writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=WINDOW_SCHEMA))
    tmp.replace(final)
    reasons = dict(sorted(Counter(r.reason for r in rejects).items()))
    lines = "".join(json.dumps(r.to_dict(), ensure_ascii=False, sort_keys=True) + "\n" for r in rejects)
    atomic_write_bytes(out / REJECTS_NAME, lines.encode())
    summary = {
        "source": builder.info.name,
        "windows": count,
        "step": step,
        "clip": builder.spec.key(),
        "options": dict(builder.options),
        "rejects": reasons,
        "file": WINDOWS_NAME,
        "sha256": sha256_file(final),
    }
    atomic_write_bytes(out / SUMMARY_NAME, (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode())
    return WindowsResult(final, count, reasons)


def read_caption_inputs(path: Path) -> pa.Table:
    """The windows table (memory-mapped)."""
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_stream(source).read_all()
