"""Surgical video: frames from frame folders or video files, cut into clips of consecutive frames.

``open_frames`` gives a :class:`FrameSource` (a frame folder or a video decoded with
PyAV, frames addressed by index); a :class:`ClipMaker` cuts a :class:`ClipSpec` clip
(k frames at stride s ending at, or centred on, a QA frame; resized, JPEG-encoded) with
an id derived from the source's checksum, the frame indices and the spec, through an
optional on-disk :class:`ClipCache`; ``window_starts`` / ``iter_windows`` cut whole
videos into fixed-length windows for captioning.

The names below load on first use (PEP 562), so ``VideoError`` and ``REASONS``
do not pay for PyAV and OpenCV.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from omnivmed.data.lazy import lazy_names

if TYPE_CHECKING:
    from omnivmed.data.video.clips import (
        Clip,
        ClipCache,
        ClipCacheReader,
        ClipMaker,
        ClipSpec,
        clip_id,
        clip_positions,
        encode_jpeg,
        jpeg_size,
        resize_short_side,
        resized_shape,
    )
    from omnivmed.data.video.core import REASONS, VideoError
    from omnivmed.data.video.frames import (
        DigestCache,
        FolderFrames,
        FrameSource,
        VideoFrames,
        frame_files,
        open_frames,
        read_frame_file,
    )
    from omnivmed.data.video.windows import iter_windows, window_starts

# public name -> the submodule defining it
_EXPORTS: dict[str, str] = {
    "Clip": "clips",
    "ClipCache": "clips",
    "ClipCacheReader": "clips",
    "ClipMaker": "clips",
    "ClipSpec": "clips",
    "clip_id": "clips",
    "clip_positions": "clips",
    "encode_jpeg": "clips",
    "jpeg_size": "clips",
    "resize_short_side": "clips",
    "resized_shape": "clips",
    "REASONS": "core",
    "VideoError": "core",
    "DigestCache": "frames",
    "FolderFrames": "frames",
    "FrameSource": "frames",
    "VideoFrames": "frames",
    "frame_files": "frames",
    "open_frames": "frames",
    "read_frame_file": "frames",
    "iter_windows": "windows",
    "window_starts": "windows",
}


__getattr__, __dir__ = lazy_names(__name__, _EXPORTS)


__all__ = [
    "REASONS",
    "Clip",
    "ClipCache",
    "ClipCacheReader",
    "ClipMaker",
    "ClipSpec",
    "DigestCache",
    "FolderFrames",
    "FrameSource",
    "VideoError",
    "VideoFrames",
    "clip_id",
    "clip_positions",
    "encode_jpeg",
    "frame_files",
    "iter_windows",
    "jpeg_size",
    "open_frames",
    "read_frame_file",
    "resize_short_side",
    "resized_shape",
    "window_starts",
]
