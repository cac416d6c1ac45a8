"""Typed training configuration: model, data, run and stage sections, validated on construction.

A config file (YAML or JSON) holds the same sections as keys
(``model:``, ``data:``, ``run:``, ``stage:``); command-line options
override the file. The ``stage`` section changes fields of the stage
picked by ``run.stage`` (its default from stages.py). Runtime objects
(process group, device) are never part of the config.

Each field is declared with ``option(default, doc)``: its documentation and
its command-line option (name, placeholder, the default as ``--help`` shows
it) live on the field, and ``omnivmed-train`` generates its options from
``command_line_options()``, so every option is one field, named after it.
The stage fields the command line may change are listed in ``STAGE_FIELDS``
(stages.py is the stage's definition). This module imports nothing heavy:
``omnivmed-train --help`` loads it without torch.
"""

from __future__ import annotations

import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

from omnivmed.data.fileio import read_json_or_yaml
from omnivmed.trainer.presets import PRESETS, Preset, get_preset
from omnivmed.trainer.stages import Stage, default_stage


class ConfigError(ValueError):
    """A configuration that cannot run: names the file or option and the reason."""


def _metadata(doc: str = "", *, flag=None, negative=None, metavar=None, shown=None, file_only=None, type=None) -> dict:
    return {
        "doc": doc, "flag": flag, "negative": negative, "metavar": metavar, "shown": shown,
        "file_only": file_only, "type": type,
    }  # fmt: skip


def option(default=MISSING, doc: str = "", *, factory=MISSING, **meta):
    """A config field with its documentation and command-line option.

    ``flag``: the option when it is not ``--<field-name>``; ``negative``: a boolean's off switch when it is
    not ``--no-<flag>``; ``metavar``: the value's placeholder; ``shown``: the default as ``--help`` shows it
    where the field's default is resolved later (e.g. None: the preset's); ``file_only``: why the field
    has no option (set only in a config file).
    """
    return field(default=default, default_factory=factory, metadata=_metadata(doc, **meta))


def _per_preset(attr: str) -> str:
    """A default taken from the preset, as --help shows it: "the preset's: tiny 1024, 1.5b 16384, 7b 16384"."""
    values = {name: getattr(make(), attr) for name, make in PRESETS.items()}
    return "the preset's: " + ", ".join(f"{name} {_show(v, 'derived')}" for name, v in values.items())


def _show(value, none: str = "none") -> str:
    """A value as an option takes it: 12,12,12 for a tuple, a=1,b=2 for a mapping."""
    if value is None:
        return none
    if isinstance(value, dict):
        return ",".join(f"{k}={_show(v)}" for k, v in value.items()) or none
    if isinstance(value, (list, tuple)):
        return ",".join(map(_show, value)) or none
    return str(value)


@dataclass
class ModelConfig:
    preset: str = option("tiny", "Model preset: tiny | 1.5b | 7b (presets.py).", flag="--model-config", metavar="NAME")
    vision_path: str | None = option(
        None, "Local SigLIP folder (SiglipVisionModel or SiglipModel checkpoint); needed by 1.5b/7b.", metavar="DIR",
        shown="none (tiny: built in)",
    )
    llm_path: str | None = option(
        None, "Local causal-LM folder with its tokenizer (Qwen2.5-*-Instruct); needed by 1.5b/7b.", metavar="DIR",
        shown="none (tiny: built in)",
    )
    init: str | None = option(
        None, "Model folder to start from instead of the previous stage's output.", metavar="DIR",
        shown="OUT/stage(N-1)/model; stage 1: the preset's base",
    )
    rope_split: tuple[int, int, int] | None = option(
        None, "Rotary pairs for (t, h, w), summing to head_dim / 2, e.g. 12,12,12.", metavar="T,H,W",
        shown=_per_preset("rope_split"),
    )
    rope_theta: float = option(10000.0, "Rotary base.")
    keep_abs_pos: bool = option(
        False, "Also add SigLIP's learned absolute table, interpolated to each input's grid, beside RoPE.",
        negative="--no-abs-pos",
    )
    attention: str = option(
        "auto", "Vision attention: auto (flash-attn varlen on GPU when installed, else SDPA), sdpa, flash.",
        metavar="IMPL",
    )
    gradient_checkpointing: bool = option(
        False, "Recompute activations in backward (vision layers and LLM) to save memory."
    )

    def __post_init__(self):
        from omnivmed.trainer.model.attention import IMPLEMENTATIONS  # imports torch: only when a config is built

        get_preset(self.preset)
        if self.attention not in IMPLEMENTATIONS:
            raise ConfigError(f"model.attention {self.attention!r} is not one of {', '.join(IMPLEMENTATIONS)}")
        if self.rope_split is not None:
            self.rope_split = tuple(int(x) for x in self.rope_split)


@dataclass
class DataConfig:
    shards: list[str] = option(
        factory=list, doc="Manifest file, or folder of manifests (*.manifest.json / manifest.json).", metavar="PATH",
        shown="none (required)",
    )
    split: str = option("train", "Split of the shards to train on.")
    mix: dict[str, float] = option(
        factory=dict, doc="Per-source sampling weight (a recipe's shards are already mixed).", metavar="SOURCE=WEIGHT",
        shown="every row once per epoch",
    )
    seed: int = option(0, "Seed of the global sample order (with the epoch number).", flag="--data-seed")
    batch_size: int = option(4, "Samples per rank per micro-step.")
    num_workers: int = option(0, "DataLoader worker processes per rank (decoding and tokenising).")
    max_length: int | None = option(
        None, "Token limit per sample: visual tokens shrink to leave room for the text (see --max-visual-tokens); "
        "a text longer than this on its own is cut and counted.", shown=_per_preset("max_length"),
    )
    pack: bool = option(
        True, "Pack a micro-batch's samples into one sequence without padding (per-sample position ids, "
        "block-diagonal causal attention); --no-pack pads them into rows instead.",
    )
    token_budget: int | None = option(
        None, "Tokens per packed micro-batch (--batch-size still bounds its samples); at least --max-length.",
        shown=_per_preset("token_budget") + " (and at least max_length)",
    )
    max_visual_tokens: int | None = option(
        None, "Visual tokens kept per sample after pruning; a sample over it (or whose text would not fit beside "
        "them) is re-encoded with fewer frames, evenly spread and pruned again, then fewer pixels a frame, and "
        "counted as capped.", shown=_per_preset("max_visual_tokens"),
    )
    max_frames: int | None = option(
        None, "Frames/slices kept (evenly) per volume or video.", shown=_per_preset("max_frames")
    )
    max_pixels: int | None = option(None, "Pixel cap per frame.", shown=_per_preset("max_pixels"))
    max_sample_pixels: int | None = option(
        None, "Pixel cap per sample over all its frames.", shown="max_frames * max_pixels"
    )
    prune: bool = option(True, "RLT token pruning on volumes and videos.")
    prune_threshold: float = option(
        0.1, "Keep a patch when its mean |difference| to the previous slice/frame exceeds this."
    )
    prune_normalisation: str = option(
        "imagenet",
        "Pixels the pruning difference is computed on: imagenet (RLT's rule: ImageNet mean/std on [0,1] pixels) "
        "or encoder (the vision encoder's own mean/std).",
    )
    verify: bool = option(True, "Check every shard's size, sha256, rows and schema before training.")

    def __post_init__(self):
        if self.batch_size < 1 or self.num_workers < 0:
            raise ConfigError("data.batch_size must be >= 1 and data.num_workers >= 0")
        for name in ("max_length", "token_budget", "max_visual_tokens"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"data.{name} must be >= 1, got {getattr(self, name)}")
        if any(w < 0 for w in self.mix.values()):
            raise ConfigError(f"data.mix weights must be >= 0, got {self.mix}")
        if self.prune_normalisation not in ("imagenet", "encoder"):
            raise ConfigError(f"data.prune_normalisation {self.prune_normalisation!r} is not imagenet or encoder")
        self.mix = {str(k): float(v) for k, v in self.mix.items()}


@dataclass
class RunConfig:
    out: str = option(
        "runs/omnivmed", "Run folder; stage N writes OUT/stageN/ (checkpoints, model, metrics, tensorboard).",
        metavar="DIR",
    )
    stage: int = option(
        1, "Stage to run: 1 alignment (LLM frozen), 2 2D instructions, 3 mixed 2D/3D/video (stages.py).",
        shown="all: 1, then 2 from 1's output, then 3 from 2's (a finished stage is skipped)",
    )
    grad_accum: int = option(1, "Micro-steps per optimizer step.")
    grad_clip: float = option(1.0, "Gradient norm clip (0: off).")
    save_every: int = option(500, "Checkpoint every N optimizer steps (and at the end).")
    keep_checkpoints: int = option(2, "Checkpoints kept (older ones are removed).")
    stop_after: int | None = option(
        None, "Stop after N optimizer steps in this invocation, leaving a checkpoint (resume by re-running).",
        shown="none (run to the stage's end)",
    )
    precision: str = option("auto", "auto (bf16 autocast on GPU, fp32 on CPU), fp32, bf16.")
    parallel: str = option("auto", "auto (FSDP on multi-GPU, else DDP), ddp, fsdp (also on CPU with gloo).")
    seed: int = option(0, "Seed for fresh weights (the projector in stage 1, the tiny base).")
    tensorboard: bool = option(True, "Write TensorBoard scalars to OUT/stageN/tensorboard.")
    progress: bool = option(True, "Show a progress bar (rank 0) with tokens/s and kept-token ratio.")
    record_samples: bool = option(
        False, "Write every sample id each rank trains on, and a parameter digest, to OUT/stageN/ranks/."
    )
    dry_run: bool = option(
        False, "Print the per-GPU memory plan of every stage for the preset on --gpus x --gpu-memory and exit "
        "(loads no weights, reads no shards).",
    )
    gpus: int = option(8, "GPUs the --dry-run plan shards over (FSDP).")
    gpu_memory: float = option(80.0, "GiB per GPU for the --dry-run plan (e.g. 24 for an RTX 3090).", metavar="GIB")

    def __post_init__(self):
        if self.gpus < 1 or self.gpu_memory <= 0:
            raise ConfigError("run.gpus must be >= 1 and run.gpu_memory > 0")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"run.precision {self.precision!r} is not auto, fp32 or bf16")
        if self.parallel not in ("auto", "ddp", "fsdp"):
            raise ConfigError(f"run.parallel {self.parallel!r} is not auto, ddp or fsdp")
        if self.grad_accum < 1 or self.save_every < 1 or self.keep_checkpoints < 1:
            raise ConfigError("run.grad_accum, run.save_every and run.keep_checkpoints must be >= 1")

    @property
    def stage_dir(self) -> Path:
        return Path(self.out) / f"stage{self.stage}"


_DEFINITION = "part of the stage's definition (stages.py); change it in a config file's stage section"
STAGE_FIELDS: dict[str, dict] = {
    "number": _metadata(file_only="not a setting: the stage to run is run.stage (--stage)"),
    "name": _metadata(file_only=_DEFINITION),
    "lr": _metadata(
        "Learning rate of a part the stage trains (vision, projector, llm); which parts train is the stage's "
        "definition, changed only through stage.lr in a config file.",
        metavar="PART=RATE", type=dict[str, float],
    ),
    "visual_kinds": _metadata(file_only=_DEFINITION),
    "tasks": _metadata(file_only=_DEFINITION),
    "steps": _metadata("Optimizer steps of the stage.", shown="tiny preset 30; 1.5b/7b: the stage's 1000"),
    "warmup_steps": _metadata(
        "Linear learning-rate warm-up steps (then cosine decay).", shown="tiny preset 3; 1.5b/7b: the stage's 30"
    ),
    "min_lr_ratio": _metadata(file_only=_DEFINITION),
    "weight_decay": _metadata(file_only=_DEFINITION),
}
"""The option or the config-file-only reason of every Stage field (Stage lives in stages.py)."""


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
        if d.token_budget is not None and d.token_budget < d.max_length:
            raise ConfigError(
                f"data.token_budget {d.token_budget} is below data.max_length {d.max_length}: a full-length sample "
                "would not fit a pack; raise --token-budget or lower --max-length"
            )
        d.token_budget = d.token_budget or max(p.token_budget, d.max_length)
        d.max_visual_tokens = d.max_visual_tokens or p.max_visual_tokens
        d.max_frames = d.max_frames or p.max_frames
        d.max_pixels = d.max_pixels or p.max_pixels
        d.max_sample_pixels = d.max_sample_pixels or d.max_frames * d.max_pixels
        return d

    def to_dict(self) -> dict:
        def plain(obj):
            return {f.name: getattr(obj, f.name) for f in fields(obj)}

        return {"model": plain(self.model), "data": plain(self.data), "run": plain(self.run), "stage": plain(self.stage)}


_SECTIONS = {"model": ModelConfig, "data": DataConfig, "run": RunConfig}


@dataclass(frozen=True)
class Option:
    """One command-line option and the one config field it sets: ``section.name``."""

    section: str
    name: str
    flag: str
    type: object
    """The field's type without ``| None``: bool is a switch, list and dict repeat, a tuple is comma-separated."""
    doc: str
    default: str
    """The default as ``--help`` shows it."""
    negative: str | None = None
    """A switch's off flag."""
    metavar: str | None = None

    @property
    def key(self) -> str:
        return f"{self.section}.{self.name}"


def command_line_options() -> list[Option]:
    """Every field's option, in field order: model, data, run, then the stage fields that have one."""
    found = []
    for section, cls in _SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            if not f.metadata.get("file_only"):
                default = f.default_factory() if f.default is MISSING else f.default
                found.append(_option(section, f.name, hints[f.name], f.metadata, default))
    hints = typing.get_type_hints(Stage)
    stages = _default_stages()
    for f in fields(Stage):
        meta = STAGE_FIELDS.get(f.name)
        if meta is not None and not meta["file_only"]:
            shown = meta["shown"] or _per_stage({s.number: getattr(s, f.name) for s in stages})
            found.append(_option("stage", f.name, hints[f.name], {**meta, "shown": shown}, None))
    return found


def _option(section: str, name: str, hint, meta, default) -> Option:
    tp = meta.get("type") or hint
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    flag = meta.get("flag") or "--" + name.replace("_", "-")
    negative = (meta.get("negative") or "--no-" + flag[2:]) if tp is bool else None
    if meta.get("shown"):
        shown = meta["shown"]
    elif tp is bool:
        shown = flag if default else negative
    else:
        shown = _show(default)
    return Option(section, name, flag, tp, meta.get("doc", ""), shown, negative, meta.get("metavar"))


def _per_stage(values: dict[int, object]) -> str:
    """A stage field's default as --help shows it: one value, or one per default stage when they differ."""
    shown = {_show(v) for v in values.values()}
    return shown.pop() if len(shown) == 1 else "; ".join(f"stage {n}: {_show(v)}" for n, v in values.items())


def _default_stages() -> list[Stage]:
    stages = []
    while True:
        try:
            stages.append(default_stage(len(stages) + 1))
        except ValueError:
            return stages


def file_only_fields() -> dict[str, str]:
    """``section.name`` -> why the field is set only in a config file."""
    metas = [(s, f.name, f.metadata) for s, cls in _SECTIONS.items() for f in fields(cls)]
    metas += [("stage", name, meta) for name, meta in STAGE_FIELDS.items()]
    return {f"{s}.{name}": meta["file_only"] for s, name, meta in metas if meta.get("file_only")}


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
    file: Path | None = None,
    overrides: dict[str, dict] | None = None,
    lr_update: dict[str, float] | None = None,
    *,
    need_shards: bool = True,
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
        stage = default_stage(built["run"].stage)
        preset_steps = get_preset(built["model"].preset).stage_steps
        if preset_steps is not None:
            stage = stage.with_overrides(steps=preset_steps[0], warmup_steps=preset_steps[1])
        stage = stage.with_overrides(**stage_changes)
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
    if need_shards and not built["data"].shards:
        raise ConfigError(f"{origin}: no shards given (--shards or data.shards)")
    return TrainConfig(built["model"], built["data"], built["run"], stage)
