"""A clip's frames as message media: base64 images (one part per frame) or one MP4 video part.

Frames are evenly subsampled to the endpoint's ``max_frames``. Image parts are
the stored JPEG bytes themselves (never re-encoded); a video part is encoded
only when a request is really sent (H.264, one thread, so the same frames
give the same file), and hashed by its source frames, so the cache key does
not depend on the encoder.
"""

from __future__ import annotations

import hashlib
import io
from functools import partial

import av
import cv2
import numpy as np

from omnivmed.rejection_sampling.chat_request import Media
from omnivmed.rejection_sampling.clip_inputs import ClipInput

MIME = {"jpeg": "image/jpeg", "png": "image/png"}


def pick_frames(n: int, k: int) -> list[int]:
    """``k`` evenly spaced positions out of ``n`` (all of them when ``k >= n``), first and last kept."""
    if k >= n:
        return list(range(n))
    if k == 1:
        return [n // 2]
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def clip_media(clip: ClipInput, mode: str, max_frames: int) -> list[Media]:
    positions = pick_frames(len(clip.frames), max_frames)
    if mode == "images":
        mime = MIME[clip.frame_format]
        return [Media("image", mime, clip.frame_hashes[p], partial(_const, clip.frames[p])) for p in positions]
    fps = _sent_fps(clip, len(positions))
    h = hashlib.sha256(f"mp4-h264:{fps:.6f}".encode())
    for p in positions:
        h.update(bytes.fromhex(clip.frame_hashes[p]))
    frames = tuple(clip.frames[p] for p in positions)
    return [Media("video", "video/mp4", h.hexdigest(), partial(encode_mp4, frames, fps))]


def _const(data: bytes) -> bytes:
    return data


def _sent_fps(clip: ClipInput, kept: int) -> float:
    """Frame rate of the subsampled clip, so the video lasts as long as the window did."""
    fps = clip.fps or 1.0
    return fps * kept / max(len(clip.frames), 1)


def encode_mp4(frames: tuple[bytes, ...], fps: float) -> bytes:
    """Encoded frames (JPEG/PNG) as an H.264 MP4 in memory (yuv420p: even sizes)."""
    images = [cv2.imdecode(np.frombuffer(f, np.uint8), cv2.IMREAD_COLOR) for f in frames]
    h, w = images[0].shape[:2]
    h, w = h - h % 2, w - w % 2
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=max(1, round(fps)))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.thread_count = 1
        stream.options = {"preset": "veryfast", "crf": "18"}
        for image in images:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[:h, :w]), format="bgr24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()
