"""One stage of training, end to end: the recipe the CLI calls.

Resolve where the stage starts (the preset's base, ``model.init``, or the
previous stage's output), load the model through transformers, freeze what
the stage does not train, index and verify the shards, resume from the
latest checkpoint when there is one, run the loop, save the model folder.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch

from omnivmed.data.fileio import atomic_write_bytes
from omnivmed.trainer.checkpoint import (
    SHARDED, commit_checkpoint, load_latest, pending, restore_rng, save_checkpoint, start_checkpoint,
)  # fmt: skip
from omnivmed.trainer.config import ConfigError, TrainConfig
from omnivmed.trainer.data.chat import ChatEncoder
from omnivmed.trainer.data.order import Partition
from omnivmed.trainer.data.sources import load_index, manifests_for_stage
from omnivmed.trainer.data.stream import DataStream, Position, filter_index
from omnivmed.trainer.data.visual import VisualSpec
from omnivmed.trainer.distributed import (
    Runtime, barrier, full_model_state, full_state, init_runtime, load_full_state, load_sharded, parameter_digest,
    save_sharded, shutdown, wrap,
)  # fmt: skip
from omnivmed.trainer.loop import LoopResult, train_loop
from omnivmed.trainer.metrics import Metrics
from omnivmed.trainer.model.omnivmed import OmniVMed, load_model, load_omnivmed
from omnivmed.trainer.model.tiny import write_tiny_base
from omnivmed.trainer.schedule import CONFIG_NAME, MODEL_DIR, SUMMARY_NAME



def resolve_init(cfg: TrainConfig, runtime: Runtime) -> tuple[str, Path]:
    """('omnivmed', model folder) or ('base', folder holding vision/ and llm/)."""
    if cfg.model.init:
        return "omnivmed", Path(cfg.model.init)
    if cfg.stage.number > 1:
        previous = Path(cfg.run.out) / f"stage{cfg.stage.number - 1}" / MODEL_DIR
        if not (previous / "config.json").is_file():
            raise ConfigError(
                f"{previous}: stage {cfg.stage.number} starts from stage {cfg.stage.number - 1}'s output, which is "
                "missing; run that stage first or give --init"
            )
        return "omnivmed", previous
    if cfg.preset.needs_paths:
        if not (cfg.model.vision_path and cfg.model.llm_path):
            raise ConfigError(f"model config {cfg.preset.name} needs --vision-path and --llm-path (local folders)")
        return "paths", Path(cfg.model.vision_path)
    base = Path(cfg.run.out) / "base-tiny"
    if runtime.is_main:
        write_tiny_base(base, seed=cfg.run.seed)
    barrier(runtime)
    return "base", base


def build_model(cfg: TrainConfig, runtime: Runtime) -> tuple[OmniVMed, str]:
    kind, path = resolve_init(cfg, runtime)
    options = dict(attention=cfg.model.attention, gradient_checkpointing=cfg.model.gradient_checkpointing)
    if kind == "omnivmed":
        model = load_omnivmed(path, **options)
    else:
        vision, llm = (path / "vision", path / "llm") if kind == "base" else (path, Path(cfg.model.llm_path))
        split = cfg.model.rope_split or cfg.preset.rope_split
        model = load_model(
            vision, llm, rope_split=split, rope_theta=cfg.model.rope_theta, keep_abs_pos=cfg.model.keep_abs_pos,
            seed=cfg.run.seed, **options,
        )  # fmt: skip
    check_shapes(model, cfg)
    return model, str(path)


def check_shapes(model: OmniVMed, cfg: TrainConfig) -> None:
    p = cfg.preset
    found = (model.vision.hidden, model.llm.config.hidden_size)
    wanted = (p.vision_hidden or found[0], p.llm_hidden or found[1])
    if found != wanted:
        raise ConfigError(f"model config {p.name} expects hidden sizes vision/LLM {wanted}, the folders have {found}")


def freeze_for(model: OmniVMed, stage) -> None:
    for name, part in model.parts().items():
        part.requires_grad_(name in stage.trained)
    for parameter in model.vision.unused_parameters():
        parameter.requires_grad_(False)


def make_optimizer(model: OmniVMed, stage):
    groups = []
    for name in stage.trained:
        params = [p for p in model.parts()[name].parameters() if p.requires_grad]
        groups.append({"params": params, "lr": stage.lr[name], "name": name})
    optimizer = torch.optim.AdamW(groups, weight_decay=stage.weight_decay, betas=(0.9, 0.999))

    def factor(step: int) -> float:
        if step < stage.warmup_steps:
            return (step + 1) / (stage.warmup_steps + 1)
        progress = (step - stage.warmup_steps) / max(1, stage.steps - stage.warmup_steps)
        return stage.min_lr_ratio + (1 - stage.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def build_stream(cfg: TrainConfig, model: OmniVMed, runtime: Runtime) -> DataStream:
    data = cfg.resolved_data()
    manifests = [m for s in data.shards for m in manifests_for_stage(Path(s), cfg.stage.number)]
    index = filter_index(load_index(manifests, data.split, verify=data.verify), cfg.stage.visual_kinds, cfg.stage.tasks)
    arch = model.arch
    spec = VisualSpec(
        model.vision.patch_size, arch.image_mean, arch.image_std, data.max_frames, data.max_pixels,
        data.max_sample_pixels, data.prune, data.prune_threshold, data.prune_normalisation,
    )  # fmt: skip
    return DataStream(
        index, ChatEncoder(model.tokenizer, data.max_length), spec, batch_size=data.batch_size,
        partition=Partition(runtime.rank, runtime.world_size), seed=data.seed, mix=data.mix,
        num_workers=data.num_workers, pad_id=model.tokenizer.pad_token_id, pack=data.pack,
        token_budget=data.token_budget, max_visual_tokens=data.max_visual_tokens,
    )  # fmt: skip


def run_stage(cfg: TrainConfig) -> LoopResult:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    runtime = init_runtime(cfg.run.parallel, cfg.run.precision)
    try:
        return _run(cfg, runtime)
    finally:
        shutdown(runtime)


def _run(cfg: TrainConfig, runtime: Runtime) -> LoopResult:
    stage_dir = cfg.run.stage_dir
    if runtime.is_main:
        stage_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(stage_dir / CONFIG_NAME, (json.dumps(cfg.to_dict(), indent=2, default=list) + "\n").encode())
    model, init = build_model(cfg, runtime)
    freeze_for(model, cfg.stage)
    stream = build_stream(cfg, model, runtime)
    resumed = load_latest(stage_dir / "checkpoints")
    model.to(runtime.device)
    wrapped = wrap(model, runtime)
    optimizer, scheduler = make_optimizer(model, cfg.stage)
    step, position = 0, Position()
    if resumed is not None:
        if resumed.init != init:
            raise ConfigError(f"{stage_dir}: its checkpoints started from {resumed.init}, this run from {init}")
        if resumed.sharded is not None:
            load_sharded(wrapped, optimizer, resumed.sharded)
        else:
            load_full_state(wrapped, optimizer, resumed.model_state, resumed.optimizer_state)
        scheduler.load_state_dict(resumed.scheduler_state)
        restore_rng(resumed.rng)
        step, position = resumed.step, resumed.position
    metrics = Metrics(
        stage_dir, enabled=runtime.is_main, tensorboard=cfg.run.tensorboard, progress=cfg.run.progress,
        total=cfg.stage.steps, start=step,
    )  # fmt: skip
    if resumed is not None:
        metrics.restore(resumed.counters)

    folder = stage_dir / "checkpoints"

    def checkpoint(at_step: int, at: Position) -> None:
        if runtime.parallel == "fsdp":  # every rank writes its own shards, nothing is gathered
            if runtime.is_main:
                start_checkpoint(folder, at_step)
            barrier(runtime)
            save_sharded(wrapped, optimizer, pending(folder, at_step) / SHARDED)
            if runtime.is_main:
                commit_checkpoint(
                    folder, at_step, at, scheduler.state_dict(), init, cfg.run.keep_checkpoints, metrics.counters()
                )
        else:
            model_state, optim_state = full_state(wrapped, optimizer, trainable_only=True)
            if runtime.is_main:
                save_checkpoint(
                    folder, at_step, at, model_state, optim_state, scheduler.state_dict(), init,
                    cfg.run.keep_checkpoints, metrics.counters(),
                )  # fmt: skip
        barrier(runtime)

    try:
        result = train_loop(
            wrapped, optimizer, scheduler, stream, step=step, position=position, total_steps=cfg.stage.steps,
            grad_accum=cfg.run.grad_accum, grad_clip=cfg.run.grad_clip, runtime=runtime, metrics=metrics,
            checkpoint=checkpoint, save_every=cfg.run.save_every, stop_after=cfg.run.stop_after,
            record_samples=cfg.run.record_samples,
        )  # fmt: skip
    finally:
        metrics.close()
    if result.finished:
        _save_final(wrapped, model, runtime, stage_dir, metrics.summary(), result)
    if cfg.run.record_samples:
        record = {"rank": runtime.rank, "samples": result.sample_ids, "parameters_sha256": parameter_digest(wrapped)}
        atomic_write_bytes(stage_dir / "ranks" / f"rank{runtime.rank}.json", json.dumps(record, indent=1).encode())
    barrier(runtime)
    return result


def _save_final(wrapped, model: OmniVMed, runtime: Runtime, stage_dir: Path, summary: dict, result) -> None:
    state = full_model_state(wrapped) if runtime.parallel == "fsdp" else None  # gathered on rank 0
    if runtime.is_main:
        model.save_pretrained(stage_dir / MODEL_DIR, state_dict=state)
        summary = {**summary, "steps": result.step, "final_loss": result.losses[-1] if result.losses else None}
        atomic_write_bytes(stage_dir / SUMMARY_NAME, (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode())
    barrier(runtime)
