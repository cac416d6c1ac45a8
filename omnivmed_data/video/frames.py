"""One video's frames addressed by integer index: frame folders and video files (PyAV).

A :class:`FrameSource` answers three questions for the clip segmenter: which frame
indices exist (:meth:`~FrameSource.indices`), what the frames at some indices look like
(:meth:`~FrameSource.read`, RGB uint8) and which source bytes they come from
(:meth:`~FrameSource.digest`, for clip ids).

* :class:`FolderFrames` - files whose stem ends in an integer (``12.png``,
  ``frame012.png``, ``00012.jpg``); the integer is the index. Decoded with Pillow.
* :class:`VideoFrames` - a video file decoded with PyAV. Frame ``i`` is the frame shown
  ``i / fps`` seconds after the first one (``round((pts - start_pts) * time_base *
  fps)``), which for a constant-rate video is the i-th frame a sequential decode gives.
  The container stays open between reads. Reading seeks to the keyframe before the first
  wanted frame and decodes forward; reads that move forward by at most ~2 s keep decoding
  instead of seeking, and so do longer jumps when the container's index (mp4, avi) shows
  that the seek would land on a keyframe already passed (long GOPs). The last decoded
  frames are kept (still in the decoder's YUV, converted to RGB only when asked for) so
  that overlapping clips do not seek back. The conversion to RGB (:func:`rgb_array`)
  reuses one single-threaded swscale context: ``frame.to_ndarray`` would set up a new one
  for every frame, which costs more than the conversion; the pixels are the same.
  :meth:`~VideoFrames.iter_decoded` hands out the decoded frames one at a time (the clip
  maker converts, resizes and encodes one while the next decodes). Frames are bit-exactly
  those of a decode from the start: after a seek the reader starts at a keyframe packet
  and drops frames shown before it (open-GOP leading pictures whose references lie before
  the seek point; FFmpeg's decoders usually drop them themselves), and when the first
  frame it gets lies after the wanted one (such dropped leading frames, or a demuxer that
  seeks by decode time) it seeks further back and tries again.
* :class:`DigestCache` - sha256 of big video files remembered by (path, size, mtime), so
  a re-run does not hash gigabytes again.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from abc import ABC, abstractmethod
from bisect import bisect_left
from collections import OrderedDict
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Sequence

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from PIL import Image, UnidentifiedImageError

from omnivmed.data.fileio import atomic_write_bytes, sha256_file
from omnivmed.data.video.core import VideoError, ffmpeg_message

FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")
_TRAILING_INT = re.compile(r"(\d+)$")


class FrameSource(ABC):
    """One video's frames addressed by integer index."""

    path: Path
    fps: float | None

    @abstractmethod
    def indices(self) -> list[int]:
        """The available frame indices in increasing order (do not modify the list)."""

    @abstractmethod
    def read(self, indices: Sequence[int]) -> list[np.ndarray]:
        """RGB uint8 (H, W, 3) frames in the order asked (repeats allowed); VideoError naming the file."""

    @abstractmethod
    def digest(self, indices: Sequence[int]) -> str:
        """sha256 hex identifying the source bytes the frames at ``indices`` come from."""

    def close(self) -> None:
        """Release what the source holds open (idempotent)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _missing(self, index: int, available: Sequence[int]) -> VideoError:
        if available:
            span = f"{available[0]}-{available[-1]}"
            return VideoError("missing_frame", str(self.path), f"no frame {index} (frames {span}, {len(available)} in all)")
        return VideoError("missing_frame", str(self.path), f"no frame {index} (no frames)")


# --------------------------------------------------------------------------- folders


def frame_files(folder: Path) -> dict[int, Path]:
    """``{index: file}`` for the frame files of ``folder`` (stem ends in an integer; png/jpg/jpeg).

    Raises VideoError("duplicate_frame") when two files carry the same index (``1.png`` and
    ``001.png``, or ``frame1.png`` and ``1.jpg``): which one is meant cannot be guessed.
    """
    found: dict[int, Path] = {}
    for path in folder.iterdir():
        if path.name.startswith(".") or path.suffix.lower() not in FRAME_SUFFIXES or not path.is_file():
            continue
        match = _TRAILING_INT.search(path.stem)
        if match is None:
            continue
        index = int(match.group(1))
        if index in found:
            first, second = sorted([found[index].name, path.name])
            raise VideoError("duplicate_frame", str(folder), f"frames {first} and {second} both have index {index}")
        found[index] = path
    return dict(sorted(found.items()))


def _pil_message(err: Exception, path: Path) -> str:
    return str(err).replace(str(path), path.name)


def read_frame_file(path: Path) -> np.ndarray:
    """One frame file as RGB uint8 (H, W, 3); VideoError("unreadable_frame") naming the file."""
    try:
        with Image.open(path) as img:
            img.load()  # full decode: a truncated file raises here
            if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                raise VideoError("unreadable_frame", str(path), f"unsupported pixel mode {img.mode} (8-bit frames only)")
            rgb = img if img.mode == "RGB" else img.convert("RGB")
            return np.array(rgb, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        if isinstance(err, VideoError):
            raise
        raise VideoError("unreadable_frame", str(path), f"frame cannot be decoded ({_pil_message(err, path)})") from None


class FolderFrames(FrameSource):
    """A folder of frame files; the index is the integer the file's stem ends in."""

    def __init__(self, folder: Path, fps: float | None = None):
        self.path = Path(folder)
        if fps is not None and not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be a positive number, got {fps!r}")
        self.fps = None if fps is None else float(fps)
        if not self.path.is_dir():
            raise VideoError("unreadable_video", str(self.path), "not a folder")
        self._files = frame_files(self.path)
        if not self._files:
            raise VideoError("empty_folder", str(self.path), "no frame files (<name ending in an integer>.png/.jpg/.jpeg)")
        self._indices = list(self._files)
        self._sha: dict[int, bytes] = {}

    def indices(self) -> list[int]:
        return self._indices

    def file(self, index: int) -> Path:
        try:
            return self._files[index]
        except KeyError:
            raise self._missing(index, self._indices) from None

    def read(self, indices: Sequence[int]) -> list[np.ndarray]:
        decoded: dict[int, np.ndarray] = {}
        for index in indices:
            if index not in decoded:
                decoded[index] = read_frame_file(self.file(index))
        # a repeated index gets its own array: callers may modify what they get
        seen: set[int] = set()
        out = []
        for index in indices:
            out.append(decoded[index] if index not in seen else decoded[index].copy())
            seen.add(index)
        return out

    def digest(self, indices: Sequence[int]) -> str:
        """sha256 over the sha256 of exactly these frame files, in the order given."""
        h = hashlib.sha256(b"omnivmed-frame-folder\x00")
        for index in indices:
            if index not in self._sha:
                self._sha[index] = bytes.fromhex(sha256_file(self.file(index)))
            h.update(self._sha[index])
        return h.hexdigest()

    def close(self) -> None:
        self._sha.clear()


# --------------------------------------------------------------------------- digest cache


class DigestCache:
    """sha256 of big files remembered by (resolved path, size, mtime_ns) in a JSON file, written atomically.

    A damaged or foreign cache file is ignored (and rewritten on the next new digest). The
    file holds resolved paths: keep it next to the build's other local state, not in outputs.
    """

    VERSION = 1

    def __init__(self, path: Path, *, persist: bool = True):
        """``persist=False``: digests are kept in memory only (an engine's worker; its
        :attr:`added` go back to the one process that writes the file, by :meth:`remember`)."""
        self.path = Path(path)
        self.persist = persist
        self._entries: dict[str, dict] = {}
        self.added: dict[str, dict] = {}  # entries this instance hashed
        self.hashed = 0  # files hashed (cache misses) by this instance
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and data.get("version") == self.VERSION and isinstance(data.get("files"), dict):
                self._entries = {k: v for k, v in data["files"].items() if isinstance(v, dict)}
        except (OSError, ValueError):
            pass

    def sha256(self, file: Path) -> str:
        resolved = os.path.realpath(file)
        stat = os.stat(resolved)
        entry = self._entries.get(resolved)
        if entry and entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns and isinstance(entry.get("sha256"), str):
            return entry["sha256"]
        digest = sha256_file(Path(resolved))
        self.hashed += 1
        self.remember({resolved: {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}})
        return digest

    def remember(self, entries: dict[str, dict]) -> None:
        """Add entries (hashed here, or by a worker: its :attr:`added`); the file is rewritten when one is new."""
        new = {k: v for k, v in entries.items() if self._entries.get(k) != v}
        if not new:
            return
        self._entries.update(new)
        self.added.update(new)
        if self.persist:
            payload = {"version": self.VERSION, "files": dict(sorted(self._entries.items()))}
            atomic_write_bytes(self.path, (json.dumps(payload, indent=1, sort_keys=True) + "\n").encode())


# --------------------------------------------------------------------------- videos


class VideoFrames(FrameSource):
    """A video file decoded with PyAV, frames addressed by index (see the module text).

    ``keep_frames``: decoded frames kept for overlapping reads (in the decoder's YUV).
    ``thread_type``: PyAV's decoder threading ("SLICE", "FRAME", "AUTO"); None keeps PyAV's
    default, the one a plain ``av.open(...).decode()`` uses (frame threading pays off only
    with many cores).

    Counters: ``decoded_frames`` (every frame the decoder produced), ``seeks`` (re-opening
    the file to go back to its start counts as one), ``seek_retries`` (seeks repeated further
    back), ``dropped_frames`` (decoded after a seek but shown before its keyframe).
    """

    # Reads moving forward by at most this much video keep decoding instead of seeking.
    CONTINUE_S = 2.0

    def __init__(
        self,
        path: Path,
        digest_cache: DigestCache | None = None,
        *,
        keep_frames: int = 32,
        thread_type: str | None = None,
    ):
        self.path = Path(path)
        self._name = str(path)
        self._digest_cache = digest_cache
        self._sha: str | None = None
        self._keep = max(1, int(keep_frames))
        self._thread_type = thread_type
        self.decoded_frames = 0
        self.seeks = 0
        self.dropped_frames = 0  # decoded after a seek but shown before its keyframe (open GOPs)
        self.seek_retries = 0  # seeks repeated further back (landed after the wanted frame, or on nothing)
        self.container: av.container.InputContainer | None = None
        self._frames_iter: Iterator | None = None
        self._buffer: OrderedDict[int, av.VideoFrame] = OrderedDict()
        self._reformatter = VideoReformatter()  # one swscale context for every frame read()
        self._pos: int | None = None  # index of the last frame the decoder gave, None: unknown
        self._skip_to_key = False  # after a seek: drop packets until a keyframe
        self._key_pts: int | None = None  # after a seek: frames shown before this pts are dropped
        self._seeking_for: int | None = None
        self._count = self._promised = self._past_end = 0
        self._closed = False
        try:
            self._open()
            stream = self._stream
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            if not rate or rate <= 0:
                raise VideoError("unreadable_video", self._name, "the video stream states no frame rate")
            self._rate = Fraction(rate.numerator, rate.denominator)
            self.fps = float(self._rate)
            self._tb = Fraction(stream.time_base.numerator, stream.time_base.denominator)
            self._scale = self._tb * self._rate  # pts ticks -> frames
            self._gap = max(1, round(self.CONTINUE_S * self.fps))
            stated = int(stream.frames or 0)
            self._count_stated = stated > 0
            self._count = count = stated if stated > 0 else self._count_packets()
            # Frames the header promises (a cut Matroska file keeps its duration): reading one of
            # them that is not there is a truncated video, not a missing frame.
            self._promised = count if stated > 0 else max(count, self._frames_by_duration())
            # Frame 0 is the first frame the decoder gives: its pts is the start.
            first = self._next_kept()
            if first is None:
                raise VideoError("unreadable_video", self._name, "no frame could be decoded")
            if first.pts is None:
                raise VideoError("unreadable_video", self._name, "the frames carry no timestamps")
            self._start = int(first.pts)
            self._push(0, first)
            self._pos = 0
            self._indices = list(range(count))
            self._past_end = self._samples_past_end()
        except BaseException as err:
            self.close()
            if isinstance(err, VideoError):
                raise
            if isinstance(err, (av.FFmpegError, OSError)):
                raise VideoError("unreadable_video", self._name, f"cannot open as a video ({ffmpeg_message(err, self.path)})") from None
            raise

    # -- opening, positioning ------------------------------------------------

    def _open(self) -> None:
        """(Re-)open the container at its start; the decoder then behaves as for a first read."""
        self._drop_iter()
        if self.container is not None:
            self.container.close()
            self.container = None
        self.container = av.open(self._name, mode="r")
        if not self.container.streams.video:
            raise VideoError("unreadable_video", self._name, "no video stream")
        self._stream = self.container.streams.video[0]
        if self._thread_type:
            self._stream.thread_type = self._thread_type
        self._skip_to_key = False
        self._key_pts = None
        self._pos = None
        self._last_dts: int | None = None  # decode time of the last packet demuxed

    def _complete_index(self):
        """The demuxer's index of the stream when it lists every frame (mp4, avi), else None
        (Matroska's cues name only some keyframes)."""
        entries = self._stream.index_entries
        return entries if len(entries) and len(entries) == self._count else None

    def _samples_past_end(self) -> int:
        """Frames the container's index places beyond the end of the file (a cut mp4 whose
        index is at its front): 0 for a whole file or one without a complete index."""
        entries = self._complete_index()
        if entries is None:
            return 0
        size = os.path.getsize(self._name)
        last = entries[len(entries) - 1]
        if last.pos >= 0 and last.pos + last.size <= size:
            return 0
        return sum(1 for e in entries if e.pos >= 0 and e.pos + e.size > size)

    @property
    def truncated(self) -> bool:
        """True when the file is shorter than its container says (frames before the cut may still be read)."""
        return self._past_end > 0 or self._promised > self._count

    def _cut_note(self) -> str:
        if self._past_end:
            return f"; the file is cut: {self._past_end} of its {self._count} frames lie past its end"
        if self._promised > self._count:
            return f"; the file is cut ({self._count} of the {self._promised} frames its header promises)"
        return ""

    def _seek_goes_back(self, index: int) -> bool:
        """True when a seek for ``index`` would land on a keyframe the decoder has passed already
        (long GOPs): decoding on from where it is is then cheaper."""
        entries = self._complete_index()
        if entries is None or self._last_dts is None:
            return False
        found = entries.search_timestamp(self._target_ts(index), backward=True, any_frame=False)
        return found >= 0 and entries[found].timestamp <= self._last_dts

    def _target_ts(self, index: int) -> int:
        """A pts half a frame after frame ``index`` should show (robust to rounded timestamps)."""
        return self._start + math.floor((index + Fraction(1, 2)) / self._scale)

    def _frames_by_duration(self) -> int:
        """Frames the stated duration covers (0 when unknown). The container's duration is used
        only when the video is its only stream (an audio track may run longer)."""
        stream = self._stream
        if stream.duration:
            seconds = stream.duration * self._tb
        elif self.container.duration and len(self.container.streams) == 1:
            seconds = Fraction(self.container.duration, av.time_base)
        else:
            return 0
        return max(0, math.floor(seconds * self._rate + Fraction(1, 2)))

    def _count_packets(self) -> int:
        """Frames of a container that does not state them: its video packets, demuxed once (no decoding)."""
        count = sum(1 for packet in self.container.demux(self._stream) if packet.size)
        self._open()  # back to the start
        return count

    def _drop_iter(self) -> None:
        if self._frames_iter is not None:
            try:
                self._frames_iter.close()
            except Exception:
                pass
            self._frames_iter = None

    def _decoded(self) -> Iterator[av.VideoFrame]:
        for packet in self.container.demux(self._stream):
            if self._skip_to_key and packet.size:
                if not packet.is_keyframe:
                    continue
                self._skip_to_key = False
                self._key_pts = packet.pts
            if packet.size and packet.dts is not None:
                self._last_dts = packet.dts
            for frame in packet.decode():
                self.decoded_frames += 1
                yield frame

    def _next(self) -> av.VideoFrame | None:
        """The decoder's next frame, None at the end of the file."""
        if self._frames_iter is None:
            self._frames_iter = self._decoded()
        try:
            return next(self._frames_iter)
        except StopIteration:
            self._frames_iter = None
            return None
        except av.FFmpegError as err:
            if self._pos is not None:
                where = f"after frame {self._pos}"
            elif self._seeking_for is not None:
                where = f"on the way to frame {self._seeking_for}"
            else:
                where = "at the first frame"
            self._drop_iter()
            self._pos = None
            reason = "truncated_video" if self.truncated else "unreadable_video"
            note = self._cut_note()
            raise VideoError(reason, self._name, f"decoding failed {where} ({ffmpeg_message(err, self.path)}){note}") from None

    def _next_kept(self) -> av.VideoFrame | None:
        """Next frame, dropping those shown before the keyframe a seek landed on."""
        while True:
            frame = self._next()
            if frame is None or self._key_pts is None or frame.pts is None or frame.pts >= self._key_pts:
                return frame
            self.dropped_frames += 1

    def _index(self, frame: av.VideoFrame) -> int:
        if frame.pts is None:
            raise VideoError("unreadable_video", self._name, "a frame carries no timestamp")
        return round((frame.pts - self._start) * self._scale)

    def _push(self, index: int, frame: av.VideoFrame) -> None:
        self._buffer[index] = frame
        self._buffer.move_to_end(index)
        while len(self._buffer) > self._keep:
            self._buffer.popitem(last=False)

    def _seek(self, index: int) -> None:
        """Position the decoder so that its next frames lead to ``index``: the keyframe at or before it."""
        self.seeks += 1
        self._pos = None  # unknown until the seek has landed
        self._seeking_for = index
        try:
            self._seek_to(index)
        finally:
            self._seeking_for = None

    def _seek_to(self, index: int) -> None:
        one_second = max(1, math.ceil(1 / self._tb))
        ts = self._target_ts(index)
        back = 0
        while True:
            target = ts - back
            if target <= self._start:
                self._open()  # the start: exactly a sequential decode
                first = self._next_kept()
            else:
                self._drop_iter()
                self._last_dts = None
                try:
                    self.container.seek(int(target), backward=True, any_frame=False, stream=self._stream)
                except av.FFmpegError:
                    back = max(2 * back, one_second)
                    self.seek_retries += 1
                    continue
                self._skip_to_key = True
                self._key_pts = None
                first = self._next_kept()
            if first is None:  # nothing after the seek point (e.g. a cut file): go further back
                if target <= self._start:
                    self._pos = None
                    raise VideoError("truncated_video", self._name, "no frame can be decoded from the start")
                back = max(2 * back, one_second)
                self.seek_retries += 1
                continue
            first_index = self._index(first)
            if first_index <= index or target <= self._start:
                self._push(first_index, first)
                self._pos = first_index
                return
            # landed on a keyframe after the wanted frame (seek by decode time, open GOP): go back further
            back = max(2 * back, one_second, ts - (first.pts - one_second))
            self.seek_retries += 1

    def _frame(self, index: int) -> av.VideoFrame:
        """The decoded frame ``index`` (from the kept frames, by decoding on, or after a seek)."""
        if index in self._buffer:
            return self._buffer[index]
        if self._pos is None or index <= self._pos or (index - self._pos > self._gap and not self._seek_goes_back(index)):
            self._seek(index)
        while self._pos < index:
            frame = self._next_kept()
            if frame is None:
                last = self._pos
                self._pos = None
                stated = "states" if self._count_stated else "has packets for"
                raise VideoError("truncated_video", self._name, f"the video ends after frame {last} but {stated} {self._count} frames (frame {index} wanted)")
            found = self._index(frame)
            if found <= self._pos:
                continue  # a repeated timestamp: the first frame shown at that time wins
            self._push(found, frame)
            self._pos = found
        if index not in self._buffer:
            if self._promised > self._count:
                raise VideoError("truncated_video", self._name, f"no frame {index}: the file is cut ({self._count} of the {self._promised} frames its header promises)")
            raise VideoError("missing_frame", self._name, f"no frame {index}: the decoded frames' timestamps skip it (variable frame rate?)")
        return self._buffer[index]

    # -- FrameSource ------------------------------------------------------------

    def indices(self) -> list[int]:
        return self._indices

    @property
    def frame_count(self) -> int:
        return self._count

    @property
    def promised_frames(self) -> int:
        """Frames the container's header promises (more than ``frame_count`` for a cut Matroska file)."""
        return self._promised

    @property
    def closed(self) -> bool:
        return self._closed

    def read(self, indices: Sequence[int]) -> list[np.ndarray]:
        arrays = {index: rgb_array(frame, self._reformatter) for index, frame in self.iter_decoded(indices)}
        seen: set[int] = set()
        out = []
        for index in indices:
            index = int(index)
            out.append(arrays[index] if index not in seen else arrays[index].copy())
            seen.add(index)
        return out

    def iter_decoded(self, indices: Sequence[int]) -> Iterator[tuple[int, av.VideoFrame]]:
        """``(index, frame)`` for each distinct index in increasing order, still in the decoder's
        pixel format (:func:`rgb_array` converts one): what :meth:`read` does, less the conversion,
        one frame at a time, so that a caller can work on a frame while the next one decodes.
        Every index is checked before anything is decoded. The frames are the decoder's: do not
        modify them, and convert each in one thread at a time."""
        if self._closed:
            raise RuntimeError("read() on a closed VideoFrames")
        wanted = sorted({int(i) for i in indices})
        for index in wanted:
            if self._count <= index < self._promised:
                raise VideoError("truncated_video", self._name, f"no frame {index}: the file is cut ({self._count} of the {self._promised} frames its header promises)")
            if not 0 <= index < self._count:
                raise self._missing(index, self._indices)

        def frames() -> Iterator[tuple[int, av.VideoFrame]]:
            for index in wanted:  # forward: one seek per clip at most, as a rule
                yield index, self._frame(index)

        return frames()

    def digest(self, indices: Sequence[int] = ()) -> str:
        """sha256 of the whole video file (every clip of a video shares it)."""
        if self._sha is None:
            self._sha = self._digest_cache.sha256(self.path) if self._digest_cache is not None else sha256_file(self.path)
        return self._sha

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._buffer.clear()
        try:
            self._drop_iter()
        finally:
            if self.container is not None:
                self.container.close()


def rgb_array(frame: av.VideoFrame, reformatter: VideoReformatter | None = None) -> np.ndarray:
    """``frame.to_ndarray(format="rgb24")``, pixel for pixel, as an array of its own.

    ``reformatter`` (one per thread) keeps its swscale context from frame to frame;
    ``to_ndarray`` sets up a new one for every frame it has not converted before. The
    context runs on the calling thread (``threads=1``; swscale's slices give the same
    pixels on any number of threads): a threaded context kept by a thread-local or an open
    reader would hang a forked child that frees it, waiting for threads the child lacks."""
    converted = (reformatter or VideoReformatter()).reformat(frame, format="rgb24", threads=1)
    array = converted.to_ndarray()
    if converted is frame:  # already rgb24: a view into a frame the reader keeps
        array = array.copy()
    return array


def open_frames(path: Path, fps: float | None = None, digest_cache: DigestCache | None = None) -> FrameSource:
    """A folder -> :class:`FolderFrames` (at ``fps`` when given); a file -> :class:`VideoFrames`
    (a video states its own rate; ``fps`` is not used for it)."""
    path = Path(path)
    if path.is_dir():
        return FolderFrames(path, fps=fps)
    if path.is_file():
        return VideoFrames(path, digest_cache=digest_cache)
    raise VideoError("unreadable_video", str(path), "no such file or folder")


def bisect_index(available: Sequence[int], index: int) -> int | None:
    """Position of ``index`` in the increasing ``available``, None when absent."""
    if isinstance(available, range):
        return available.index(index) if index in available else None
    pos = bisect_left(available, index)
    return pos if pos < len(available) and available[pos] == index else None
