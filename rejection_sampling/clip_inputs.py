"""The captioner's input: the windows table written by ``omnivmed-data windows``, read as clips.

A clip carries its frames (JPEG bytes), their timing, and the QA lines of the
frames it spans (the text the prompts combine with the pictures). A row the
captioner cannot use (no frames, no QA text) becomes a reject naming the
file and the clip; the rest goes on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pyarrow as pa

from omnivmed.data.output import Reject
from omnivmed.data.caption_windows import WINDOW_SCHEMA, WINDOWS_NAME


class ClipInputError(ValueError):
    """A windows file that cannot be read at all (the message names it)."""


@dataclass(frozen=True)
class ClipInput:
    clip_id: str
    source: str
    split: str
    video: str
    source_path: str
    frame_format: str
    frames: tuple[bytes, ...]
    frame_indices: tuple[int, ...]
    timestamps_s: tuple[float, ...] | None
    fps: float | None
    qa: tuple[tuple[int, str, str], ...]  # (frame, question, answer)

    @cached_property
    def frame_hashes(self) -> tuple[str, ...]:
        return tuple(hashlib.sha256(f).hexdigest() for f in self.frames)


def windows_path(path: Path) -> Path:
    """Accept the windows file or the folder ``omnivmed-data windows`` wrote it into."""
    path = Path(path)
    return path / WINDOWS_NAME if path.is_dir() else path


def read_clips(path: Path, limit: int | None = None, *, require_qa: bool = True) -> tuple[list[ClipInput], list[Reject]]:
    """Clips of a windows table in file order (at most ``limit``), and the rows rejected.

    ``require_qa``: a window without QA lines is rejected, since the text judge would have
    nothing to check a caption's accuracy against."""
    path = windows_path(path)
    try:
        with pa.memory_map(str(path)) as source:
            table = pa.ipc.open_stream(source).read_all()
    except FileNotFoundError:
        raise ClipInputError(f"{path}: no such windows file (write one with `omnivmed-data windows`)") from None
    except (pa.ArrowInvalid, OSError) as err:
        raise ClipInputError(f"{path}: not an Arrow IPC stream ({err})") from None
    missing = [f.name for f in WINDOW_SCHEMA if f.name not in table.schema.names]
    if missing:
        raise ClipInputError(f"{path}: not a windows table (missing columns: {', '.join(missing)})")
    clips: list[ClipInput] = []
    rejects: list[Reject] = []
    seen: set[str] = set()
    for row in table.to_pylist():
        if limit is not None and len(clips) >= limit:
            break
        clip_id = row["clip_id"]
        problem = None
        if not row["frames"]:
            problem = ("no_frames", "the window holds no frames")
        elif require_qa and not row["qa"]:
            problem = ("no_qa_text", "no QA line falls inside this window: nothing to ground a caption on")
        elif clip_id in seen:
            problem = ("duplicate_clip", "the same clip id appears twice; the first row is kept")
        if problem:
            rejects.append(Reject(path.name, clip_id, *problem))
            continue
        seen.add(clip_id)
        clips.append(
            ClipInput(
                clip_id=clip_id,
                source=row["source"],
                split=row["split"],
                video=row["video"],
                source_path=row["source_path"],
                frame_format=row["frame_format"],
                frames=tuple(row["frames"]),
                frame_indices=tuple(row["frame_indices"]),
                timestamps_s=None if row["timestamps_s"] is None else tuple(row["timestamps_s"]),
                fps=row["fps"],
                qa=tuple((q["frame"], q["question"], q["answer"]) for q in row["qa"]),
            )
        )
    return clips, rejects
