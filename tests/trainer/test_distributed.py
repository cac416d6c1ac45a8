"""Two CPU processes under torchrun (gloo): disjoint samples per rank, identical parameters after training."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_run(embedded_manifest, tmp_path):
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
        f"--master_port={free_port()}", "-m", "omnivmed.cli.train",
        "--shards", str(embedded_manifest), "--out", str(tmp_path), "--stage", "1", "--steps", "3",
        "--batch-size", "2", "--warmup-steps", "0", "--record-samples", "--no-progress", "--no-tensorboard",
        "--lr", "projector=1e-2", "--lr", "vision=1e-3",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / "stage1" / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    samples = [set(r["samples"]) for r in ranks]
    assert len(samples[0]) == len(samples[1]) == 3 * 2
    assert not samples[0] & samples[1]
    assert ranks[0]["parameters_sha256"] == ranks[1]["parameters_sha256"]
    base = json.loads((tmp_path / "stage1" / "metrics.jsonl").read_text().splitlines()[-1])
    assert base["step"] == 3
    assert (tmp_path / "stage1" / "model" / "projector" / "model.safetensors").is_file()
