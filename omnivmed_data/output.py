"""The one output writer: a folder of shards, its counts, its rejects report and its manifest.

Every stage that produces Samples (build, mix, caption) writes through
:class:`OutputWriter`, so they agree on what an output folder is:

```
<out>/
  manifest.json               written last: its presence means the folder is complete
  rejects.jsonl               one JSON line per input kept out, when the stage has rejects
  <split>/<split>-NNNNN.arrow the shards (see shards.py)
  frame-table/frames-NNNNN.arrow  with shared_frames: each distinct frame once, which the shards reference
```

Opening a writer takes the folder's lock (:func:`~omnivmed.data.fileio.folder_lock`:
``<out>/.omnivmed.lock``, held until :meth:`OutputWriter.finish` or the end of
the ``with`` block), so a second writer into the same folder stops with
:class:`OutputBusy` before touching anything. It then clears what an earlier
(possibly crashed) run left: the manifest first, so a half-cleared folder never looks finished, then every
split folder holding shards or shard temporaries. Nothing else in ``out`` is
touched (caches, clip folders, a caption run's request cache).

:func:`merge_part` is the merge code shared by ``combine`` and the mix: one
part manifest's options, counters, duplicates, rejects and source card folded
into a whole under a prefix.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from omnivmed.data.fileio import FolderBusy, atomic_write_bytes, folder_lock, remove_temporaries
from omnivmed.data.manifest import COUNT_AXES, Manifest, ShardInfo, SourceCard
from omnivmed.data.schema import Sample
from omnivmed.data.shards import DEFAULT_MAX_SHARD_BYTES, ShardWriter

MANIFEST_NAME = "manifest.json"
REJECTS_NAME = "rejects.jsonl"

OutputBusy = FolderBusy  # another live process is writing the folder (one line: its PID and command)


def output_lock(out: Path, command: str | None = None):
    """Hold ``out``'s writer lock for a whole command (build, mix); OutputWriter inside re-enters it."""
    return folder_lock(Path(out), command)


@dataclass(frozen=True)
class Reject:
    """A bad input: which file, which record in it, and why."""

    file: str
    record: str
    reason: str  # a short category, counted in the manifest
    detail: str  # one human line

    def to_dict(self) -> dict:
        return {"file": self.file, "record": self.record, "reason": self.reason, "detail": self.detail}


def rejects_jsonl(rejects: Iterable[Reject]) -> bytes:
    return "".join(json.dumps(r.to_dict(), ensure_ascii=False, sort_keys=True) + "\n" for r in rejects).encode()


def write_rejects(path: Path, rejects: Iterable[Reject]) -> None:
    atomic_write_bytes(Path(path), rejects_jsonl(rejects))


def reject_counts(rejects: Iterable[Reject]) -> dict[str, int]:
    return dict(sorted(Counter(r.reason for r in rejects).items()))


def clear_previous_outputs(out: Path) -> None:
    """Remove an earlier run's manifest and shards and a crashed run's shard temporaries (only our own files)."""
    out = Path(out)
    if not out.is_dir():
        return
    (out / MANIFEST_NAME).unlink(missing_ok=True)
    # A killed run's atomic-write temporaries: manifest, rejects, the data card and its figures (datacard.FIGURES_DIR;
    # not imported: it would pull the card's modules into every command's start-up).
    for folder in (out, out / "figures"):
        remove_temporaries(folder)
    for split_dir in sorted(out.iterdir()):
        if split_dir.is_dir() and (any(split_dir.glob("*.arrow")) or any(split_dir.glob(".*.arrow*.tmp"))):
            shutil.rmtree(split_dir)


class OutputWriter:
    """Shards plus per-axis counts into ``out``; :meth:`finish` writes the rejects and the manifest.

    Use as a context manager around the writing: an exception leaves the
    completed shards, removes the temporaries and writes no manifest.
    """

    def __init__(self, out: Path, *, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES, shared_frames: bool = False):
        self.out = Path(out)
        if self.out.exists() and not self.out.is_dir():
            raise NotADirectoryError(f"{self.out}: is a file, not a folder; choose a folder for --out")
        self._lock = ExitStack()
        self._lock.enter_context(folder_lock(self.out))  # raises OutputBusy before anything is touched
        try:
            clear_previous_outputs(self.out)
        except BaseException:
            self._lock.close()
            raise
        self.counts: dict[str, Counter] = {axis: Counter() for axis in COUNT_AXES}
        self._shards = ShardWriter(self.out, max_shard_bytes=max_shard_bytes, shared_frames=shared_frames)
        self._closed: list[ShardInfo] | None = None

    def __enter__(self) -> "OutputWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is not None and self._closed is None:
                self._shards.abort()
        finally:
            self._lock.close()

    @property
    def rows(self) -> int:
        return sum(self.counts["split"].values())

    def write(self, sample: Sample) -> None:
        for axis in COUNT_AXES:
            self.counts[axis][getattr(sample, axis)] += 1
        self._shards.write(sample)

    def write_row(self, row: dict) -> None:
        """A row already in schema form (copied from another shard)."""
        for axis in COUNT_AXES:
            self.counts[axis][row[axis]] += 1
        self._shards.write_row(row)

    def close_shards(self) -> list[ShardInfo]:
        """Finish the open shards (idempotent); side files may then be written before :meth:`finish`."""
        if self._closed is None:
            self._closed = self._shards.close()
        return self._closed

    def finish(self, manifest: Manifest, rejects: list[Reject] | None = None) -> Manifest:
        """Fill ``manifest``'s shards and counts, write ``rejects.jsonl`` (when given), then the manifest."""
        manifest.shards = self.close_shards()
        manifest.frame_table = list(self._shards.frame_files)
        manifest.counts = {axis: dict(sorted(c.items())) for axis, c in self.counts.items()}
        if rejects is not None:
            manifest.rejects = reject_counts(rejects)
            manifest.rejects_report = REJECTS_NAME
            write_rejects(self.out / REJECTS_NAME, rejects)
        manifest.save(self.out / MANIFEST_NAME)
        self._lock.close()
        return manifest


def merge_part(whole: Manifest, part: Manifest, prefix: str, rejects: Counter, cards: dict[str, SourceCard]) -> None:
    """Fold ``part`` into ``whole`` under ``prefix``: options, counters, duplicates, rejects and source cards.

    ``rejects`` and ``cards`` accumulate across parts (the caller sets them on
    ``whole`` once every part is in: see :func:`settle_merge`).
    """
    whole.options.update({f"{prefix}.{k}": v for k, v in part.options.items()})
    whole.counters.update({f"{prefix}.{k}": n for k, n in part.counters.items()})
    whole.duplicates_removed += part.duplicates_removed
    rejects.update({f"{prefix}:{reason}": n for reason, n in part.rejects.items()})
    for card in part.sources:
        cards.setdefault(card.name, card)


def settle_merge(whole: Manifest, rejects: Counter, cards: dict[str, SourceCard]) -> None:
    """The accumulated rejects and source cards onto ``whole``, in a deterministic order."""
    whole.sources = [cards[name] for name in sorted(cards)]
    whole.rejects = dict(sorted(rejects.items()))
    whole.options = dict(sorted(whole.options.items()))
    whole.counters = dict(sorted(whole.counters.items()))
