"""The progressive schedule: which stages a run means, and whether a stage is already done.

``omnivmed-train --shards manifests/`` with no ``--stage`` runs stage 1, then
2 from 1's output, then 3 from 2's, each on the manifests for that stage. A
stage is done when its folder holds the saved model and summary of a run
with the same settings (runtime-only settings aside), so a re-run redoes
nothing. Imports nothing heavy: the CLI asks before torch is loaded.
"""

from __future__ import annotations

import json
from pathlib import Path

from omnivmed.trainer.config import TrainConfig

PROGRESSIVE = (1, 2, 3)
MODEL_DIR = "model"
SUMMARY_NAME = "summary.json"
CONFIG_NAME = "config.json"
# Settings that change how a run is watched or paced, not what it trains.
RUNTIME_ONLY = {
    "run": {
        "progress", "tensorboard", "stop_after", "record_samples", "keep_checkpoints", "save_every", "dry_run", "gpus",
        "gpu_memory",
    },
    "data": {"num_workers", "verify"},
}


def stages_to_run(config_file: dict, overrides: dict[str, dict]) -> tuple[int, ...]:
    """``--stage N`` (or ``run.stage`` in the config file): that stage; neither: the progressive schedule."""
    given = overrides.get("run", {}).get("stage") or (config_file.get("run") or {}).get("stage")
    return (int(given),) if given else PROGRESSIVE


def comparable(settings: dict) -> dict:
    return {
        section: {k: v for k, v in values.items() if k not in RUNTIME_ONLY.get(section, set())}
        for section, values in settings.items()
    }


def stage_done(cfg: TrainConfig) -> bool:
    """The stage folder holds a finished model trained with these settings."""
    folder = cfg.run.stage_dir
    if not ((folder / MODEL_DIR / "config.json").is_file() and (folder / SUMMARY_NAME).is_file()):
        return False
    try:
        recorded = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    current = json.loads(json.dumps(cfg.to_dict(), default=list))
    return comparable(recorded) == comparable(current)
