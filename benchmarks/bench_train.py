"""Trainer benchmarks: RLT pruning (visual tokens, step time) and data loading (shards vs LLaVA files).

1. Pruning, on the embedded volume (real CT/MR) and video (generated clips) train samples:
   visual tokens before/after pruning at the 1.5b/7b presets' geometry (patch 14, 384x384 pixels a
   frame, 16 frames) and at the tiny preset's, and the tiny model's training step time (forward +
   backward of vision tower, projector and LLM) with pruning on vs off, on the same batches.
2. Data loading: samples/s of reading a Sample and decoding its frames from our shards (random
   order, memory-mapped) against the LLaVA habit of one JSON list plus one image file per sample,
   on the same image samples (exported once, before timing); both warm in the page cache.

    .venv/bin/python benchmarks/bench_train.py [--embedded DIR] [--repeat 5] [--steps 6]

Writes benchmarks/results/train.json (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from harness import machine_facts  # noqa: E402

from omnivmed.embedded import build_embedded  # noqa: E402
from omnivmed.trainer.data.batch import collate, make_example  # noqa: E402
from omnivmed.trainer.data.chat import ChatEncoder  # noqa: E402
from omnivmed.trainer.data.order import epoch_order  # noqa: E402
from omnivmed.trainer.data.sources import ShardReader, load_index  # noqa: E402
from omnivmed.trainer.data.visual import VisualSpec, decode_frame, visual_inputs  # noqa: E402
from omnivmed.trainer.model.omnivmed import load_model  # noqa: E402
from omnivmed.trainer.model.tiny import write_tiny_base  # noqa: E402

GEOMETRIES = {"1.5b/7b (patch 14, 384^2, 16 frames)": (14, 384 * 384, 16), "tiny (patch 8, 64^2, 8 frames)": (8, 64 * 64, 8)}


def spec(patch: int, pixels: int, frames: int, prune: bool) -> VisualSpec:
    return VisualSpec(patch, (0.5,) * 3, (0.5,) * 3, frames, pixels, frames * pixels, prune, 0.1)


def pruning_tokens(samples) -> dict:
    out = {}
    for name, (patch, pixels, frames) in GEOMETRIES.items():
        kept, before = Counter(), Counter()
        for s in samples:
            for v in visual_inputs(s.frames, s.visual_kind, spec(patch, pixels, frames, True)):
                kept[s.visual_kind] += len(v.positions)
                before[s.visual_kind] += v.tokens_before
        out[name] = {k: {"before": before[k], "kept": kept[k], "pruned": 1 - kept[k] / before[k]} for k in sorted(before)}
    return out


def step_times(samples, model, steps: int, repeat: int) -> dict:
    chat = ChatEncoder(model.tokenizer, 4096)
    results = {}
    for kind in ("volume", "video"):
        chosen = [s for s in samples if s.visual_kind == kind][: 2 * steps]
        for prune in (False, True):
            batches = [
                collate([make_example(s, chat, spec(8, 64 * 64, 8, prune)) for s in chosen[i : i + 2]],
                        model.tokenizer.pad_token_id, 3 * 64)
                for i in range(0, len(chosen) - 1, 2)
            ]  # fmt: skip
            runs = []
            for _ in range(repeat):
                start = time.perf_counter()
                for batch in batches:
                    loss, n = model(batch)
                    (loss / n.clamp(min=1)).backward()
                    model.zero_grad(set_to_none=True)
                runs.append((time.perf_counter() - start) / len(batches))
            tokens = int(sum(b.patches.shape[0] for b in batches) / len(batches))
            results[f"{kind}, pruning {'on' if prune else 'off'}"] = {"step_s": statistics.median(runs), "visual_tokens_per_batch": tokens}
    return results


def export_llava(samples, folder: Path) -> Path:
    """LLaVA's layout: one JSON list ({id, image, conversations}) and one image file per sample."""
    rows = []
    for i, s in enumerate(samples):
        name = f"images/{i:06d}.{'jpg' if s.frame_format == 'jpeg' else 'png'}"
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(s.frames[0])
        rows.append({"id": s.id, "image": name, "conversations": [{"from": t.role, "value": t.content} for t in s.conversations]})
    (folder / "llava.json").write_text(json.dumps(rows))
    return folder / "llava.json"


def load_rates(index, positions, llava_json: Path, repeat: int, decode: bool) -> dict:
    order = np.random.default_rng(0).permutation(len(positions))
    finish = decode_frame if decode else len

    def shards() -> int:
        reader = ShardReader(index.shards)
        for i in order:
            sample = reader.sample(index.shard_of[positions[i]], index.row_of[positions[i]])
            finish(sample.frames[0])
        return len(order)

    def llava() -> int:
        rows = json.loads(llava_json.read_text())
        for i in order:
            data = (llava_json.parent / rows[i]["image"]).read_bytes()
            finish(data)
        return len(order)

    times = {"shards": [], "llava_files": []}
    for r in range(repeat):
        for name, fn in (("shards", shards), ("llava_files", llava))[:: 1 if r % 2 == 0 else -1]:
            start = time.perf_counter()
            count = fn()
            times[name].append(time.perf_counter() - start)
    rates = {k: len(order) / statistics.median(v) for k, v in times.items()}
    return {**{f"{k}_samples_per_s": v for k, v in rates.items()}, "ratio": rates["shards"] / rates["llava_files"], "samples": len(order)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--embedded", type=Path, help="an already built embedded mixture folder (else built in a temp dir)")
    parser.add_argument("--repeat", type=int, default=5, help="timed repetitions (medians are reported)")
    parser.add_argument("--steps", type=int, default=5, help="batches of 2 samples per kind for the step-time figure")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        embedded = args.embedded or tmp / "embedded"
        if not (embedded / "manifest.json").is_file():
            build_embedded(embedded, progress=False)
        index = load_index([embedded / "manifest.json"], "train")
        reader = ShardReader(index.shards)
        every = [reader.sample(index.shard_of[i], index.row_of[i]) for i in range(len(index))]
        moving = [s for s in every if s.visual_kind in ("volume", "video")]
        images = [i for i, s in enumerate(every) if s.visual_kind == "image"]
        torch.manual_seed(0)
        torch.set_num_threads(max(1, os.cpu_count() or 1))
        from transformers.utils import logging

        logging.disable_progress_bar()
        base = write_tiny_base(tmp / "tiny")
        model = load_model(base / "vision", base / "llm", seed=0)
        report = {
            "machine": machine_facts(torch=torch.__version__, opencv=cv2.__version__),
            "pruning_tokens": pruning_tokens(moving),
            "step_time_tiny": step_times(moving, model, args.steps, args.repeat),
        }
        llava = export_llava([every[i] for i in images], tmp / "llava")
        report["loading_with_decode"] = load_rates(index, images, llava, args.repeat, decode=True)
        report["loading_bytes_only"] = load_rates(index, images, llava, args.repeat, decode=False)
    out = Path(__file__).resolve().parent / "results" / "train.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "machine"}, indent=2))


if __name__ == "__main__":
    main()
