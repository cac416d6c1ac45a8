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
    stage_steps: tuple[int, int] | None = None
    """(steps, warm-up steps) of every stage when not given; None: the stage's own (stages.py)."""


def tiny() -> Preset:
    """Hidden 32 (vision) / 64 (LLM), 2 layers each: for tests and the offline demo."""
    # 30 steps a stage: the progressive schedule on the embedded default finishes in minutes on a CPU.
    return Preset(
        "tiny", 32, 64, None, max_pixels=64 * 64, max_frames=8, max_length=1024, needs_paths=False, stage_steps=(30, 3)
    )


def qwen2_5_1_5b() -> Preset:
    """Qwen2.5-1.5B-Instruct (hidden 1536) + siglip-so400m-patch14-384 (hidden 1152, head_dim 72: 12/12/12)."""
    return Preset("1.5b", 1152, 1536, (12, 12, 12), max_pixels=384 * 384, max_frames=16, max_length=8192, needs_paths=True)


def qwen2_5_7b() -> Preset:
    """Qwen2.5-7B-Instruct (hidden 3584) + siglip-so400m-patch14-384."""
    return Preset("7b", 1152, 3584, (12, 12, 12), max_pixels=384 * 384, max_frames=16, max_length=8192, needs_paths=True)


PRESETS = {"tiny": tiny, "1.5b": qwen2_5_1_5b, "7b": qwen2_5_7b}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"model config {name!r} is not one of {', '.join(PRESETS)}") from None
