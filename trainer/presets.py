"""Model presets: tiny (built offline), and Qwen2.5-1.5B/7B-Instruct with siglip-so400m-patch14-384.

The large presets never download anything: they name the shapes the local
folders must have (checked after loading) and the data geometry that fits
them; the folders come from ``--vision-path`` / ``--llm-path``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    name: str
    """Preset name as given to ``--model-config``."""
    vision_hidden: int | None
    """Hidden size the vision folder must have (None: not checked)."""
    llm_hidden: int | None
    """Hidden size the LLM folder must have (None: not checked)."""
    rope_split: tuple[int, int, int] | None
    """Rotary pairs for (t, h, w); None: derived from the head size."""
    max_pixels: int
    """Pixel cap per frame."""
    max_frames: int
    """Frames/slices kept per volume or video."""
    max_length: int
    """Token limit per sample."""
    needs_paths: bool
    """True when --vision-path and --llm-path must name local folders."""
    token_budget: int
    """Tokens per packed micro-batch (at least max_length: a full-length sample fits a pack)."""
    max_visual_tokens: int
    """Visual tokens kept per sample at most (after pruning); more are reduced (batch.make_example)."""
    stage_steps: tuple[int, int] | None = None
    """(steps, warm-up steps) of every stage when not given; None: the stage's own (stages.py)."""


# siglip-so400m-patch14-384: 27 x 27 = 729 patches a frame, so a 16-frame clip is 11,664 tokens before pruning
# (RLT keeps 0.12-0.30 of them on real clips: about 1,400-3,500). The visual cap, 12,288, takes even an unpruned
# clip (--no-prune) whole; the sample limit, 16,384, leaves at least 4,096 tokens of text beside it; a pack holds
# one full-length sample or several shorter ones.
SO400M_LIMITS = dict(max_pixels=384 * 384, max_frames=16, max_length=16384, token_budget=16384, max_visual_tokens=12288)


def tiny() -> Preset:
    """Hidden 32 (vision) / 64 (LLM), 2 layers each: for tests and the offline demo."""
    # 30 steps a stage: the progressive schedule on the embedded default finishes in minutes on a CPU.
    # 8 frames of 8 x 8 patches: 512 visual tokens at most. A budget of 4 full-length samples never splits a
    # batch of 4, so every micro-batch holds batch_size samples on the tiny preset.
    return Preset(
        "tiny", 32, 64, None, max_pixels=64 * 64, max_frames=8, max_length=1024, needs_paths=False,
        token_budget=4096, max_visual_tokens=768, stage_steps=(30, 3),
    )  # fmt: skip


def qwen2_5_1_5b() -> Preset:
    """Qwen2.5-1.5B-Instruct (hidden 1536) + siglip-so400m-patch14-384 (hidden 1152, head_dim 72: 12/12/12)."""
    return Preset("1.5b", 1152, 1536, (12, 12, 12), needs_paths=True, **SO400M_LIMITS)


def qwen2_5_7b() -> Preset:
    """Qwen2.5-7B-Instruct (hidden 3584) + siglip-so400m-patch14-384."""
    return Preset("7b", 1152, 3584, (12, 12, 12), needs_paths=True, **SO400M_LIMITS)


PRESETS = {"tiny": tiny, "1.5b": qwen2_5_1_5b, "7b": qwen2_5_7b}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"model config {name!r} is not one of {', '.join(PRESETS)}") from None
