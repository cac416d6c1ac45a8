"""Typed training configuration: model, data, run and stage sections, validated on construction.

A config file (YAML or JSON) holds the same sections as keys
(``model:``, ``data:``, ``run:``, ``stage:``); command-line options
override the file. The ``stage`` section changes fields of the stage
picked by ``run.stage`` (its default from stages.py). Runtime objects
(process group, device) are never part of the config.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path


from omnivmed.data.fileio import read_json_or_yaml
from omnivmed.trainer.model.attention import IMPLEMENTATIONS
from omnivmed.trainer.presets import Preset, get_preset
from omnivmed.trainer.stages import Stage, default_stage


class ConfigError(ValueError):
    """A configuration that cannot run: names the file or option and the reason."""


@dataclass
class ModelConfig:
    preset: str = "tiny"
    """tiny | 1.5b | 7b (presets.py)."""
    vision_path: str | None = None
    """Local SigLIP folder (SiglipVisionModel or SiglipModel checkpoint); needed by 1.5b/7b."""
    llm_path: str | None = None
    """Local causal-LM folder with its tokenizer (Qwen2.5-*-Instruct); needed by 1.5b/7b."""
    init: str | None = None
    """Model folder to start from; default: the previous stage's output (stage 1: the preset's base)."""
    rope_split: tuple[int, int, int] | None = None
    """Rotary pairs for (t, h, w), summing to head_dim / 2; None: the preset's, else derived."""
    rope_theta: float = 10000.0
    """Rotary base."""
    keep_abs_pos: bool = False
    """Also add SigLIP's learned absolute table, interpolated to each input's grid."""
    attention: str = "auto"
    """Vision attention: auto (flash-attn varlen on GPU when installed, else SDPA), sdpa, flash."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward (vision layers and LLM) to save memory."""

    def __post_init__(self):
        get_preset(self.preset)
        if self.attention not in IMPLEMENTATIONS:
            raise ConfigError(f"model.attention {self.attention!r} is not one of {', '.join(IMPLEMENTATIONS)}")
        if self.rope_split is not None:
            self.rope_split = tuple(int(x) for x in self.rope_split)


@dataclass
class DataConfig:
    shards: list[str] = field(default_factory=list)
    """Manifest files or folders of manifests (``*.manifest.json`` / ``manifest.json``)."""
    split: str = "train"
    """Split of the shards to train on."""
    mix: dict[str, float] = field(default_factory=dict)
    """Per-source sampling weights; empty: every row once per epoch (a recipe's shards are already mixed)."""
    seed: int = 0
    """Seed of the global sample order (with the epoch number)."""
    batch_size: int = 4
    """Samples per rank per micro-step."""
    num_workers: int = 0
    """DataLoader worker processes per rank (decoding and tokenising)."""
    max_length: int | None = None
    """Token limit per sample (None: the preset's); longer samples are cut and counted."""
    max_frames: int | None = None
    """Frames/slices kept (evenly) per volume or video (None: the preset's)."""
    max_pixels: int | None = None
    """Pixel cap per frame (None: the preset's)."""
    max_sample_pixels: int | None = None
    """Pixel cap per sample over all its frames (None: max_frames * max_pixels)."""
    prune: bool = True
    """RLT token pruning on volumes and videos."""
    prune_threshold: float = 0.1
    """Keep a patch when its mean |difference| to the previous slice/frame exceeds this."""
    verify: bool = True
    """Check every shard's size, sha256, rows and schema before training."""

    def __post_init__(self):
        if self.batch_size < 1 or self.num_workers < 0:
            raise ConfigError("data.batch_size must be >= 1 and data.num_workers >= 0")
        if any(w < 0 for w in self.mix.values()):
            raise ConfigError(f"data.mix weights must be >= 0, got {self.mix}")
        self.mix = {str(k): float(v) for k, v in self.mix.items()}


@dataclass
class RunConfig:
    out: str = "runs/omnivmed"
    """Run folder; stage N writes ``<out>/stage<N>/`` (checkpoints, model, metrics, tensorboard)."""
    stage: int = 1
    """Stage to run (stages.py)."""
    grad_accum: int = 1
    """Micro-steps per optimizer step."""
    grad_clip: float = 1.0
    """Gradient norm clip (0: off)."""
    save_every: int = 500
    """Checkpoint every N optimizer steps (and at the end)."""
    keep_checkpoints: int = 2
    """Checkpoints kept (older ones are removed)."""
    stop_after: int | None = None
    """Stop after this many optimizer steps in this invocation (leaves a checkpoint; for planned interruptions)."""
    precision: str = "auto"
    """auto (bf16 autocast on GPU, fp32 on CPU), fp32, bf16."""
    parallel: str = "auto"
    """auto (FSDP on multi-GPU, else DDP), ddp, fsdp (GPU only)."""
    seed: int = 0
    """Seed for fresh weights (the projector in stage 1, the tiny base)."""
    tensorboard: bool = True
    """Write TensorBoard scalars to ``<out>/stage<N>/tensorboard``."""
    progress: bool = True
    """Show a progress bar (rank 0) with tokens/s and kept-token ratio."""
    record_samples: bool = False
    """Write every sample id each rank trains on to ``ranks/rank<R>.json`` (audits, tests)."""

    def __post_init__(self):
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"run.precision {self.precision!r} is not auto, fp32 or bf16")
        if self.parallel not in ("auto", "ddp", "fsdp"):
            raise ConfigError(f"run.parallel {self.parallel!r} is not auto, ddp or fsdp")
        if self.grad_accum < 1 or self.save_every < 1 or self.keep_checkpoints < 1:
            raise ConfigError("run.grad_accum, run.save_every and run.keep_checkpoints must be >= 1")

    @property
    def stage_dir(self) -> Path:
        return Path(self.out) / f"stage{self.stage}"


@dataclass
class TrainConfig:
    model: ModelConfig
    data: DataConfig
    run: RunConfig
    stage: Stage

    @property
    def preset(self) -> Preset:
        return get_preset(self.model.preset)

    def resolved_data(self) -> DataConfig:
        """The data section with the preset's limits filled in."""
        p = self.preset
        d = DataConfig(**{f.name: getattr(self.data, f.name) for f in fields(DataConfig)})
        d.max_length = d.max_length or p.max_length
        d.max_frames = d.max_frames or p.max_frames
        d.max_pixels = d.max_pixels or p.max_pixels
        d.max_sample_pixels = d.max_sample_pixels or d.max_frames * d.max_pixels
        return d

    def to_dict(self) -> dict:
        def plain(obj):
            return {f.name: getattr(obj, f.name) for f in fields(obj)}

        return {"model": plain(self.model), "data": plain(self.data), "run": plain(self.run), "stage": plain(self.stage)}


_SECTIONS = {"model": ModelConfig, "data": DataConfig, "run": RunConfig}


def read_config_file(path: Path) -> dict:
    path = Path(path)
    data = read_json_or_yaml(path, ConfigError)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file holds a mapping of sections (model, data, run, stage)")
    unknown = set(data) - {*_SECTIONS, "stage"}
    if unknown:
        raise ConfigError(f"{path}: unknown sections {sorted(unknown)}; sections are model, data, run, stage")
    return data


def build_config(
    file: Path | None = None, overrides: dict[str, dict] | None = None, lr_update: dict[str, float] | None = None
) -> TrainConfig:
    """File sections, then command-line overrides (None values are 'not given').

    ``lr_update`` (the CLI's ``--lr PART=RATE``) changes rates of parts the stage trains; which parts
    train is the stage's definition, changed only through ``stage.lr`` in a config file.
    """
    origin = str(file) if file else "options"
    merged: dict[str, dict] = {name: {} for name in (*_SECTIONS, "stage")}
    for source in (read_config_file(file) if file else {}, overrides or {}):
        for section, values in source.items():
            if values is None:
                continue
            if not isinstance(values, dict):
                raise ConfigError(f"{origin}: section {section!r} must be a mapping")
            merged[section].update({k: v for k, v in values.items() if v is not None})
    built = {}
    for name, cls in _SECTIONS.items():
        known = {f.name for f in fields(cls)}
        unknown = set(merged[name]) - known
        if unknown:
            raise ConfigError(f"{origin}: unknown {name} keys {sorted(unknown)}")
        try:
            built[name] = cls(**merged[name])
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{origin}: {name}: {err}") from None
    stage_changes = dict(merged["stage"])
    known = {f.name for f in fields(Stage)} - {"number"}
    unknown = set(stage_changes) - known
    if unknown:
        raise ConfigError(f"{origin}: unknown stage keys {sorted(unknown)}")
    for key in ("visual_kinds", "tasks"):
        if stage_changes.get(key) is not None:
            stage_changes[key] = tuple(stage_changes[key])
    try:
        stage = default_stage(built["run"].stage).with_overrides(**stage_changes)
    except ValueError as err:
        raise ConfigError(f"{origin}: {err}") from None
    frozen = sorted(set(lr_update or {}) - set(stage.lr))
    if frozen:
        raise ConfigError(
            f"--lr: stage {stage.number} does not train {', '.join(frozen)} (it trains {', '.join(stage.trained)}); "
            "set stage.lr in a config file to change which parts train"
        )
    if lr_update:
        stage = stage.with_overrides(lr={**stage.lr, **lr_update})
    if not built["data"].shards:
        raise ConfigError(f"{origin}: no shards given (--shards or data.shards)")
    return TrainConfig(built["model"], built["data"], built["run"], stage)
