"""Clips of k frames at a stride s, ending at (or centred on) an anchor frame.

``clip_positions`` picks the frame indices, ``ClipMaker`` reads them from a
:class:`~omnivmed.data.video.frames.FrameSource`, resizes them to a short side and
encodes them as JPEG. A clip's id is derived from (the source's checksum, the frame
indices, every parameter of the spec), never from a clock, a pid or chance, so a re-run
finds the clips a killed run finished in the :class:`ClipCache` and makes only the rest.

For a video, ``ClipMaker.clip`` resizes and encodes each frame on a small thread pool
while the decoder goes on to the next one (cv2 and PyAV release the GIL). Each frame's
bytes depend only on that frame, so the clips are the same whatever the threads do.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from av.video.reformatter import VideoReformatter

from omnivmed.data.fileio import fsync_dir
from omnivmed.data.video.core import VideoError
from omnivmed.data.video.frames import FrameSource, VideoFrames, bisect_index, rgb_array

ANCHORS = ("end", "center")
AT_START = ("pad", "drop")
# Bumped when the bytes a spec produces change (encoder settings, resize rule): it is part of every id.
# v2: shrinking by an integer area step, then bilinear (was one INTER_AREA step).
CLIP_FORMAT = "clip-v2"


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@dataclass(frozen=True)
class ClipSpec:
    length: int = 8  # k frames
    stride: int = 1  # s, in source frames (positions in indices())
    anchor: str = "end"  # "end": the QA frame is the last frame; "center": the middle one (k//2 before it)
    short_side: int = 224  # resize so the shorter side is this; 0 keeps the size
    jpeg_quality: int = 90
    at_start: str = "pad"  # past the start (or the end, centred): "pad" repeats the first (last) frame, "drop" rejects

    def __post_init__(self):
        problems = []
        if not _is_int(self.length) or self.length < 1:
            problems.append(f"length must be an integer >= 1, got {self.length!r}")
        if not _is_int(self.stride) or self.stride < 1:
            problems.append(f"stride must be an integer >= 1, got {self.stride!r}")
        if self.anchor not in ANCHORS:
            problems.append(f"anchor must be one of {', '.join(ANCHORS)}, got {self.anchor!r}")
        if not _is_int(self.short_side) or self.short_side < 0:
            problems.append(f"short_side must be an integer >= 0 (0 keeps the size), got {self.short_side!r}")
        if not _is_int(self.jpeg_quality) or not 1 <= self.jpeg_quality <= 100:
            problems.append(f"jpeg_quality must be an integer in 1-100, got {self.jpeg_quality!r}")
        if self.at_start not in AT_START:
            problems.append(f"at_start must be one of {', '.join(AT_START)}, got {self.at_start!r}")
        if problems:
            raise ValueError("invalid clip spec: " + "; ".join(problems))

    @property
    def before(self) -> int:
        """Frames of the clip before its anchor."""
        return self.length - 1 if self.anchor == "end" else self.length // 2

    @property
    def span(self) -> int:
        """Positions from the clip's first frame to its last."""
        return (self.length - 1) * self.stride

    def key(self) -> str:
        """Canonical text of every parameter (part of every clip id)."""
        return (
            f"{CLIP_FORMAT};length={int(self.length)};stride={int(self.stride)};anchor={self.anchor};"
            f"short_side={int(self.short_side)};jpeg_quality={int(self.jpeg_quality)};at_start={self.at_start};"
            "jpeg=opencv-baseline-420;resize=area-by-divisor-then-linear-down-linear-up"
        )


def clip_positions(available: Sequence[int], anchor_index: int, spec: ClipSpec, file: str = "<video>") -> tuple[list[int], int]:
    """Frame indices of the clip (from ``available``, stepping by ``stride`` positions) and how many were padded.

    ``available`` is increasing (a source's ``indices()``). Positions before the first
    available frame repeat it, positions after the last repeat that (``at_start="pad"``);
    with ``at_start="drop"`` such a clip raises VideoError("before_start").
    ``anchor_index`` not in ``available`` -> VideoError("missing_frame").
    """
    pos = bisect_index(available, anchor_index)
    if pos is None:
        if len(available):
            where = f"frames {available[0]}-{available[-1]}, {len(available)} in all"
        else:
            where = "no frames"
        raise VideoError("missing_frame", file, f"no frame {anchor_index} ({where})")
    last = len(available) - 1
    positions = [pos + (j - spec.before) * spec.stride for j in range(spec.length)]
    under = sum(1 for p in positions if p < 0)
    over = sum(1 for p in positions if p > last)
    padded = under + over
    if padded and spec.at_start == "drop":
        side = "before the start" if under else "past the end"
        raise VideoError(
            "before_start",
            file,
            f"a clip of {spec.length} frames at stride {spec.stride} around frame {anchor_index} runs {padded} frame(s) {side}",
        )
    return [available[min(max(p, 0), last)] for p in positions], padded


@dataclass(frozen=True)
class Clip:
    id: str  # sha256(source digest, frame indices, spec.key())[:32]
    frames: tuple[bytes, ...]  # JPEG at spec.jpeg_quality after the resize
    frame_indices: tuple[int, ...]
    timestamps_s: tuple[float, ...] | None  # index / fps when fps is known
    fps: float | None  # the clip's own rate: source fps / stride
    padded: int
    size: tuple[int, int]  # (H, W) of the source frames before resizing

    @property
    def frame_size(self) -> tuple[int, int]:
        """(H, W) of the stored frames."""
        return jpeg_size(self.frames[0])


def clip_id(source_digest: str, frame_indices: Sequence[int], spec: ClipSpec) -> str:
    text = f"{source_digest}\n{','.join(str(int(i)) for i in frame_indices)}\n{spec.key()}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def resized_shape(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(H, W) after scaling the shorter side to ``short_side`` (aspect kept, rounded half up)."""
    if short_side == 0 or min(height, width) == short_side:
        return height, width
    if height <= width:
        return short_side, max(1, (2 * width * short_side + height) // (2 * height))
    return max(1, (2 * height * short_side + width) // (2 * width)), short_side


def _area_factor(height: int, width: int, new_h: int, new_w: int) -> int:
    """The largest integer f that divides both sides and keeps them at or above the target (1: none)."""
    factor = min(height // new_h, width // new_w)
    while factor > 1 and (height % factor or width % factor):
        factor -= 1
    return max(1, factor)


def resize_short_side(frame: np.ndarray, short_side: int) -> np.ndarray:
    """The frame with its shorter side scaled to ``short_side``; the same array when nothing changes.

    Shrinking: first cv2 INTER_AREA by the largest integer factor that divides both sides and
    does not go below the target (an exact mean of f x f blocks, OpenCV's fast path), then
    INTER_LINEAR for the rest, which is then less than 2x (INTER_AREA again when a side has no
    such divisor and 2x or more remains). Within 45-56 dB PSNR of a single INTER_AREA
    step on real video frames, at a fifth of its cost. Growing: INTER_LINEAR.
    """
    height, width = frame.shape[:2]
    new_h, new_w = resized_shape(height, width, short_side)
    if (new_h, new_w) == (height, width):
        return frame
    # No np.ascontiguousarray: cv2 reads rows with padding (PyAV's frames have it) as they are,
    # and copies other layouts itself; a copy here cost more than the resize.
    if short_side > min(height, width):
        return cv2.resize(frame, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    factor = _area_factor(height, width, new_h, new_w)
    if factor > 1:
        frame = cv2.resize(frame, (width // factor, height // factor), interpolation=cv2.INTER_AREA)
        height, width = frame.shape[:2]
        if (height, width) == (new_h, new_w):
            return frame
    interpolation = cv2.INTER_AREA if min(height // new_h, width // new_w) >= 2 else cv2.INTER_LINEAR
    return cv2.resize(frame, (new_w, new_h), interpolation=interpolation)


def encode_jpeg(frame: np.ndarray, quality: int) -> bytes:
    """Baseline JPEG, 4:2:0, not optimised: the same bytes for the same pixels on every run."""
    bgr = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
    params = [
        cv2.IMWRITE_JPEG_QUALITY, int(quality),
        cv2.IMWRITE_JPEG_OPTIMIZE, 0,
        cv2.IMWRITE_JPEG_PROGRESSIVE, 0,
        cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420,
    ]  # fmt: skip
    ok, buf = cv2.imencode(".jpg", bgr, params)
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG frame")
    return buf.tobytes()


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(H, W) from a JPEG's SOF marker, without decoding."""
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            return int.from_bytes(data[i + 5 : i + 7], "big"), int.from_bytes(data[i + 7 : i + 9], "big")
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            i += 1 if marker == 0xFF else 2
            continue
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    raise ValueError("no SOF marker in JPEG data")


class ClipCache:
    """Finished clips on disk: ``<root>/<id[:2]>/<id>/`` holding ``0000.jpg``... and ``clip.json``.

    A clip is written into a temporary folder (named after the clip and the writing process)
    and renamed, so a killed build leaves either a whole clip or none; temporaries a killed
    build left are removed when the cache is opened with ``clean`` (the default). One build
    writes to a cache at a time; processes of that build (an engine's workers) may write
    beside each other when they open it with ``clean=False`` after the build opened it: the
    first to store a clip wins, the others find it there.
    """

    TEMP_SUFFIX = ".tmp"

    def __init__(self, root: Path, *, fsync: bool = True, clean: bool = True):
        self.root = Path(root)
        self.fsync = fsync
        self.root.mkdir(parents=True, exist_ok=True)
        # Never clean where other processes write: it would remove their clips in the making.
        self.removed_temporaries = self._remove_temporaries() if clean else 0

    def _remove_temporaries(self) -> int:
        removed = 0
        for shard in self.root.iterdir():
            if not shard.is_dir():
                continue
            for entry in shard.iterdir():
                if entry.name.startswith(".") and entry.name.endswith(self.TEMP_SUFFIX):
                    shutil.rmtree(entry, ignore_errors=True)
                    removed += 1
        return removed

    def folder(self, clip_id: str) -> Path:
        if len(clip_id) < 3 or not all(c in "0123456789abcdef" for c in clip_id):
            raise ValueError(f"not a clip id: {clip_id!r}")
        return self.root / clip_id[:2] / clip_id

    def get(self, clip_id: str) -> Clip | None:
        """The finished clip, or None when it is absent or damaged (a damaged one is made again)."""
        folder = self.folder(clip_id)
        try:
            meta = json.loads((folder / "clip.json").read_text(encoding="utf-8"))
            if meta.get("id") != clip_id:
                return None
            frames = []
            for i, expected in enumerate(meta["sha256"]):
                data = (folder / f"{i:04d}.jpg").read_bytes()
                if hashlib.sha256(data).hexdigest() != expected:
                    return None
                frames.append(data)
            timestamps = meta["timestamps_s"]
            return Clip(
                id=clip_id,
                frames=tuple(frames),
                frame_indices=tuple(int(i) for i in meta["frame_indices"]),
                timestamps_s=None if timestamps is None else tuple(float(t) for t in timestamps),
                fps=None if meta["fps"] is None else float(meta["fps"]),
                padded=int(meta["padded"]),
                size=(int(meta["size"][0]), int(meta["size"][1])),
            )
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            return None

    def put(self, clip: Clip) -> None:
        final = self.folder(clip.id)
        if final.is_dir():
            if self.get(clip.id) is not None:
                return  # already there (identical by construction)
            shutil.rmtree(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".{clip.id}.{os.getpid()}-{secrets.token_hex(4)}{self.TEMP_SUFFIX}"
        tmp.mkdir()
        meta = {
            "id": clip.id,
            "frame_indices": list(clip.frame_indices),
            "timestamps_s": None if clip.timestamps_s is None else list(clip.timestamps_s),
            "fps": clip.fps,
            "padded": clip.padded,
            "size": list(clip.size),
            "sha256": [hashlib.sha256(f).hexdigest() for f in clip.frames],
        }
        files = [(f"{i:04d}.jpg", data) for i, data in enumerate(clip.frames)]
        files.append(("clip.json", (json.dumps(meta, indent=1, sort_keys=True) + "\n").encode()))
        for name, data in files:
            with open(tmp / name, "wb") as f:
                f.write(data)
                if self.fsync:
                    f.flush()
                    os.fsync(f.fileno())
        if self.fsync:
            fsync_dir(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if self.get(clip.id) is None:
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process stored this clip first
            return
        if self.fsync:
            fsync_dir(final.parent)


class ClipCacheReader(ClipCache):
    """A :class:`ClipCache` that another process writes (an engine's driver): finds finished clips,
    never writes or cleans (a worker removing temporaries would break the writer's renames).

    ``put`` keeps nothing: the worker hands its clips back and the one writer stores them. A
    root that does not exist here (a node without the output folder) simply finds nothing.
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self.fsync = False
        self.removed_temporaries = 0

    def put(self, clip: Clip) -> None:
        return None


def _workers() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(4, cpus - 1))  # the calling thread decodes


_pool: ThreadPoolExecutor | None = None
_pool_pid: int | None = None
_pool_lock = threading.Lock()
_local = threading.local()


def _frame_pool() -> ThreadPoolExecutor:
    """The threads that resize and encode video frames (one pool per process: a forked child makes its own)."""
    global _pool, _pool_pid
    with _pool_lock:
        if _pool is None or _pool_pid != os.getpid():
            _pool = ThreadPoolExecutor(max_workers=_workers(), thread_name_prefix="omnivmed-clip")
            _pool_pid = os.getpid()
        return _pool


def _make_frame(frame, short_side: int, quality: int) -> tuple[tuple[int, int], bytes]:
    """One decoded video frame -> ((H, W) before resizing, JPEG bytes); runs on the frame pool."""
    reformatter = getattr(_local, "reformatter", None)
    if reformatter is None:
        reformatter = _local.reformatter = VideoReformatter()
    rgb = rgb_array(frame, reformatter)
    return rgb.shape[:2], encode_jpeg(resize_short_side(rgb, short_side), quality)


class ClipMaker:
    """Cuts clips from frame sources by a :class:`ClipSpec`, through an optional :class:`ClipCache`.

    The JPEGs of the last few video frames made are kept (at most ``4 * length`` frames and
    16 MiB), keyed by the video's checksum and the frame index, so that overlapping clips
    (a stride wider than the QA spacing, captioning windows) encode a shared frame once.
    """

    RECENT_BYTES = 16 << 20

    def __init__(self, spec: ClipSpec, cache: ClipCache | None = None):
        self.spec = spec
        self.cache = cache
        self.made = 0  # clips decoded and encoded by this maker
        self.reused = 0  # clips found in the cache
        self.padded_clips = 0  # clips that needed padding (made or reused)
        self._recent: OrderedDict[tuple[str, int], tuple[tuple[int, int], bytes]] = OrderedDict()
        self._recent_bytes = 0

    def positions(self, source: FrameSource, anchor_index: int) -> tuple[list[int], int]:
        return clip_positions(source.indices(), anchor_index, self.spec, file=str(source.path))

    def clip_id(self, source: FrameSource, anchor_index: int) -> str:
        indices, _ = self.positions(source, anchor_index)
        return clip_id(source.digest(indices), indices, self.spec)

    def decode(self, source: FrameSource, anchor_index: int) -> tuple[list[np.ndarray], list[int], int]:
        """The clip's frames before resizing and encoding, their indices and the padded count."""
        indices, padded = self.positions(source, anchor_index)
        return source.read(indices), indices, padded

    def _encode_frames(self, source: FrameSource, indices: list[int]) -> dict[int, tuple[tuple[int, int], bytes]]:
        """``{index: ((H, W), JPEG)}`` for each distinct index (a padded clip repeats frames)."""
        spec = self.spec
        if isinstance(source, VideoFrames):
            digest = source.digest(indices)
            encoded = {}
            for index in indices:
                found = self._recent.get((digest, index))
                if found is not None:
                    encoded[index] = found
                    self._recent.move_to_end((digest, index))
            # Resize and encode frame i on the pool while the decoder goes on to frame i+1.
            pool = _frame_pool()
            jobs: dict[int, tuple[Future, object]] = {}
            try:
                for index, frame in source.iter_decoded([i for i in indices if i not in encoded]):
                    jobs[index] = pool.submit(_make_frame, frame, spec.short_side, spec.jpeg_quality), frame
            except BaseException:
                wait([job for job, _ in jobs.values()])  # nothing keeps working for a clip that failed
                raise
            try:
                # Decoding is done: this thread takes the frames the pool has not started, newest first.
                for index, (job, frame) in reversed(jobs.items()):
                    if job.cancel():
                        encoded[index] = _make_frame(frame, spec.short_side, spec.jpeg_quality)
                for index, (job, _) in jobs.items():
                    if index not in encoded:
                        encoded[index] = job.result()
            except BaseException:
                wait([job for job, _ in jobs.values()])
                raise
            for index in jobs:
                self._remember((digest, index), encoded[index])
            return encoded
        encoded = {}
        for index, frame in zip(indices, source.read(indices)):
            if index not in encoded:
                encoded[index] = frame.shape[:2], encode_jpeg(resize_short_side(frame, spec.short_side), spec.jpeg_quality)
        return encoded

    def _remember(self, key: tuple[str, int], made: tuple[tuple[int, int], bytes]) -> None:
        self._recent[key] = made
        self._recent_bytes += len(made[1])
        while len(self._recent) > 4 * self.spec.length or self._recent_bytes > self.RECENT_BYTES:
            _, (_, data) = self._recent.popitem(last=False)
            self._recent_bytes -= len(data)

    def clip(self, source: FrameSource, anchor_index: int) -> Clip:
        indices, padded = self.positions(source, anchor_index)
        cid = clip_id(source.digest(indices), indices, self.spec)
        if self.cache is not None:
            found = self.cache.get(cid)
            if found is not None:
                self.reused += 1
                self.padded_clips += bool(padded)
                return found
        encoded = self._encode_frames(source, indices)
        sizes = {size for size, _ in encoded.values()}
        if len(sizes) > 1:
            listed = ", ".join(f"{h}x{w}" for h, w in sorted(sizes))
            raise VideoError("mixed_frame_sizes", str(source.path), f"the frames of the clip at frame {anchor_index} differ in size ({listed})")
        height, width = encoded[indices[0]][0]
        fps = source.fps
        clip = Clip(
            id=cid,
            frames=tuple(encoded[i][1] for i in indices),
            frame_indices=tuple(int(i) for i in indices),
            timestamps_s=None if fps is None else tuple(i / fps for i in indices),
            fps=None if fps is None else fps / self.spec.stride,
            padded=padded,
            size=(int(height), int(width)),
        )
        if self.cache is not None:
            self.cache.put(clip)
        self.made += 1
        self.padded_clips += bool(padded)
        return clip
