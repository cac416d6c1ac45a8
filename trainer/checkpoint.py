"""Resumable checkpoints: trained weights, optimizer, scheduler, RNG states and data position.

``<stage dir>/checkpoints/step-NNNNNNNN/`` holds ``model.safetensors`` (the
trained parameters; frozen ones come from the stage's init folder, recorded
in ``state.json``), ``optimizer.pt``, ``rng.pt`` and ``state.json`` (step,
epoch, samples seen, scheduler). A checkpoint is written under a temporary
name, every file fsynced, then renamed; ``latest`` names the newest
complete one, so a crash mid-write leaves the previous checkpoint usable.
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


@dataclass
class Resumed:
    step: int
    position: Position
    model_state: dict
    optimizer_state: dict
    scheduler_state: dict
    rng: dict
    init: str
    counters: dict  # the run's data counters so far (samples, cut, unsupervised, kept patches)


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


def save_checkpoint(
    folder: Path, step: int, position: Position, model_state: dict, optimizer_state: dict, scheduler_state: dict,
    init: str, keep: int, counters: dict | None = None,
) -> Path:  # fmt: skip
    folder = Path(folder)
    final = folder / f"step-{step:08d}"
    tmp = folder / f".step-{step:08d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    # clone: tied weights share storage, which safetensors refuses to write twice
    save_file({k: v.detach().clone().contiguous() for k, v in model_state.items()}, str(tmp / "model.safetensors"))
    torch.save(optimizer_state, tmp / "optimizer.pt")
    torch.save(rng_state(), tmp / "rng.pt")
    state = {
        "step": step, "epoch": position.epoch, "seen": position.seen, "scheduler": scheduler_state, "init": init,
        "counters": counters or {},
    }  # fmt: skip
    (tmp / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    for file in tmp.iterdir():
        with open(file, "rb") as f:
            os.fsync(f.fileno())
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
        return Resumed(
            step=state["step"],
            position=Position(state["epoch"], state["seen"]),
            model_state=load_file(str(path / "model.safetensors")),
            optimizer_state=torch.load(path / "optimizer.pt", weights_only=False),
            scheduler_state=state["scheduler"],
            rng=torch.load(path / "rng.pt", weights_only=False),
            init=state["init"],
            counters=state.get("counters", {}),
        )
    except (OSError, KeyError, json.JSONDecodeError) as err:
        raise RuntimeError(f"{path}: unreadable checkpoint ({err})") from None
