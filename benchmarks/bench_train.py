"""Trainer benchmarks: RLT pruning (visual tokens, step time) and data loading (shards vs LLaVA files).

1. Pruning, on the embedded volume (real CT/MR) and video (generated clips) train samples:
   visual tokens before/after pruning at the 1.5b/7b presets' geometry (patch 14, 384x384 pixels a
   frame, 16 frames) and at the tiny preset's, and the tiny model's training step time (forward +
   backward of vision tower, projector and LLM) with pruning on vs off, on the same batches.
2. Data loading: samples/s of the trainer's way in (rows read in place from memory-mapped shards,
   ``ShardReader.row``) against the LLaVA habit (one JSON list plus one image file per sample), on the
   same 10K samples (the embedded image samples cycled, written both ways before timing; warm in the
   page cache), in one seeded random order, through the same DataLoader with 0 and N workers, three ways:
   bytes only; the same frame decode on both sides (``decode_frame``: the access paths alone); and each
   loader's own way to the vision encoder's input with the conversation tokenised by the same chat encoder
   (ours: ``make_example`` at the 1.5b/7b geometry; theirs: PIL ``open().convert("RGB")`` and transformers'
   SigLIP image processor at 384x384, as LLaVA's ``LazySupervisedDataset`` does with its processor).

    .venv/bin/python benchmarks/bench_train.py [--embedded DIR] [--repeat 5] [--steps 5] [--samples 10000]
        [--workers 2] [--decode-repeat 3] [--loading-only | --pruning-only]

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
from PIL import Image  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402
from harness import machine_facts  # noqa: E402

from omnivmed.data.schema import Turn  # noqa: E402
from omnivmed.data.shards import ShardWriter  # noqa: E402
from omnivmed.embedded import build_embedded  # noqa: E402
from omnivmed.trainer.data.batch import collate, make_example  # noqa: E402
from omnivmed.trainer.data.chat import ChatEncoder  # noqa: E402
from omnivmed.trainer.data.sources import ShardReader, index_shards, load_index  # noqa: E402
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


MODES = ("bytes", "decode", "model")  # bytes only; the same decode both sides; each loader's own way to the model
MODEL_SPEC = spec(14, 384 * 384, 16, True)  # the 1.5b/7b presets' geometry (SigLIP patch 14, 384x384 at most)


class _ShardLoading(Dataset):
    """The trainer's way in: a row read in place from its memory-mapped record batch (``ShardReader.row``)."""

    def __init__(self, shards: list[Path], mode: str, chat: ChatEncoder):
        self.index = index_shards(shards)
        self.reader = ShardReader(self.index.shards)  # pickled without its maps: each worker maps the shards
        self.shard_of, self.row_of = self.index.shard_of.tolist(), self.index.row_of.tolist()
        self.mode, self.chat = mode, chat

    def __len__(self) -> int:
        return len(self.shard_of)

    def __getitem__(self, i: int) -> int:
        row = self.reader.row(self.shard_of[i], self.row_of[i])
        if self.mode == "model":  # the trainer's own example: patches (decode, resize, normalise) and tokens
            example = make_example(row, self.chat, MODEL_SPEC)
            return len(example.input_ids) + sum(len(v.patches) for v in example.visuals)
        text = sum(len(t.content) for t in row.conversations)
        return _finish(row.frames[0], self.mode) + text


class _LlavaLoading(Dataset):
    """LLaVA's habit (``LazySupervisedDataset``): one JSON list parsed up front, one image file read per sample,
    opened with PIL and put through the image processor (here SigLIP's at 384x384)."""

    def __init__(self, llava_json: Path, mode: str, chat: ChatEncoder):
        self.folder = llava_json.parent
        self.rows = json.loads(llava_json.read_text())
        self.mode, self.chat = mode, chat
        self.processor = _siglip_processor() if mode == "model" else None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> int:
        row = self.rows[i]
        path = self.folder / row["image"]
        if self.mode == "model":
            pixels = self.processor.preprocess(Image.open(path).convert("RGB"), return_tensors="pt")["pixel_values"][0]
            turns = tuple(Turn(t["from"], t["value"]) for t in row["conversations"])
            tokens = self.chat.encode(turns, [("image", (384 // 14) ** 2)]).input_ids
            return len(tokens) + pixels.shape[0]
        text = sum(len(t["value"]) for t in row["conversations"])
        return _finish(path.read_bytes(), self.mode) + text


def _siglip_processor():
    """transformers' SigLIP image processor (384x384, bicubic, rescale, normalise 0.5) in its PIL form: the one
    a plain install gets (5.x names it ``SiglipImageProcessorPil``; the torchvision one needs torchvision)."""
    try:
        from transformers import SiglipImageProcessorPil as Processor
    except ImportError:  # transformers 4.x: the PIL/numpy processor is the plain one
        from transformers import SiglipImageProcessor as Processor
    return Processor(size={"height": 384, "width": 384})


def _finish(frame, mode: str) -> int:
    """Bytes only: the frame's length; ``decode``: the trainer's own decode (OpenCV, float RGB) on both sides."""
    return decode_frame(frame).shape[0] if mode == "decode" else len(frame)


def _count(values: list[int]) -> int:  # the chunk's result: a number, so no pixels cross the worker queue
    return len(values)


def write_copies(samples, count: int, folder: Path) -> tuple[list[Path], Path]:
    """The same ``count`` samples (the image samples cycled) as shards through the project's ShardWriter and in
    LLaVA's layout (one JSON list of {id, image, conversations}, one image file per sample)."""
    chosen = [samples[i % len(samples)] for i in range(count)]
    with ShardWriter(folder / "shards") as writer:
        for sample in chosen:
            writer.write(sample)
    rows = []
    for i, s in enumerate(chosen):
        name = f"images/{i // 1000:03d}/{i:06d}.{'jpg' if s.frame_format == 'jpeg' else 'png'}"
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(s.frames[0])
        turns = [{"from": t.role, "value": t.content} for t in s.conversations]
        rows.append({"id": s.id, "image": name, "conversations": turns})
    (folder / "llava.json").write_text(json.dumps(rows))
    return sorted((folder / "shards").glob("*/*.arrow")), folder / "llava.json"


def load_rates(shards, llava_json, repeat: int, mode: str, workers: int, chat: ChatEncoder, chunk: int = 32) -> dict:
    """Samples/s of both ways in, through the same DataLoader (one seeded random order, ``chunk`` samples a hand-off,
    ``workers`` processes); each timed pass builds its dataset (JSON parse, shard index and maps included)."""

    def run(make) -> float:
        dataset = make()
        order = np.random.default_rng(0).permutation(len(dataset)).tolist()
        loader = DataLoader(dataset, batch_size=chunk, sampler=order, num_workers=workers, collate_fn=_count)
        done = sum(loader)
        assert done == len(order)
        return done

    contenders = {
        "shards": lambda: _ShardLoading(shards, mode, chat),
        "llava_files": lambda: _LlavaLoading(llava_json, mode, chat),
    }
    times = {name: [] for name in contenders}
    count = 0
    for r in range(repeat):
        for name, make in list(contenders.items())[:: 1 if r % 2 == 0 else -1]:
            start = time.perf_counter()
            count = run(make)
            times[name].append(time.perf_counter() - start)
    rates = {k: count / statistics.median(v) for k, v in times.items()}
    return {
        **{f"{k}_samples_per_s": v for k, v in rates.items()},
        "ratio": rates["shards"] / rates["llava_files"], "samples": count, "workers": workers,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--embedded", type=Path, help="an already built embedded mixture folder (else built in a temp dir)")
    parser.add_argument("--repeat", type=int, default=5, help="timed repetitions (medians are reported)")
    parser.add_argument("--steps", type=int, default=5, help="batches of 2 samples per kind for the step-time figure")
    parser.add_argument("--samples", type=int, default=10_000, help="loading: image samples cycled to this many")
    parser.add_argument("--workers", type=int, default=2, help="loading: DataLoader workers (also timed with 0)")
    parser.add_argument("--decode-repeat", type=int, default=3, help="loading with decoding: timed repetitions")
    parts = parser.add_mutually_exclusive_group()
    parts.add_argument("--loading-only", action="store_true", help="skip part 1 (pruning)")
    parts.add_argument("--pruning-only", action="store_true", help="skip part 2 (loading)")
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
        report = {"machine": machine_facts(torch=torch.__version__, opencv=cv2.__version__)}
        if not args.loading_only:
            report["pruning_tokens"] = pruning_tokens(moving)
            report["step_time_tiny"] = step_times(moving, model, args.steps, args.repeat)
        if not args.pruning_only:
            shards, llava = write_copies([every[i] for i in images], args.samples, tmp / "loading")
            chat = ChatEncoder(model.tokenizer, 4096)
            report["loading"] = {
                f"{mode}, {workers} workers": load_rates(
                    shards, llava, args.repeat if mode == "bytes" else args.decode_repeat, mode, workers, chat
                )
                for workers in sorted({0, args.workers})
                for mode in MODES
            }  # fmt: skip
    out = Path(__file__).resolve().parent / "results" / "train.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "machine"}, indent=2))


if __name__ == "__main__":
    main()
