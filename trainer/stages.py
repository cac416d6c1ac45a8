"""The three training stages as data: which parts train, at what learning rate, on which samples.

The paper trains progressively: 2D image-text alignment with the LLM
frozen, then 2D instructions, then mixed 2D/3D/video instructions. A stage
changes only this record; the loop is the same. Stage N starts from stage
N-1's output folder. Which rows a stage sees comes from the shards it is
given (a recipe's stage set) narrowed by ``visual_kinds`` / ``tasks``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

PARTS = ("vision", "projector", "llm")


@dataclass(frozen=True)
class Stage:
    number: int
    """1, 2 or 3 (any positive number for custom stages)."""
    name: str
    """Short name used in logs and output folders' metadata."""
    lr: dict
    """Learning rate per trained part (``vision``, ``projector``, ``llm``); a part absent here is frozen."""
    visual_kinds: tuple[str, ...] | None = None
    """Only samples of these visual kinds (None: all)."""
    tasks: tuple[str, ...] | None = None
    """Only samples of these tasks (None: all)."""
    steps: int = 1000
    """Optimizer steps of the stage."""
    warmup_steps: int = 30
    """Linear learning-rate warm-up, then cosine decay to ``min_lr_ratio``."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of the peak."""
    weight_decay: float = 0.0
    """AdamW weight decay."""

    def __post_init__(self):
        unknown = set(self.lr) - set(PARTS)
        if unknown:
            raise ValueError(f"stage {self.number}: unknown parts {sorted(unknown)}; parts are {', '.join(PARTS)}")
        if not self.lr:
            raise ValueError(f"stage {self.number}: trains nothing (give a learning rate to at least one part)")
        if any(v <= 0 for v in self.lr.values()):
            raise ValueError(f"stage {self.number}: learning rates must be positive, got {self.lr}")
        if self.steps < 1 or self.warmup_steps < 0:
            raise ValueError(f"stage {self.number}: steps must be >= 1 and warmup_steps >= 0")

    @property
    def trained(self) -> tuple[str, ...]:
        return tuple(p for p in PARTS if p in self.lr)

    def with_overrides(self, **changes) -> "Stage":
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def default_stage(number: int) -> Stage:
    """The paper's progression; learning rates are LLaVA-style defaults for 1.5B/7B models."""
    if number == 1:
        # RoPE is new to SigLIP, so the encoder adapts with the projector; the LLM stays frozen. Alignment is
        # captioning: the paper's stage-1 set is 2D (PubMedVision Alignment); a clone without it aligns on the
        # captions it has (the embedded default's volume captions), so the stage filters by task, not by kind.
        return Stage(1, "alignment", {"vision": 2e-5, "projector": 1e-3}, tasks=("image_caption",))
    if number == 2:
        return Stage(2, "instructions-2d", {"vision": 2e-6, "projector": 2e-5, "llm": 2e-5}, ("image", "multi_image"))
    if number == 3:
        return Stage(3, "mixed-2d-3d-video", {"vision": 2e-6, "projector": 2e-5, "llm": 2e-5})
    raise ValueError(f"no default stage {number}: stages are 1, 2, 3 (or give one in a config file)")
