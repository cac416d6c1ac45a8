"""Several processes on CPU (gloo): DDP and FSDP2 under torchrun, and FSDP's pieces in one process.

The torchrun tests launch ``omnivmed.cli.train`` like a user would (tens of
seconds each, marked slow). The FSDP runs train every part in stage 1, so
vision layers, LLM layers and the root all reduce-scatter gradients, on VQA
images only (pinned here, so a change of the default stage definitions does
not move these tests).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from omnivmed.trainer.config import build_config
from omnivmed.trainer.data.stream import Position
from omnivmed.trainer.distributed import Runtime, load_sharded, parameter_digest, save_sharded, shard
from omnivmed.trainer.model.omnivmed import load_model, load_omnivmed
from omnivmed.trainer.train import build_stream, run_stage

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
FSDP_STEPS = 4
FSDP_STAGE = (
    f"stage: {{steps: {FSDP_STEPS}, warmup_steps: 0, tasks: [vqa], visual_kinds: [image],\n"
    "        lr: {vision: 1.0e-3, projector: 1.0e-2, llm: 1.0e-2}}\n"
)
ONE_PROCESS = Runtime(0, 1, 0, torch.device("cpu"), "none", None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
        f"--master_port={free_port()}", "-m", "omnivmed.cli.train", *args,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-6000:]
    return done


def losses(stage_dir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (stage_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_process_gloo_run(embedded_manifest, tmp_path):
    config = tmp_path / "stage.yaml"  # VQA images: enough distinct rows for 2 ranks x 3 steps x 2
    config.write_text("stage: {tasks: [vqa], visual_kinds: [image]}\n")
    torchrun(
        "--config", str(config), "--shards", str(embedded_manifest), "--out", str(tmp_path), "--stage", "1",
        "--steps", "3", "--batch-size", "2", "--warmup-steps", "0", "--record-samples", "--no-progress",
        "--no-tensorboard", "--lr", "projector=1e-2", "--lr", "vision=1e-3",
    )  # fmt: skip
    ranks = [json.loads((tmp_path / "stage1" / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    samples = [set(r["samples"]) for r in ranks]
    assert len(samples[0]) == len(samples[1]) == 3 * 2
    assert not samples[0] & samples[1]
    assert ranks[0]["parameters_sha256"] == ranks[1]["parameters_sha256"]
    base = json.loads((tmp_path / "stage1" / "metrics.jsonl").read_text().splitlines()[-1])
    assert base["step"] == 3
    assert (tmp_path / "stage1" / "model" / "projector" / "model.safetensors").is_file()


# ---- FSDP2, two processes ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fsdp_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fsdp-config") / "train.yaml"
    path.write_text(FSDP_STAGE)
    return path


def fsdp_args(config: Path, manifest: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--config", str(config), "--shards", str(manifest), "--out", str(out), "--stage", "1", "--batch-size", "2",
        "--save-every", "2", "--parallel", "fsdp", "--record-samples", "--no-progress", "--no-tensorboard", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def fsdp_run(fsdp_config, embedded_manifest, tmp_path_factory) -> Path:
    """Two FSDP ranks of batch 2, uninterrupted."""
    out = tmp_path_factory.mktemp("fsdp")
    torchrun(*fsdp_args(fsdp_config, embedded_manifest, out))
    return out / "stage1"


@pytest.fixture(scope="module")
def one_process_run(fsdp_config, embedded_manifest, tmp_path_factory) -> Path:
    """One process of batch 4: the same global batch as two ranks of 2."""
    out = tmp_path_factory.mktemp("single")
    run_stage(one_process_config(fsdp_config, embedded_manifest, out))
    return out / "stage1"


def one_process_config(config: Path, manifest: Path, out: Path):
    return build_config(
        config,
        {
            "data": {"shards": [str(manifest)], "batch_size": 4},
            "run": {"out": str(out), "stage": 1, "save_every": 2, "progress": False, "tensorboard": False},
        },
    )


@pytest.mark.slow
def test_fsdp_losses_equal_one_process_with_the_same_global_batch(fsdp_run, one_process_run):
    ranks = [json.loads((fsdp_run / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert not set(ranks[0]["samples"]) & set(ranks[1]["samples"])
    assert len(losses(fsdp_run)) == FSDP_STEPS
    assert losses(fsdp_run) == pytest.approx(losses(one_process_run), rel=1e-5)
    assert ranks[0]["parameters_sha256"] == ranks[1]["parameters_sha256"]


@pytest.mark.slow
def test_fsdp_stage_folder_reloads_with_the_trained_weights(fsdp_run, one_process_run, fsdp_config, embedded_manifest):
    assert not list(fsdp_run.glob(".*tmp"))
    assert json.loads((fsdp_run / "summary.json").read_text())["steps"] == FSDP_STEPS
    sharded = load_omnivmed(fsdp_run / "model")
    trained = json.loads((fsdp_run / "ranks" / "rank0.json").read_text())["parameters_sha256"]
    assert parameter_digest(sharded) == trained  # exactly the weights the ranks held
    single = load_omnivmed(one_process_run / "model")
    cfg = one_process_config(fsdp_config, embedded_manifest, one_process_run.parent)
    batch, _ = next(build_stream(cfg, single, ONE_PROCESS).batches(Position()))
    with torch.no_grad():
        ours, theirs = sharded(batch)[0], single(batch)[0]
    assert torch.isfinite(ours) and float(ours) == pytest.approx(float(theirs), rel=1e-4)


@pytest.mark.slow
def test_fsdp_resume_after_a_stop_gives_identical_losses(fsdp_run, fsdp_config, embedded_manifest, tmp_path):
    torchrun(*fsdp_args(fsdp_config, embedded_manifest, tmp_path, "--stop-after", "2"))
    checkpoint = tmp_path / "stage1" / "checkpoints" / "step-00000002"
    assert (tmp_path / "stage1" / "checkpoints" / "latest").read_text() == checkpoint.name
    assert not (tmp_path / "stage1" / "model").exists()
    shards = sorted(p.name for p in (checkpoint / "sharded").iterdir())
    assert shards == [".metadata", "__0_0.distcp", "__1_0.distcp"]  # each rank wrote its own shard
    assert not (checkpoint / "model.safetensors").exists()
    torchrun(*fsdp_args(fsdp_config, embedded_manifest, tmp_path))
    assert losses(tmp_path / "stage1") == losses(fsdp_run)
    resumed = json.loads((tmp_path / "stage1" / "ranks" / "rank0.json").read_text())["parameters_sha256"]
    assert resumed == json.loads((fsdp_run / "ranks" / "rank0.json").read_text())["parameters_sha256"]


@pytest.mark.slow
def test_activation_checkpointing_and_accumulation_under_fsdp_give_the_same_losses(
    fsdp_run, fsdp_config, embedded_manifest, tmp_path
):
    """Recomputed layers (vision and LLM), and 2 micro-batches of 1 (gradients reduced on the last only) per step:
    each rank sees the same 2 samples a step as in the uninterrupted run, so the losses are the same."""
    extra = ("--gradient-checkpointing", "--grad-accum", "2", "--batch-size", "1")
    torchrun(*fsdp_args(fsdp_config, embedded_manifest, tmp_path, *extra))
    assert losses(tmp_path / "stage1") == pytest.approx(losses(fsdp_run), rel=1e-5)


# ---- FSDP2 in this process (a group of one rank): mixed precision, recomputation, sharded state -----------------


@pytest.fixture
def one_rank_mesh():
    from torch.distributed.device_mesh import init_device_mesh

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        yield init_device_mesh("cpu", (1,))
    finally:
        dist.destroy_process_group()


def image_batch(model, manifest: Path, out: Path):
    cfg = build_config(
        overrides={
            "data": {"shards": [str(manifest)], "batch_size": 2},
            "run": {"out": str(out)},
            "stage": {"visual_kinds": ["image"], "tasks": ["vqa"]},
        }
    )
    batch, _ = next(build_stream(cfg, model, ONE_PROCESS).batches(Position()))
    return batch


def test_rope_angles_stay_fp32_under_a_bf16_policy_and_layers_recompute(
    one_rank_mesh, tiny_base, embedded_manifest, tmp_path, monkeypatch
):
    from torch.distributed.tensor import DTensor

    from omnivmed.trainer.model import vision

    model = load_model(tiny_base / "vision", tiny_base / "llm", gradient_checkpointing=True)
    batch = image_batch(model, embedded_manifest, tmp_path)
    shard(model, one_rank_mesh, torch.bfloat16)
    seen, rotate = [], vision.apply_rotary

    def spy(x, cos, sin):
        seen.append((x.dtype, cos.dtype, sin.dtype))
        return rotate(x, cos, sin)

    monkeypatch.setattr(vision, "apply_rotary", spy)
    gathered = []
    for layer in model.vision.layers:
        layer.register_forward_pre_hook(lambda module, args: gathered.append(module.mlp.fc1.weight))
    model.train()
    loss, _ = model(batch)
    forward = len(seen)
    loss.backward()
    assert forward == 2 * len(model.vision.layers)  # q and k of each layer
    assert set(seen) == {(torch.bfloat16, torch.float32, torch.float32)}
    assert len(seen) == 2 * forward  # recomputed in backward
    assert gathered and not any(isinstance(w, DTensor) for w in gathered)  # gathered by the layer call's hooks
    assert isinstance(model.vision.layers[0].mlp.fc1.weight, DTensor)  # and sharded again after it
    assert all(p.grad is not None for p in model.vision.layers[0].parameters())


def sharded_tiny(tiny_base, mesh):
    model = load_model(tiny_base / "vision", tiny_base / "llm")
    for parameter in model.vision.unused_parameters():  # as training freezes them
        parameter.requires_grad_(False)
    return shard(model, mesh, None), torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)


def test_sharded_state_round_trip(one_rank_mesh, tiny_base, embedded_manifest, tmp_path):
    model, optimizer = sharded_tiny(tiny_base, one_rank_mesh)
    batch = image_batch(model, embedded_manifest, tmp_path)
    model(batch)[0].backward()
    optimizer.step()
    save_sharded(model, optimizer, tmp_path / "sharded")
    again, again_optimizer = sharded_tiny(tiny_base, one_rank_mesh)
    load_sharded(again, again_optimizer, tmp_path / "sharded")
    assert parameter_digest(again) == parameter_digest(model)
    for optim in (optimizer, again_optimizer):
        optim.zero_grad()
    model(batch)[0].backward()
    again(batch)[0].backward()
    optimizer.step()
    again_optimizer.step()
    assert parameter_digest(again) == parameter_digest(model)  # the Adam moments came back too
