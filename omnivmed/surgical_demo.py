"""A generated surgical sample in the real Cholec80-VQA layout, for the embedded default.

No surgical video carries an open license, so the embedded default shows the
video path on frames drawn here: a reddish field with grey "instrument" bars
that move from frame to frame. The folders, file names, ``question|answer``
lines, split rule (frame numbers that are multiples of 100; video 5 held
out) and answer classes are Cholec80-VQA's; the pictures and the answers
depict nothing real. Everything is drawn from fixed numbers, so the same
bytes come out on every machine.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from omnivmed.data.fileio import write_if_changed

# Two videos: 1 trains, 5 is one of the anchors' validation videos.
VIDEOS = (1, 5)
FRAME_STEP = 25  # one frame per second of a 25 fps video
FRAMES_PER_VIDEO = 16  # frames 0, 25, ..., 375
SIZE = (120, 160)  # (H, W)
# (frame, question, answer) per video; answers are Cholec80-VQA classes.
QA = {
    1: {
        100: [("what is the phase of image?", "preparation"), ("how many tools are operating?", "1")],
        200: [("what is the phase of image?", "calot triangle dissection"), ("is grasper used?", "yes")],
        300: [("what is the phase of image?", "calot triangle dissection"), ("is clipper used?", "no")],
    },
    5: {
        100: [("what is the phase of image?", "clipping cutting"), ("how many tools are operating?", "2")],
        200: [("what is the phase of image?", "gallbladder dissection"), ("is hook used?", "yes")],
    },
}


def draw_frame(video: int, frame: int) -> np.ndarray:
    """A BGR frame: a reddish gradient with two grey bars whose angle follows the frame number."""
    h, w = SIZE
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    field = np.stack([40 + 30 * y / h, 50 + 40 * x / w, 150 + 60 * (1 - y / h)], axis=-1)
    image = np.clip(field, 0, 255).astype(np.uint8)
    t = frame / (FRAME_STEP * FRAMES_PER_VIDEO)
    for k, (cx, cy) in enumerate(((w // 3, h), (2 * w // 3, h))):
        angle = np.pi * (0.3 + 0.4 * t + 0.2 * k + 0.1 * video)
        tip = (int(cx + 0.6 * h * np.cos(angle)), int(cy - 0.6 * h * np.sin(angle)))
        cv2.line(image, (cx, cy), tip, (170, 170, 170), thickness=7)
    return image


def write_demo_tree(root: Path) -> Path:
    """Write (or leave, when already identical) the generated tree under ``root``; returns ``root``."""
    root = Path(root)
    for video in VIDEOS:
        for n in range(FRAMES_PER_VIDEO):
            frame = n * FRAME_STEP
            ok, data = cv2.imencode(".png", draw_frame(video, frame), [cv2.IMWRITE_PNG_COMPRESSION, 3])
            assert ok
            write_if_changed(root / "Cholec80-VQA" / "cropped_image" / str(video) / f"{frame}.png", data.tobytes())
        for frame, pairs in QA[video].items():
            text = "".join(f"{q}|{a}\n" for q, a in pairs)
            write_if_changed(root / "Cholec80-VQA" / "Classification" / str(video) / f"{frame}.txt", text.encode())
    return root
