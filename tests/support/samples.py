"""Small Samples with real encoded images, and building a source to read its Samples back."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from omnivmed.builders import get_builder
from omnivmed.build import BuildResult, build_source
from omnivmed.data.manifest import Manifest
from omnivmed.data.schema import Provenance, Sample, Turn, make_sample
from omnivmed.data.shards import iter_samples


def build_named(source: str, raw: Path, out: Path, **options: str) -> BuildResult:
    """Build ``raw`` with the registered builder ``source`` configured by ``options``, quietly."""
    return build_source(get_builder(source, options), raw, out, progress=False)


def samples_of(out: Path) -> list[Sample]:
    """Every Sample of a finished build, in shard order."""
    manifest = Manifest.load(Path(out) / "manifest.json")
    return [s for shard in manifest.shards for s in iter_samples(Path(out) / shard.path)]


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
