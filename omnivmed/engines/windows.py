"""``omnivmed-data windows`` on an engine: videos cut into captioning windows by N workers.

A work unit is a run of at most ``WINDOWS_PER_UNIT`` consecutive windows of one
video (the video's QA records travel with it); a worker opens the video, cuts
its windows and hands them back with the ids of the clips it made. The driver
(this process) takes the units back in order, so the items are those of
:meth:`~omnivmed.builders.surgical.SurgicalVqaBuilder.windows`, one for one,
and it alone writes: ``windows.arrow`` and the rejects report (through
:func:`omnivmed.caption_inputs.write_caption_inputs`), the clip cache and the
video digest cache. Workers only read the clip cache (a re-run reuses clips,
also on a node where the output folder is absent: it finds nothing there and
makes the clips again, the same bytes).

The plain path (``--engine local --workers 1``) does not come here.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Iterator

from omnivmed.builders.base import Reject
from omnivmed.builders.surgical import CaptionWindow, QaRecord, SurgicalVqaBuilder
from omnivmed.data.video import ClipCache, ClipCacheReader, ClipMaker, DigestCache, VideoError
from omnivmed.data.video.windows import window_starts
from omnivmed.engines import check_engine, is_plain, ordered_map

# Windows per work unit: a few MB of JPEG frames, enough decoding to outweigh a task's overhead.
WINDOWS_PER_UNIT = 32
CLIPS = "clips"
DIGESTS = "video-digests.json"


@dataclass(frozen=True)
class VideoWindows:
    """A work unit: consecutive windows (their anchor frames) of one video, with the video's QA records."""

    split: str
    video: str
    records: tuple[QaRecord, ...]
    anchors: tuple[int, ...] | None  # None: every window (the video did not open here; the worker reports why)


@dataclass(frozen=True)
class WindowsCut:
    """What a worker hands back for a unit."""

    items: tuple[CaptionWindow | Reject, ...]
    made: frozenset[str]  # ids of the clips it made (not found in the cache): the driver stores them
    digests: dict[str, dict]  # video digests it computed, for the driver's digest cache


def window_units(builder: SurgicalVqaBuilder, raw: Path, step: int, per_unit: int = WINDOWS_PER_UNIT) -> tuple[list[Reject], list[VideoWindows]]:
    """The record rejects (they come first, as in ``windows()``) and the units, in ``windows()`` order.

    Each video is opened here to count its windows (its header and first frame; a pass over its
    packets when the header states no frame count); its digest is not computed here.
    """
    rejects, videos = builder.window_videos(raw)
    units: list[VideoWindows] = []
    for split, video, records in videos:
        try:
            source = builder._source(raw, records[0], OrderedDict(), None)
        except VideoError:
            units.append(VideoWindows(split, video, records, None))
            continue
        try:
            anchors = window_starts(source.indices(), builder.spec, step)
        finally:
            source.close()
        for start in range(0, len(anchors), per_unit):
            units.append(VideoWindows(split, video, records, tuple(anchors[start : start + per_unit])))
    return rejects, units


def cut_windows(unit: VideoWindows, *, builder: SurgicalVqaBuilder, raw: Path, out: Path, step: int) -> WindowsCut:
    """One unit's windows and rejects, as ``windows()`` yields them for these anchors (runs in a worker)."""
    clips = Path(out) / CLIPS
    maker = ClipMaker(builder.spec, ClipCacheReader(clips))
    digests = DigestCache(clips / DIGESTS, persist=False)
    records = unit.records
    try:
        source = builder._source(raw, records[0], OrderedDict(), digests)
    except VideoError as err:
        return WindowsCut((builder._reject(err, raw, records[0]),), frozenset(), {})
    items: list[CaptionWindow | Reject] = []
    made: set[str] = set()
    try:
        anchors = unit.anchors if unit.anchors is not None else window_starts(source.indices(), builder.spec, step)
        before = maker.made
        # Lazy: when a window comes out, maker.made already counts its clip if the cache lacked it.
        for item in builder.video_windows(raw, unit.split, unit.video, records, source, anchors, maker):
            if isinstance(item, CaptionWindow) and maker.made > before:
                made.add(item.clip.id)
            before = maker.made
            items.append(item)
    finally:
        source.close()
    return WindowsCut(tuple(items), frozenset(made), dict(digests.added))


def engine_windows(
    builder: SurgicalVqaBuilder, raw: Path, out: Path, step: int, *, engine: str, workers: int, progress: bool = False, per_unit: int = WINDOWS_PER_UNIT
) -> Iterator[CaptionWindow | Reject]:
    """``builder.windows(raw, out, step)``, item for item, with the units cut by ``engine``."""
    check_engine(engine, workers)
    raw, out = Path(raw), Path(out)
    cache = ClipCache(out / CLIPS)  # removes what a killed run left, before any worker reads
    digests = DigestCache(out / CLIPS / DIGESTS)
    rejects, units = window_units(builder, raw, step, per_unit)
    yield from rejects
    cut = partial(cut_windows, builder=builder, raw=raw, out=out, step=step)
    for result in ordered_map(cut, units, engine=engine, workers=workers, progress=progress):
        digests.remember(result.digests)
        for item in result.items:
            if isinstance(item, CaptionWindow) and item.clip.id in result.made:
                cache.put(item.clip)
            yield item


def spread_windows(builder: SurgicalVqaBuilder, raw: Path, out: Path, step: int, *, engine: str = "local", workers: int = 1, progress: bool = False):
    """The windows for :func:`omnivmed.caption_inputs.write_caption_inputs`: None on the plain path (one
    local worker: the builder's own ``windows()``), else :func:`engine_windows` on ``engine``."""
    if is_plain(engine, workers):
        return None
    return engine_windows(builder, raw, out, step, engine=engine, workers=workers, progress=progress)
