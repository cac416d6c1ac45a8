"""Captioning inputs: whole surgical videos cut into windows, with the QA text of the frames they span.

Drives a surgical builder's ``windows()`` and writes the table declared in
:mod:`omnivmed.data.caption_windows` atomically, with a ``windows.json``
summary and a rejects report beside it. Window clips live in the same clip
cache as the QA clips, so a re-run only decodes what is missing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import pyarrow as pa
from tqdm import tqdm

from omnivmed.builders import builder_class
from omnivmed.builders.surgical import CaptionWindow, SurgicalVqaBuilder
from omnivmed.data.caption_windows import WINDOW_SCHEMA, WINDOWS_NAME, WINDOWS_SUMMARY_NAME
from omnivmed.data.fileio import atomic_write_bytes, remove_temporaries, sha256_file, temporary_name
from omnivmed.data.manifest import SourceCard
from omnivmed.data.output import REJECTS_NAME, Reject, reject_counts, write_rejects
from omnivmed.rejection_sampling.outputs import unknown_source


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


def write_caption_inputs(
    builder: SurgicalVqaBuilder, raw: Path, out: Path, *, step: int, progress: bool = True, windows: Iterable[CaptionWindow | Reject] | None = None
) -> WindowsResult:
    """Cut every video of ``raw`` into windows one every ``step`` frames; write them to ``out``.

    ``windows``: the same items computed elsewhere (``omnivmed.engines.windows``); default ``builder.windows``."""
    raw, out = Path(raw), Path(out)
    builder.check_layout(raw)
    out.mkdir(parents=True, exist_ok=True)
    # A run killed while writing left its temporaries; the caller holds the folder's lock (output_lock).
    remove_temporaries(out)
    final = out / WINDOWS_NAME
    tmp = temporary_name(final)
    rejects: list[Reject] = []
    count = 0
    batch: list[dict] = []
    try:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_stream(sink, WINDOW_SCHEMA) as writer:
            items = builder.windows(raw, out, step) if windows is None else windows
            for item in tqdm(items, desc=f"windows {builder.info.name}", unit="win", disable=not progress):
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
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(final)
    reasons = reject_counts(rejects)
    write_rejects(out / REJECTS_NAME, rejects)
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
    atomic_write_bytes(out / WINDOWS_SUMMARY_NAME, (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode())
    return WindowsResult(final, count, reasons)


def builder_source_card(name: str) -> SourceCard:
    """A source's card from its builder's facts (the captioner, on its own, knows no sources)."""
    try:
        info = builder_class(name).info
    except KeyError:
        return unknown_source(name)
    return SourceCard(name, info.homepage, info.license, info.citation)
