"""End to end on CPU: the tiny model through stages 1, 2 and 3 on the embedded shards, and resume."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from omnivmed.trainer.config import build_config
from omnivmed.trainer.train import run_stage

STEPS = 8
LR = {1: {"projector": 1e-2, "vision": 1e-3}, 2: {"projector": 1e-2, "vision": 1e-3, "llm": 1e-2}}
LR[3] = LR[2]
# Stage 3 mixes the sources evenly, so the 10 volumes and 10 clips show up beside 2,300 images.
MIX = {"vqa_rad": 1.0, "slake": 1.0, "volumes": 1.0, "cholec80_vqa": 1.0}


def stage_config(manifest: Path, out: Path, stage: int, **run):
    init = run.pop("init", None)
    return build_config(
        overrides={
            "model": {"preset": "tiny", "init": init},
            "data": {"shards": [str(manifest)], "batch_size": 4, "mix": MIX if stage == 3 else None},
            "run": {"out": str(out), "stage": stage, "save_every": 4, "progress": False, **run},
            "stage": {"steps": STEPS, "warmup_steps": 0},
        },
        lr_update=LR[stage],
    )


def losses(stage_dir: Path) -> dict[int, float]:
    lines = (stage_dir / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["loss"] for r in map(json.loads, lines)}


@pytest.fixture(scope="module")
def three_stages(embedded_manifest, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    for stage in (1, 2, 3):
        run_stage(stage_config(embedded_manifest, out, stage))
    return out


def test_each_stage_lowers_the_loss(three_stages):
    for stage in (1, 2, 3):
        curve = [v for _, v in sorted(losses(three_stages / f"stage{stage}").items())]
        assert len(curve) == STEPS
        assert statistics.mean(curve[-3:]) < statistics.mean(curve[:3]), (stage, curve)


def test_stage_n_starts_from_stage_n_minus_1_and_stage_1_freezes_the_llm(three_stages):
    base = load_file(str(three_stages / "base-tiny" / "llm" / "model.safetensors"))
    after1 = load_file(str(three_stages / "stage1" / "model" / "llm" / "model.safetensors"))
    after2 = load_file(str(three_stages / "stage2" / "model" / "llm" / "model.safetensors"))
    assert all(torch.equal(base[k], after1[k]) for k in base)
    assert any(not torch.equal(after1[k], after2[k]) for k in after1)
    vision0 = load_file(str(three_stages / "base-tiny" / "vision" / "model.safetensors"))
    vision1 = load_file(str(three_stages / "stage1" / "model" / "vision" / "model.safetensors"))
    assert any(not torch.equal(vision0[k], vision1[k]) for k in vision0 if "position_embedding" not in k)
    config = json.loads((three_stages / "stage2" / "config.json").read_text())
    assert config["stage"]["number"] == 2


def test_stage_3_sees_volumes_and_video_and_prunes_them(three_stages):
    summary = json.loads((three_stages / "stage3" / "summary.json").read_text())
    assert summary["samples"] == STEPS * 4
    assert {"image", "volume", "video"} <= set(summary["kept_ratio"])
    assert summary["kept_ratio"]["image"] == 1.0  # 2D images are never pruned
    assert summary["kept_ratio"]["video"] < 1.0  # the generated clips have a static background


def test_final_output_loads_with_transformers(three_stages):
    from transformers import AutoModelForCausalLM, AutoTokenizer, SiglipVisionModel

    model_dir = three_stages / "stage3" / "model"
    assert SiglipVisionModel.from_pretrained(model_dir / "vision").config.hidden_size == 32
    assert AutoModelForCausalLM.from_pretrained(model_dir / "llm").config.hidden_size == 64
    assert AutoTokenizer.from_pretrained(model_dir / "llm").chat_template
    assert set(load_file(str(model_dir / "projector" / "model.safetensors"))) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
    assert json.loads((model_dir / "config.json").read_text())["model_type"] == "omnivmed"


def test_resume_from_a_mid_stage_checkpoint_gives_identical_losses(three_stages, embedded_manifest, tmp_path):
    init = str(three_stages / "stage2" / "model")
    first = run_stage(stage_config(embedded_manifest, tmp_path, 3, init=init, stop_after=STEPS // 2))
    assert not first.finished and first.step == STEPS // 2
    assert (tmp_path / "stage3" / "checkpoints" / "latest").read_text() == f"step-{STEPS // 2:08d}"
    second = run_stage(stage_config(embedded_manifest, tmp_path, 3, init=init))
    assert second.finished and len(second.losses) == STEPS // 2
    assert losses(tmp_path / "stage3") == losses(three_stages / "stage3")
    summaries = [json.loads((d / "stage3" / "summary.json").read_text()) for d in (tmp_path, three_stages)]
    assert summaries[0] == summaries[1]  # counters travel in the checkpoint
    uninterrupted = load_file(str(three_stages / "stage3" / "model" / "projector" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "stage3" / "model" / "projector" / "model.safetensors"))
    assert all(torch.equal(uninterrupted[k], resumed[k]) for k in uninterrupted)


def test_gradient_accumulation_equals_the_larger_batch(embedded_manifest, tmp_path):
    """The loss of a step is the mean over all its supervised tokens, however they are split into micro-batches."""

    def run(out: Path, batch_size: int, grad_accum: int) -> list[float]:
        cfg = build_config(
            overrides={
                "data": {"shards": [str(embedded_manifest)], "batch_size": batch_size},
                "run": {"out": str(out), "stage": 1, "grad_accum": grad_accum, "progress": False, "tensorboard": False},
                "stage": {"steps": 2, "warmup_steps": 0, "visual_kinds": ["image"], "tasks": ["vqa"]},
            },
            lr_update=LR[1],
        )
        return run_stage(cfg).losses

    assert run(tmp_path / "a", 2, 2) == pytest.approx(run(tmp_path / "b", 4, 1), rel=1e-5)
