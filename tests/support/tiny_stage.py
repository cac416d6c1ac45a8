"""A stage folder (OUT/stage3/model) of the tiny model, written through the project's own save path."""

from __future__ import annotations

from pathlib import Path


def write_tiny_stage(root: Path) -> Path:
    from omnivmed.trainer.model.omnivmed import load_model
    from omnivmed.trainer.model.tiny import write_tiny_base

    base = write_tiny_base(Path(root) / "tiny" / "base")
    folder = Path(root) / "run" / "stage3" / "model"
    load_model(base / "vision", base / "llm", seed=0).save_pretrained(folder)
    return folder
