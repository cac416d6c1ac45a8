"""What a stage needs per GPU, from the architecture's shapes alone (``omnivmed-train --dry-run``).

An estimate, not a measurement; each term is written out so it can be checked:

* parameters: exact counts from the shapes (SigLIP layers with biases, Qwen2.5
  layers with q/k/v biases and grouped k/v, embeddings tied or not, the
  2-layer projector); a test checks the formula against the tiny model built
  in-process;
* weights and optimiser state, sharded by FSDP over the GPUs: 4 bytes per
  parameter (fp32 master weights, frozen parts too), plus 4 (fp32 gradient)
  and 8 (AdamW's two moments) per trained parameter;
* the unsharded working copy FSDP gathers: the largest unit (one layer, or the
  LLM's embedding / head) in bf16, twice (the next unit is prefetched);
* activations saved for backward, bf16, per token: SigLIP layer 8h + 2i
  elements (norm inputs, q/k/v, attention output, MLP input, hidden and
  activation), Qwen2.5 layer 6h + 2kv + 3i (the SwiGLU gate, up and product);
  memory-efficient attention (flash / SDPA) keeps no seq x seq matrix. With
  activation checkpointing only each layer's input (h) stays, plus one
  layer's full set while it is recomputed. The fp32 logits of the text tokens
  (vocab x 4 bytes per token) come on top: they dominate a Qwen2.5 step;
* a stage trains what stages.py says (stage 1: vision + projector; 2 and 3:
  everything); backward still runs through the frozen LLM in stage 1, so its
  activations count in every stage.

CUDA context, allocator fragmentation and communication buffers are not
counted: keep 10-15% of the card free.
"""

from __future__ import annotations

from dataclasses import dataclass

from omnivmed.trainer.stages import default_stage

GIB = 1024**3


@dataclass(frozen=True)
class VisionShape:
    hidden: int
    intermediate: int
    layers: int
    patch: int
    positions: int  # the learned absolute table (kept, interpolated, even when RoPE is used)


@dataclass(frozen=True)
class LlmShape:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool


# From the published config.json files (siglip-so400m-patch14-384, Qwen2.5-1.5B/7B-Instruct).
SO400M = VisionShape(hidden=1152, intermediate=4304, layers=27, patch=14, positions=729)
SHAPES: dict[str, tuple[VisionShape, LlmShape]] = {
    "1.5b": (SO400M, LlmShape(1536, 8960, 28, 12, 2, 151936, tied=True)),
    "7b": (SO400M, LlmShape(3584, 18944, 28, 28, 4, 152064, tied=False)),
}


def vision_layer_params(v: VisionShape) -> int:
    attention = 4 * (v.hidden * v.hidden + v.hidden)
    mlp = v.hidden * v.intermediate + v.intermediate + v.intermediate * v.hidden + v.hidden
    return attention + mlp + 2 * 2 * v.hidden  # two LayerNorms with weight and bias


def vision_params(v: VisionShape) -> int:
    embeddings = 3 * v.patch * v.patch * v.hidden + v.hidden + v.positions * v.hidden
    return embeddings + v.layers * vision_layer_params(v) + 2 * v.hidden  # + post LayerNorm


def llm_layer_params(m: LlmShape) -> int:
    head_dim = m.hidden // m.heads
    kv = m.kv_heads * head_dim
    attention = (m.hidden * m.hidden + m.hidden) + 2 * (m.hidden * kv + kv) + m.hidden * m.hidden
    return attention + 3 * m.hidden * m.intermediate + 2 * m.hidden  # SwiGLU MLP, two RMSNorms


def llm_params(m: LlmShape) -> int:
    embeddings = m.vocab * m.hidden * (1 if m.tied else 2)
    return embeddings + m.layers * llm_layer_params(m) + m.hidden  # + final norm


def projector_params(v: VisionShape, m: LlmShape) -> int:
    return v.hidden * m.hidden + m.hidden + m.hidden * m.hidden + m.hidden


@dataclass(frozen=True)
class Workload:
    """Tokens one GPU holds in one micro-step."""

    text_tokens: int  # LLM sequence (visual placeholders included) per micro-batch
    visual_tokens: int  # vision-encoder tokens per micro-batch (after pruning)


@dataclass(frozen=True)
class StagePlan:
    stage: int
    trained: tuple[str, ...]
    params: dict[str, int]
    trained_params: int
    gib: dict[str, float]  # per GPU: weights, gradients, optimizer, working copy, activations, logits, total

    def fits(self, gpu_gib: float, headroom: float = 0.85) -> bool:
        return self.gib["total"] <= gpu_gib * headroom


def plan_stage(preset: str, stage: int, gpus: int, work: Workload, *, checkpointing: bool) -> StagePlan:
    v, m = shapes(preset)
    params = {"vision": vision_params(v), "projector": projector_params(v, m), "llm": llm_params(m)}
    trained = default_stage(stage).trained
    n_trained = sum(params[p] for p in trained)
    n_all = sum(params.values())
    largest_unit = max(vision_layer_params(v), llm_layer_params(m), m.vocab * m.hidden)
    kv = m.kv_heads * (m.hidden // m.heads)
    vision_per_token = 8 * v.hidden + 2 * v.intermediate
    llm_per_token = 6 * m.hidden + 2 * kv + 3 * m.intermediate
    if checkpointing:
        vision_act = work.visual_tokens * (v.layers * v.hidden + vision_per_token)
        llm_act = work.text_tokens * (m.layers * m.hidden + llm_per_token)
    else:
        vision_act = work.visual_tokens * v.layers * vision_per_token
        llm_act = work.text_tokens * m.layers * llm_per_token
    gib = {
        "weights": 4 * n_all / gpus / GIB,
        "gradients": 4 * n_trained / gpus / GIB,
        "optimizer": 8 * n_trained / gpus / GIB,
        "working copy": 2 * 2 * largest_unit / GIB,
        "activations": 2 * (vision_act + llm_act) / GIB,
        "logits": 4 * work.text_tokens * m.vocab / GIB,
    }
    gib["total"] = sum(gib.values())
    return StagePlan(stage, trained, params, n_trained, {k: round(x, 2) for k, x in gib.items()})


def clip_visual_tokens(frames: int = 16, pixels: int = 384, patch: int = 14, kept: float = 0.3) -> int:
    """Vision tokens of one clip after pruning: 16 frames of 27 x 27 patches keep ~0.12-0.30 (RLT's rule)."""
    return int(frames * (pixels // patch) ** 2 * kept)


def shapes(preset: str) -> tuple[VisionShape, LlmShape]:
    try:
        return SHAPES[preset]
    except KeyError:
        raise ValueError(f"no shapes for preset {preset!r}: the plan covers {', '.join(SHAPES)}") from None


def workload(
    preset: str,
    batch_size: int,
    max_length: int,
    max_frames: int,
    max_pixels: int,
    *,
    token_budget: int | None = None,
    max_visual_tokens: int | None = None,
) -> Workload:
    """The largest micro-batch: ``batch_size`` full-length samples (padded), or one full pack of ``token_budget``
    tokens (packed); each sample with one pruned clip of ``max_frames`` frames, capped at ``max_visual_tokens``."""
    vision, _ = shapes(preset)
    side = int(max_pixels**0.5)
    clip = clip_visual_tokens(max_frames, side, vision.patch)
    if max_visual_tokens is not None:
        clip = min(clip, max_visual_tokens)
    text = token_budget if token_budget is not None else batch_size * max_length
    samples = batch_size if token_budget is None else min(batch_size, max(1, token_budget // max_length))
    return Workload(text, min(text, samples * clip))


def format_plan(preset: str, gpus: int, gpu_gib: float, work: Workload) -> str:
    """The table ``--dry-run`` prints: every stage, with and without activation checkpointing."""
    lines = [
        f"memory plan: preset {preset}, {gpus} GPU(s) x {gpu_gib:g} GiB, per GPU and micro-step: "
        f"{work.text_tokens:,} LLM tokens, {work.visual_tokens:,} vision tokens (estimate; see trainer/memory_plan.py)",
        f"{'stage':<6}{'trains':<24}{'ckpt':<6}{'weights':>9}{'grads':>8}{'optim':>8}{'unit':>7}"
        f"{'activ.':>9}{'logits':>8}{'total':>8}  fits",
    ]
    for stage in (1, 2, 3):
        for checkpointing in (False, True):
            p = plan_stage(preset, stage, gpus, work, checkpointing=checkpointing)
            g = p.gib
            lines.append(
                f"{stage:<6}{'+'.join(p.trained):<24}{'on' if checkpointing else 'off':<6}{g['weights']:>9.2f}"
                f"{g['gradients']:>8.2f}{g['optimizer']:>8.2f}{g['working copy']:>7.2f}{g['activations']:>9.2f}"
                f"{g['logits']:>8.2f}{g['total']:>8.2f}  {'yes' if p.fits(gpu_gib) else 'NO'}"
            )
    sizes = {name: f"{n / 1e9:.3f}B" for name, n in plan_stage(preset, 3, gpus, work, checkpointing=False).params.items()}
    lines.append("parameters: " + ", ".join(f"{k} {v}" for k, v in sizes.items()) + "; GiB per GPU; 'fits' keeps 15% free")
    return "\n".join(lines)
