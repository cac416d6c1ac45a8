"""The second mode: whole videos cut into fixed-length windows (the input to captioning).

A window is a clip of ``spec.length`` frames at ``spec.stride`` that lies wholly inside
the video (never padded); one starts every ``step`` positions of the source's
``indices()``. :func:`window_starts` gives the anchor frame of each window - the frame a
:class:`~omnivmed.data.video.clips.ClipMaker` with the same spec is asked for: the last
frame for ``anchor="end"``, the one ``length // 2`` frames in for ``anchor="center"``.
"""

from __future__ import annotations

from typing import Iterator, Sequence

from omnivmed.data.video.clips import Clip, ClipMaker, ClipSpec
from omnivmed.data.video.frames import FrameSource


def window_starts(available: Sequence[int], spec: ClipSpec, step: int) -> list[int]:
    """Anchors (end frames, or centre frames for a centred spec) of consecutive whole windows,
    one every ``step`` positions, starting with the window that begins at the first frame."""
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise ValueError(f"step must be an integer >= 1, got {step!r}")
    first_anchor = spec.before * spec.stride  # position of the first window's anchor
    last_anchor = len(available) - 1 - (spec.length - 1 - spec.before) * spec.stride
    return [available[p] for p in range(first_anchor, last_anchor + 1, step)]


def iter_windows(source: FrameSource, maker: ClipMaker, step: int | None = None) -> Iterator[Clip]:
    """Every window of ``source`` as a clip, in order; ``step`` defaults to the window's span
    plus one stride (windows that neither overlap nor leave gaps)."""
    spec = maker.spec
    step = spec.length * spec.stride if step is None else step
    for anchor in window_starts(source.indices(), spec, step):
        yield maker.clip(source, anchor)
