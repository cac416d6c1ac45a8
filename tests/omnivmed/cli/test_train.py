"""The omnivmed-train command line: options generated from the config fields, driven in-process and as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from omnivmed.cli.train import main, parse_args
from omnivmed.trainer.config import build_config, command_line_options
from omnivmed.trainer.stages import default_stage

# One non-default value per option: (argv, the same value in a config file). A new field needs a row here.
SAMPLES = {
    "model.preset": (["--model-config", "1.5b"], "1.5b"),
    "model.vision_path": (["--vision-path", "/models/siglip"], "/models/siglip"),
    "model.llm_path": (["--llm-path", "/models/qwen"], "/models/qwen"),
    "model.init": (["--init", "runs/x/stage1/model"], "runs/x/stage1/model"),
    "model.rope_split": (["--rope-split", "8,14,14"], [8, 14, 14]),
    "model.rope_theta": (["--rope-theta", "50000"], 50000.0),
    "model.keep_abs_pos": (["--keep-abs-pos"], True),
    "model.attention": (["--attention", "sdpa"], "sdpa"),
    "model.gradient_checkpointing": (["--gradient-checkpointing"], True),
    "data.shards": (["--shards", "a.manifest.json", "--shards", "more/"], ["a.manifest.json", "more/"]),
    "data.split": (["--split", "validation"], "validation"),
    "data.mix": (["--mix", "vqa_rad=2", "--mix", "slake=0.5"], {"vqa_rad": 2, "slake": 0.5}),
    "data.seed": (["--data-seed", "7"], 7),
    "data.batch_size": (["--batch-size", "2"], 2),
    "data.num_workers": (["--num-workers", "3"], 3),
    "data.max_length": (["--max-length", "512"], 512),
    "data.pack": (["--no-pack"], False),
    "data.token_budget": (["--token-budget", "20000"], 20000),
    "data.max_visual_tokens": (["--max-visual-tokens", "300"], 300),
    "data.max_frames": (["--max-frames", "4"], 4),
    "data.max_pixels": (["--max-pixels", "1024"], 1024),
    "data.max_sample_pixels": (["--max-sample-pixels", "4096"], 4096),
    "data.prune": (["--no-prune"], False),
    "data.prune_threshold": (["--prune-threshold", "0.25"], 0.25),
    "data.prune_normalisation": (["--prune-normalisation", "encoder"], "encoder"),
    "data.verify": (["--no-verify"], False),
    "run.out": (["--out", "runs/elsewhere"], "runs/elsewhere"),
    "run.stage": (["--stage", "2"], 2),
    "run.grad_accum": (["--grad-accum", "4"], 4),
    "run.grad_clip": (["--grad-clip", "0.5"], 0.5),
    "run.save_every": (["--save-every", "10"], 10),
    "run.keep_checkpoints": (["--keep-checkpoints", "3"], 3),
    "run.stop_after": (["--stop-after", "5"], 5),
    "run.precision": (["--precision", "bf16"], "bf16"),
    "run.parallel": (["--parallel", "ddp"], "ddp"),
    "run.seed": (["--seed", "11"], 11),
    "run.tensorboard": (["--no-tensorboard"], False),
    "run.progress": (["--no-progress"], False),
    "run.record_samples": (["--record-samples"], True),
    "run.dry_run": (["--dry-run"], True),
    "run.gpus": (["--gpus", "4"], 4),
    "run.gpu_memory": (["--gpu-memory", "24"], 24.0),
    "stage.lr": (["--lr", "llm=1e-4"], {**default_stage(2).lr, "llm": 1e-4}),  # --lr updates; a file's lr replaces
    "stage.steps": (["--steps", "12"], 12),
    "stage.warmup_steps": (["--warmup-steps", "0"], 0),
}


def run_main(capsys, *argv) -> tuple[int, str, str]:
    code = 0
    try:
        main([str(a) for a in argv])
    except SystemExit as exit:
        code = exit.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def embedded_manifest(tmp_path_factory) -> Path:
    """``build_embedded``: real VQA-RAD, SLAKE, CT/MR volumes and generated surgical clips (about 4 s)."""
    from omnivmed.embedded import build_embedded

    out = tmp_path_factory.mktemp("embedded")
    build_embedded(out, progress=False)
    return out / "manifest.json"


def test_help_shows_every_option_with_its_default(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    code, out, _ = run_main(capsys, "--help")
    assert code == 0
    text = " ".join(out.split())
    for option in command_line_options():
        assert option.flag in text and (option.negative or "") in text
        assert f"(default: {' '.join(option.default.split())})" in text, option.key
    assert "stage 1: vision=2e-05,projector=0.001" in text  # the --lr default differs per stage
    assert "stage.visual_kinds" in text  # config-file-only fields are named with their reason


def test_help_starts_without_heavy_imports():
    code = (
        "import sys\nfrom omnivmed.cli import train\ntry:\n    train.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted({'torch', 'transformers', 'numpy', 'pyarrow', 'typer'} & set(sys.modules)), file=sys.stderr)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "--max-length" in done.stdout
    assert done.stderr.strip() == "[]"


def test_options_and_an_equal_config_file_build_equal_configs(tmp_path):
    assert set(SAMPLES) == {o.key for o in command_line_options()}
    argv, sections = [], {}
    for key, (args, value) in SAMPLES.items():
        argv += args
        section, name = key.split(".")
        sections.setdefault(section, {})[name] = value
    path = tmp_path / "train.json"
    path.write_text(json.dumps(sections))
    from_options = build_config(*parse_args(argv))
    from_file = build_config(path)
    assert from_options == from_file
    # every option changed its field from the default
    default = build_config(overrides={"data": {"shards": ["x"]}}).to_dict()
    changed = from_options.to_dict()
    for key in SAMPLES:
        section, name = key.split(".")
        assert changed[section][name] != default[section][name], key


def test_options_override_the_file(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("data: {shards: [a], batch_size: 8, mix: {slake: 1}}\nstage: {steps: 7}\n")
    config = build_config(*parse_args(["--config", str(path), "--batch-size", "2", "--lr", "projector=0.5"]))
    assert config.data.batch_size == 2 and config.data.mix == {"slake": 1.0} and config.stage.steps == 7
    assert config.stage.lr == {**default_stage(1).lr, "projector": 0.5}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--shards", "x", "--colour", "red"], "unrecognized arguments: --colour red"),
        (["--shards", "x", "--max"], "unrecognized arguments: --max"),  # no abbreviations
        (["--shards", "x", "--mix", "vqa_rad"], "--mix: 'vqa_rad' is not KEY=VALUE"),
        (["--shards", "x", "--mix", "vqa_rad=lots"], "--mix: 'vqa_rad=lots': 'lots' is not a number"),
        (["--shards", "x", "--lr", "=1e-4"], "--lr: '=1e-4' is not KEY=VALUE"),
        (["--shards", "x", "--steps", "ten"], "--steps: 'ten' is not an integer"),
        (["--shards", "x", "--prune-threshold", "high"], "--prune-threshold: 'high' is not a number"),
        (["--shards", "x", "--rope-split", "12,12"], "--rope-split: '12,12' is not 3 comma-separated values"),
        (["--shards", "x", "--rope-split", "a,12,12"], "--rope-split: 'a,12,12': 'a' is not an integer"),
        (["--shards", "x", "--steps"], "--steps: expected one argument"),
        (["--shards", "x", "--prune=yes"], "--prune"),
        ([], "options: no shards given (--shards or data.shards)"),
        (["--shards", "x", "--precision", "fp8"], "run.precision 'fp8' is not auto, fp32 or bf16"),
        (["--shards", "x", "--model-config", "13b"], "model config '13b' is not one of tiny, 1.5b, 7b"),
        (["--shards", "x", "--batch-size", "0"], "data.batch_size must be >= 1"),
        (["--shards", "x", "--stage", "1", "--lr", "llm=1e-4"], "stage 1 does not train llm"),
        (["--shards", "x", "--stage", "4"], "no default stage 4"),
        (["--config", "nowhere.yaml"], "nowhere.yaml: cannot read"),
    ],
)
def test_a_bad_option_is_one_line_and_exit_2(capsys, argv, message):
    code, out, err = run_main(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith("omnivmed-train: ") and err.count("\n") == 1, err
    assert message in err


def test_bad_config_files_and_shards_name_the_cause(capsys, tmp_path):
    bad = tmp_path / "train.yaml"
    bad.write_text("data: {shards: [x], batch_size: 0}\n")
    code, _, err = run_main(capsys, "--config", bad)
    assert code == 2 and "train.yaml" in err and "batch_size" in err and err.count("\n") == 1
    code, _, err = run_main(capsys, "--shards", tmp_path / "none", "--out", tmp_path, "--no-progress")
    assert code == 2 and err == f"omnivmed-train: {tmp_path / 'none'}: no such manifest file or folder\n"


def test_an_unknown_mix_source_names_the_known_ones(capsys, embedded_manifest, tmp_path):
    code, _, err = run_main(capsys, "--shards", embedded_manifest, "--out", tmp_path, "--mix", "vqarad=1")
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("omnivmed-train: --mix names sources the manifests do not hold: vqarad; known sources: ")
    assert "vqa_rad" in err and "slake" in err
    assert not (tmp_path / "stage1").exists()  # refused before training started


def test_a_missing_model_folder_is_one_line(capsys, embedded_manifest, tmp_path):
    argv = ["--shards", embedded_manifest, "--out", tmp_path, "--model-config", "1.5b", "--no-progress"]
    code, _, err = run_main(capsys, *argv, "--vision-path", tmp_path / "siglip", "--llm-path", tmp_path / "qwen")
    assert code == 2 and err.count("\n") == 1
    assert err == f"omnivmed-train: {tmp_path / 'siglip'}: no config.json: not a local vision checkpoint folder\n"


def test_python_dash_m_runs_the_command_and_fails_without_a_traceback(tmp_path):
    env = {**os.environ, "COLUMNS": "100"}
    command = [sys.executable, "-m", "omnivmed.cli.train", "--shards", "x", "--steps", "many"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == "omnivmed-train: --steps: 'many' is not an integer\n"


def test_a_tiny_run_from_the_command_line_with_a_config_file(capsys, embedded_manifest, tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text(
        f"data: {{shards: ['{embedded_manifest}'], batch_size: 2}}\n"
        "run: {tensorboard: true, stage: 1}\n"
        "stage: {steps: 2, warmup_steps: 0, visual_kinds: [volume]}\n"
    )
    argv = ["--config", config, "--out", tmp_path / "run", "--model-config", "tiny", "--no-progress"]
    code, out, err = run_main(capsys, *argv)
    assert code == 0, err
    assert "finished at step 2" in out
    summary = json.loads((tmp_path / "run" / "stage1" / "summary.json").read_text())
    assert set(summary["kept_ratio"]) == {"volume"} and summary["samples"] == 4
    assert list((tmp_path / "run" / "stage1" / "tensorboard").glob("events.out.tfevents.*"))


def test_dry_run_prints_the_memory_plan_without_shards_or_weights(capsys):
    code, out, err = run_main(capsys, "--dry-run", "--model-config", "1.5b", "--gpus", "8", "--gpu-memory", "24", "--batch-size", "1")
    assert code == 0, err
    rows = [line.split() for line in out.splitlines() if line[:1] in "123"]
    assert len(rows) == 6 and {r[-1] for r in rows if r[2] == "on"} == {"yes"} and {r[-1] for r in rows if r[2] == "off"} == {"NO"}
    code, _, err = run_main(capsys, "--dry-run")
    assert code == 2 and err == "omnivmed-train: --dry-run: no shapes for preset 'tiny': the plan covers 1.5b, 7b\n"


@pytest.mark.slow
def test_the_progressive_schedule_runs_every_stage_once(capsys, tmp_path):
    from omnivmed.embedded import build_embedded

    manifests = tmp_path / "manifests"
    build_embedded(tmp_path / "out" / "omnivmed-embedded", manifests_dir=manifests, progress=False)
    argv = ["--shards", manifests, "--out", tmp_path / "run", "--steps", "2", "--batch-size", "2", "--no-progress"]
    code, out, err = run_main(capsys, *argv)
    assert code == 0, err
    assert [line.split(":")[0] for line in out.splitlines()] == ["stage 1", "stage 2", "stage 3"]
    for stage in (1, 2, 3):
        summary = json.loads((tmp_path / "run" / f"stage{stage}" / "summary.json").read_text())
        assert summary["steps"] == 2
    assert json.loads((tmp_path / "run" / "stage1" / "config.json").read_text())["stage"]["tasks"] == ["image_caption"]
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*") if p.is_file()}
    code, out, err = run_main(capsys, *argv, "--progress")  # a runtime-only setting does not make a stage stale
    assert code == 0 and out.count("done already") == 3
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*") if p.is_file()} == stamps
    code, _, err = run_main(capsys, "--shards", manifests, "--out", tmp_path / "other", "--stage", "3", "--no-progress")
    assert code == 2 and "stage 3 starts from stage 2's output, which is missing" in err and err.count("\n") == 1
