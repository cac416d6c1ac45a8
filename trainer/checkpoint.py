"""Resumable checkpoints: trained weights, optimizer, scheduler, RNG states and data position.

``<stage dir>/checkpoints/step-NNNNNNNN/`` holds the trained parameters and
the optimizer state (frozen parameters come from the stage's init folder,
recorded in ``state.json``), ``rng.pt`` and ``state.json`` (step, epoch,
samples seen, scheduler, counters). Trained state is kept one of two ways:

- ``model.safetensors`` + ``optimizer.pt``: full tensors, written by rank 0
  (one process, DDP);
- ``sharded/``: a torch.distributed.checkpoint folder holding
  ``{"model": ..., "optimizer": ...}`` where every rank wrote its own shards
  (FSDP); it loads into any world size.

A checkpoint is written under a temporary name, every file fsynced, then
renamed; ``latest`` names the newest complete one, so a crash mid-write
leaves the previous checkpoint usable.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from omnivmed.data.fileio import atomic_write_bytes, fsync_dir
from omnivmed.trainer.data.stream import Position

LATEST = "latest"
SHARDED = "sharded"


@dataclass
class Resumed:
    step: int
    position: Position
    model_state: dict | None  # full trained parameters; None when the checkpoint is sharded
    optimizer_state: dict | None
    scheduler_state: dict
    rng: dict
    init: str
    counters: dict  # the run's data counters so far (samples, cut, unsupervised, kept patches)
    sharded: Path | None = None  # the torch.distributed.checkpoint folder of a sharded checkpoint


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def pending(folder: Path, step: int) -> Path:
    """The temporary folder the checkpoint of ``step`` is written in before it is renamed into place."""
    return Path(folder) / f".step-{step:08d}.tmp"


def start_checkpoint(folder: Path, step: int) -> Path:
    """An empty :func:`pending` folder for the checkpoint of ``step`` (one process creates it)."""
    tmp = pending(folder, step)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def save_checkpoint(
    folder: Path, step: int, position: Position, model_state: dict, optimizer_state: dict, scheduler_state: dict,
    init: str, keep: int, counters: dict | None = None,
) -> Path:  # fmt: skip
    """A checkpoint of full states, written by one process."""
    tmp = start_checkpoint(folder, step)
    # clone: tied weights share storage, which safetensors refuses to write twice
    save_file({k: v.detach().clone().contiguous() for k, v in model_state.items()}, str(tmp / "model.safetensors"))
    torch.save(optimizer_state, tmp / "optimizer.pt")
    return commit_checkpoint(folder, step, position, scheduler_state, init, keep, counters)


def commit_checkpoint(
    folder: Path, step: int, position: Position, scheduler_state: dict, init: str, keep: int,
    counters: dict | None = None,
) -> Path:  # fmt: skip
    """Add RNG and state.json to the temporary folder whose trained state is written, fsync, rename, point
    ``latest`` at it and remove the oldest beyond ``keep``."""
    folder = Path(folder)
    final = folder / f"step-{step:08d}"
    tmp = pending(folder, step)
    torch.save(rng_state(), tmp / "rng.pt")
    state = {
        "step": step, "epoch": position.epoch, "seen": position.seen, "scheduler": scheduler_state, "init": init,
        "counters": counters or {},
    }  # fmt: skip
    (tmp / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    for file in sorted(tmp.rglob("*")):
        if file.is_file():
            with open(file, "rb") as f:
                os.fsync(f.fileno())
        else:
            fsync_dir(file)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    fsync_dir(folder)
    atomic_write_bytes(folder / LATEST, final.name.encode())
    for old in sorted(folder.glob("step-*"))[:-keep]:
        shutil.rmtree(old)
    return final


def load_latest(folder: Path) -> Resumed | None:
    pointer = Path(folder) / LATEST
    if not pointer.is_file():
        return None
    path = Path(folder) / pointer.read_text().strip()
    try:
        state = json.loads((path / "state.json").read_text())
        sharded = path / SHARDED if (path / SHARDED).is_dir() else None
        return Resumed(
            step=state["step"],
            position=Position(state["epoch"], state["seen"]),
            model_state=None if sharded else load_file(str(path / "model.safetensors")),
            optimizer_state=None if sharded else torch.load(path / "optimizer.pt", weights_only=False),
            scheduler_state=state["scheduler"],
            rng=torch.load(path / "rng.pt", weights_only=False),
            init=state["init"],
            counters=state.get("counters", {}),
            sharded=sharded,
        )
    except (OSError, KeyError, json.JSONDecodeError) as err:
        raise RuntimeError(f"{path}: unreadable checkpoint ({err})") from None
