"""One-GPU check of the trainer at the 1.5B preset's real shapes: throughput, peak memory, the pruning speedup.

Nothing is downloaded: siglip-so400m-patch14-384 and Qwen2.5-1.5B are built in-process from their published
shapes (trainer/memory_plan.py) with random weights, the tokenizer is the tiny one trained in-process (its ids
are valid in Qwen2.5's vocabulary). The model is wrapped in FSDP2 on a process group of one rank (NCCL) with
the trainer's own ``shard`` (bf16 compute, fp32 reduction) and runs under bf16 autocast, as training does.
Attention: flash-attn varlen on both sides when flash-attn is installed (vision: our varlen layers; LLM:
transformers' flash_attention_2 with the packed offsets), SDPA with block-diagonal masks otherwise.

The batch mixes four 384x384 images, one 32-slice volume (16 slices kept, evenly) and one 16-frame clip, all
synthetic; its samples are packed under the preset's token budget exactly as the training stream packs them.
Each step is forward and backward over every pack of the batch, once with RLT pruning on and once with it
off (the same samples). Prints JSON: tokens/s (LLM and vision), step time, peak memory, and the pruning
speedup (step time off / on); also writes benchmarks/results/gpu_check.json.

    python benchmarks/gpu_check.py [--steps 3] [--warmup 1] [--gradient-checkpointing]

Without a CUDA device it prints one line saying so and exits 0. Finishes in well under 5 minutes on one GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

RESULTS = Path(__file__).resolve().parent / "results" / "gpu_check.json"
SIGLIP_HEADS = 16  # siglip-so400m-patch14-384: head_dim 72 (rotary split 12/12/12)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png(array) -> bytes:
    import cv2

    return cv2.imencode(".png", array)[1].tobytes()


def synthetic_samples():
    """Four images, a volume (a sphere growing and shrinking through 32 slices) and a clip (two shapes moving over
    a textured still background), each with a question and an answer."""
    import numpy as np

    from omnivmed.data.schema import Provenance, Turn, make_sample

    rng = np.random.default_rng(0)
    side = 384
    texture = (rng.random((side, side, 3)) * 96).astype(np.uint8)

    def sample(kind, frames, question, answer):
        mark = "<video>" if kind == "video" else "<image>"
        return make_sample(
            source="synthetic", split="train", task="vqa", modality="unspecified", visual_kind=kind,
            frames=[png(f) for f in frames], frame_format="png",
            conversations=[Turn("user", f"{mark}\n{question}"), Turn("assistant", answer)],
            provenance=Provenance((), f"{kind}-{question}", "CC0-1.0", "https://example.org"),
        )  # fmt: skip

    samples = []
    for i in range(4):
        image = (rng.random((side, side, 3)) * 255).astype(np.uint8)
        samples.append(sample("image", [image], f"What modality is image {i}?", "A CT scan of the abdomen."))
    yy, xx = np.mgrid[:side, :side]
    slices = []
    for z in range(32):
        radius = 40 + 100 * np.sin(np.pi * z / 31)
        inside = (yy - side / 2) ** 2 + (xx - side / 2) ** 2 < radius**2
        slices.append(np.where(inside[..., None], 200, texture).astype(np.uint8))
    samples.append(sample("volume", slices, "Describe the lesion.", "A round hyperdense lesion, largest mid-volume."))
    clip = []
    for t in range(16):
        frame = texture.copy()
        frame[60:140, 20 + 18 * t : 100 + 18 * t] = 255
        frame[250:310, 300 - 12 * t : 360 - 12 * t] = (30, 200, 30)
        clip.append(frame)
    samples.append(sample("video", clip, "Which phase is shown?", "Calot triangle dissection."))
    return samples


def build_model(device, attention: str, gradient_checkpointing: bool):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM, SiglipVisionConfig, SiglipVisionModel

    from omnivmed.trainer.memory_plan import SHAPES
    from omnivmed.trainer.model.attention import llm_attention
    from omnivmed.trainer.model.omnivmed import Architecture, OmniVMed
    from omnivmed.trainer.model.projector import Projector
    from omnivmed.trainer.model.tiny import train_tiny_tokenizer
    from omnivmed.trainer.model.vision import RopeVisionEncoder

    v, m = SHAPES["1.5b"]
    tokenizer = train_tiny_tokenizer()
    torch.manual_seed(0)
    with torch.device(device):
        siglip = SiglipVisionModel(SiglipVisionConfig(
            hidden_size=v.hidden, intermediate_size=v.intermediate, num_hidden_layers=v.layers,
            num_attention_heads=SIGLIP_HEADS, image_size=384, patch_size=v.patch, vision_use_head=False,
        ))  # fmt: skip
        llm = Qwen2ForCausalLM(Qwen2Config(
            vocab_size=m.vocab, hidden_size=m.hidden, intermediate_size=m.intermediate, num_hidden_layers=m.layers,
            num_attention_heads=m.heads, num_key_value_heads=m.kv_heads, tie_word_embeddings=m.tied,
            max_position_embeddings=32768, rope_theta=1_000_000.0, rms_norm_eps=1e-6,
        ))  # fmt: skip
        projector = Projector(v.hidden, m.hidden)
    llm.set_attn_implementation(llm_attention(attention))
    if gradient_checkpointing:
        enable = getattr(llm, "activation_checkpointing_enable", None) or llm.gradient_checkpointing_enable
        enable()
    vision = RopeVisionEncoder(
        siglip, rope_split=(12, 12, 12), attention=attention, gradient_checkpointing=gradient_checkpointing
    )
    model = OmniVMed(vision, projector, llm, tokenizer, Architecture((12, 12, 12)))
    for parameter in model.vision.unused_parameters():
        parameter.requires_grad_(False)
    return model


def make_packs(model, samples, prune: bool):
    from omnivmed.trainer.data.batch import collate_packed, make_example, packs
    from omnivmed.trainer.data.chat import ChatEncoder
    from omnivmed.trainer.data.visual import VisualSpec
    from omnivmed.trainer.presets import get_preset

    preset = get_preset("1.5b")
    spec = VisualSpec(
        model.vision.patch_size, model.arch.image_mean, model.arch.image_std, preset.max_frames, preset.max_pixels,
        preset.max_frames * preset.max_pixels, prune, 0.1,
    )  # fmt: skip
    chat = ChatEncoder(model.tokenizer, preset.max_length)
    examples = [make_example(s, chat, spec, preset.max_visual_tokens) for s in samples]
    return [collate_packed(p, model.vision.patch_dim) for p in packs(examples, preset.token_budget, len(examples))]


def measure(model, batches, *, steps: int, warmup: int) -> dict:
    import torch

    device = torch.device("cuda")
    batches = [b.to(device) for b in batches]
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for step in range(warmup + steps):
        torch.cuda.synchronize()
        start = time.perf_counter()
        count = sum(int(b.stats["supervised"]) for b in batches)
        for batch in batches:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss, _ = model(batch)
            (loss / max(count, 1)).backward()
        torch.cuda.synchronize()
        if step >= warmup:
            times.append(time.perf_counter() - start)
        model.zero_grad(set_to_none=True)
    step_s = sorted(times)[len(times) // 2]
    llm_tokens = sum(int(b.input_ids.shape[1]) for b in batches)
    vision_tokens = sum(int(b.patches.shape[0]) for b in batches)
    before = sum(sum(b.stats["visual_before"].values()) for b in batches)
    return {
        "packs": len(batches),
        "llm_tokens": llm_tokens,
        "vision_tokens": vision_tokens,
        "kept_ratio": round(vision_tokens / before, 4) if before else None,
        "step_s": round(step_s, 4),
        "llm_tokens_per_s": round(llm_tokens / step_s, 1),
        "vision_tokens_per_s": round(vision_tokens / step_s, 1),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 1024**3, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per setting (the median is reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--attention", default="auto", choices=("auto", "sdpa", "flash"))
    parser.add_argument("--gradient-checkpointing", action="store_true")
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device present; nothing measured (run it on a machine with a GPU)")
        return 0

    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    from omnivmed.trainer.distributed import shard
    from omnivmed.trainer.model.attention import flash_available

    began = time.perf_counter()
    torch.cuda.set_device(0)
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        model = build_model(torch.device("cuda"), args.attention, args.gradient_checkpointing)
        parameters = sum(p.numel() for p in model.parameters())
        shard(model, init_device_mesh("cuda", (1,)), torch.bfloat16)
        model.train()
        built = time.perf_counter() - began
        samples = synthetic_samples()
        results = {}
        for prune in (True, False):
            batches = make_packs(model, samples, prune)
            results["pruning_on" if prune else "pruning_off"] = measure(
                model, batches, steps=args.steps, warmup=args.warmup
            )
    finally:
        dist.destroy_process_group()
    import transformers

    try:
        import flash_attn

        flash_version = flash_attn.__version__
    except ImportError:
        flash_version = None
    on, off = results["pruning_on"], results["pruning_off"]
    report = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "flash_attn": flash_version,
        "attention": {
            "vision": "flash-attn varlen" if flash_available() and args.attention != "sdpa" else "sdpa block-diagonal",
            "llm": model.llm.config._attn_implementation,
        },
        "parameters": parameters,
        "precision": "bf16 (FSDP2 param dtype + autocast), fp32 reduction",
        "parallel": "FSDP2, 1 rank",
        "gradient_checkpointing": args.gradient_checkpointing,
        "batch": "4 images 384x384, 1 volume (32 slices, 16 kept), 1 clip (16 frames): synthetic",
        "build_s": round(built, 1),
        **results,
        "pruning_speedup": round(off["step_s"] / on["step_s"], 3),
        "total_s": round(time.perf_counter() - began, 1),
    }
    text = json.dumps(report, indent=2)
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
