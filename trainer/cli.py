"""The ``omnivmed-train`` command: options into a TrainConfig, then one stage of training."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(name="omnivmed-train", add_completion=False, pretty_exceptions_enable=False)


def _pairs(values: list[str] | None, option: str, cast=float) -> dict | None:
    if not values:
        return None
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=option)
        try:
            out[key] = cast(value)
        except ValueError:
            raise typer.BadParameter(f"{item!r}: {value!r} is not a number", param_hint=option) from None
    return out


def _split(text: str | None) -> tuple[int, int, int] | None:
    if text is None:
        return None
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not three integers like 12,12,12", param_hint="--rope-split") from None


@app.command()
def train(
    shards: Annotated[Optional[list[Path]], typer.Option("--shards", help="Manifest file, or folder of *.manifest.json / manifest.json (repeatable).")] = None,
    stage: Annotated[Optional[int], typer.Option("--stage", help="Stage to run: 1 alignment (LLM frozen), 2 2D instructions, 3 mixed 2D/3D/video.")] = None,
    model_config: Annotated[Optional[str], typer.Option("--model-config", help="Model preset: tiny | 1.5b | 7b.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Run folder; stage N writes OUT/stageN/ and starts from OUT/stage(N-1)/model.")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="YAML/JSON config file with model/data/run/stage sections; options override it.")] = None,
    vision_path: Annotated[Optional[Path], typer.Option("--vision-path", help="Local SigLIP folder (1.5b/7b).")] = None,
    llm_path: Annotated[Optional[Path], typer.Option("--llm-path", help="Local Qwen2.5 (causal LM + tokenizer) folder (1.5b/7b).")] = None,
    init: Annotated[Optional[Path], typer.Option("--init", help="Model folder to start from instead of the previous stage's output.")] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", help="Optimizer steps of the stage.")] = None,
    warmup_steps: Annotated[Optional[int], typer.Option("--warmup-steps", help="Learning-rate warm-up steps.")] = None,
    lr: Annotated[Optional[list[str]], typer.Option("--lr", help="PART=RATE for a part the stage trains: vision, projector or llm (repeatable).")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Samples per rank per micro-step.")] = None,
    grad_accum: Annotated[Optional[int], typer.Option("--grad-accum", help="Micro-steps per optimizer step.")] = None,
    mix: Annotated[Optional[list[str]], typer.Option("--mix", help="SOURCE=WEIGHT sampling weight (repeatable); default: every row once per epoch.")] = None,
    split: Annotated[Optional[str], typer.Option("--split", help="Split of the shards to train on.")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed for fresh weights.")] = None,
    data_seed: Annotated[Optional[int], typer.Option("--data-seed", help="Seed of the sample order.")] = None,
    max_length: Annotated[Optional[int], typer.Option("--max-length", help="Token limit per sample.")] = None,
    max_frames: Annotated[Optional[int], typer.Option("--max-frames", help="Frames/slices kept per volume or video.")] = None,
    max_pixels: Annotated[Optional[int], typer.Option("--max-pixels", help="Pixel cap per frame.")] = None,
    prune: Annotated[Optional[bool], typer.Option("--prune/--no-prune", help="RLT token pruning on volumes and videos.")] = None,
    prune_threshold: Annotated[Optional[float], typer.Option("--prune-threshold", help="Mean |difference| above which a patch is kept.")] = None,
    keep_abs_pos: Annotated[Optional[bool], typer.Option("--keep-abs-pos/--no-abs-pos", help="Add SigLIP's interpolated absolute table beside RoPE.")] = None,
    rope_split: Annotated[Optional[str], typer.Option("--rope-split", help="Rotary pairs for t,h,w, e.g. 12,12,12.")] = None,
    attention: Annotated[Optional[str], typer.Option("--attention", help="Vision attention: auto, sdpa, flash.")] = None,
    num_workers: Annotated[Optional[int], typer.Option("--num-workers", help="DataLoader workers per rank.")] = None,
    save_every: Annotated[Optional[int], typer.Option("--save-every", help="Checkpoint every N steps.")] = None,
    stop_after: Annotated[Optional[int], typer.Option("--stop-after", help="Stop after N steps in this invocation, leaving a checkpoint (resume by re-running).")] = None,
    precision: Annotated[Optional[str], typer.Option("--precision", help="auto (bf16 on GPU), fp32, bf16.")] = None,
    parallel: Annotated[Optional[str], typer.Option("--parallel", help="auto (FSDP on multi-GPU), ddp, fsdp.")] = None,
    gradient_checkpointing: Annotated[Optional[bool], typer.Option("--gradient-checkpointing/--no-gradient-checkpointing", help="Recompute activations to save memory.")] = None,
    record_samples: Annotated[Optional[bool], typer.Option("--record-samples", help="Write each rank's sample ids and parameter digest to OUT/stageN/ranks/.")] = None,
    progress: Annotated[Optional[bool], typer.Option("--progress/--no-progress", help="Progress bar with tokens/s and kept-token ratio.")] = None,
    tensorboard: Annotated[Optional[bool], typer.Option("--tensorboard/--no-tensorboard", help="TensorBoard scalars in OUT/stageN/tensorboard.")] = None,
) -> None:
    """Train one stage of the OmniV-Med model from verified shards."""
    from omnivmed.trainer.config import ConfigError, build_config
    from omnivmed.trainer.data.sources import TrainDataError
    from omnivmed.trainer.train import run_stage

    overrides = {
        "model": {
            "preset": model_config, "vision_path": _str(vision_path), "llm_path": _str(llm_path), "init": _str(init),
            "keep_abs_pos": keep_abs_pos, "rope_split": _split(rope_split), "attention": attention,
            "gradient_checkpointing": gradient_checkpointing,
        },
        "data": {
            "shards": [str(s) for s in shards] if shards else None, "split": split, "mix": _pairs(mix, "--mix"),
            "seed": data_seed, "batch_size": batch_size, "num_workers": num_workers, "max_length": max_length,
            "max_frames": max_frames, "max_pixels": max_pixels, "prune": prune, "prune_threshold": prune_threshold,
        },
        "run": {
            "out": _str(out), "stage": stage, "grad_accum": grad_accum, "save_every": save_every,
            "stop_after": stop_after, "precision": precision, "parallel": parallel, "seed": seed,
            "tensorboard": tensorboard, "progress": progress, "record_samples": record_samples,
        },
        "stage": {"steps": steps, "warmup_steps": warmup_steps},
    }  # fmt: skip
    try:
        result = run_stage(build_config(config, overrides, lr_update=_pairs(lr, "--lr")))
    except (ConfigError, TrainDataError, FileNotFoundError) as err:
        typer.echo(f"omnivmed-train: {err}", err=True)
        raise typer.Exit(2) from None
    state = "finished" if result.finished else "stopped (resume by running the same command)"
    last = f", last loss {result.losses[-1]:.4f}" if result.losses else " (nothing left to do)"
    typer.echo(f"{state} at step {result.step}{last}")


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


def main() -> None:
    app()


if __name__ == "__main__":  # torchrun -m omnivmed.trainer.cli
    main()
