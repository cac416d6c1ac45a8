"""Small Samples with real encoded images, for shard and manifest tests."""

from __future__ import annotations

import cv2
import numpy as np

from omnivmed.data.schema import Provenance, Turn, make_sample


def jpeg(seed: int, size: int = 32) -> bytes:
    rng = np.random.default_rng(seed)
    ok, buf = cv2.imencode(".jpg", rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    assert ok
    return buf.tobytes()


def samples(n: int, split: str = "train", size: int = 32):
    return [
        make_sample(
            source="synthetic",
            split=split,
            task="vqa",
            modality="x_ray",
            visual_kind="image",
            frames=[jpeg(i, size)],
            frame_format="jpeg",
            conversations=[Turn("user", f"<image>\nQuestion {i}?"), Turn("assistant", f"answer {i}")],
            answer_type="open",
            provenance=Provenance((f"img{i}.jpg",), str(i), "CC0-1.0", "https://example.org"),
        )
        for i in range(n)
    ]
