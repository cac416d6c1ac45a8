import subprocess
import sys
from collections import Counter
from dataclasses import fields

import pytest

from omnivmed.trainer.config import (
    STAGE_FIELDS,
    ConfigError,
    DataConfig,
    ModelConfig,
    RunConfig,
    build_config,
    command_line_options,
    file_only_fields,
)
from omnivmed.trainer.presets import get_preset
from omnivmed.trainer.stages import Stage, default_stage


def test_presets_and_stage_definitions():
    assert get_preset("1.5b").llm_hidden == 1536 and get_preset("7b").llm_hidden == 3584
    assert get_preset("7b").rope_split == (12, 12, 12) and get_preset("7b").needs_paths
    assert "llm" not in default_stage(1).lr  # stage 1 freezes the LLM
    assert set(default_stage(3).trained) == {"vision", "projector", "llm"}
    with pytest.raises(ValueError, match="tiny, 1.5b, 7b"):
        get_preset("13b")


def test_file_then_options(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: {shards: [a], batch_size: 8}\nstage: {steps: 7, lr: {projector: 0.5}}\nrun: {stage: 1}\n")
    config = build_config(path, {"data": {"batch_size": 2, "mix": {"vqa_rad": 2}}})
    assert config.data.batch_size == 2 and config.data.mix == {"vqa_rad": 2.0}
    assert config.stage.steps == 7 and config.stage.trained == ("projector",)
    assert config.resolved_data().max_pixels == 64 * 64  # the tiny preset's


@pytest.mark.parametrize(
    "text, message",
    [
        ("model: {preset: huge}\ndata: {shards: [a]}\n", "huge"),
        ("data: {shards: [a], colour: red}\n", "unknown data keys"),
        ("trainer: {}\n", "unknown sections"),
        ("data: {shards: [a]}\nstage: {lr: {eyes: 1.0}}\n", "unknown parts"),
        ("data: {shards: [a]}\nrun: {precision: fp8}\n", "fp8"),
        ("data: [\n", "not valid YAML"),
    ],
)
def test_bad_configs_name_the_file_and_reason(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises((ConfigError, ValueError), match=message) as raised:
        build_config(path)
    assert "bad.yaml" in str(raised.value)


def test_every_field_has_exactly_one_option_or_a_reason_to_have_none():
    sections = {"model": ModelConfig, "data": DataConfig, "run": RunConfig, "stage": Stage}
    real = {f"{s}.{f.name}" for s, cls in sections.items() for f in fields(cls)}
    assert set(STAGE_FIELDS) == {f.name for f in fields(Stage)}  # a new Stage field must be listed
    options = command_line_options()
    keys = Counter(o.key for o in options)
    file_only = file_only_fields()
    assert set(keys) <= real, "an option names no config field"
    for key in sorted(real):
        assert keys[key] + (key in file_only) == 1, f"{key}: {keys[key]} options, file-only: {key in file_only}"
    assert all(why.strip() for why in file_only.values())
    flags = [flag for o in options for flag in (o.flag, o.negative) if flag]
    assert len(flags) == len(set(flags)) and "--config" not in flags
    assert all(o.doc and o.default for o in options)
    assert all(o.negative for o in options if o.type is bool)


def test_todays_option_names_map_to_their_fields():
    flags = {o.flag: o.key for o in command_line_options()}
    assert flags["--model-config"] == "model.preset"
    assert flags["--data-seed"] == "data.seed" and flags["--seed"] == "run.seed"
    assert flags["--max-length"] == "data.max_length" and flags["--stage"] == "run.stage"
    assert flags["--lr"] == "stage.lr" and flags["--steps"] == "stage.steps"
    negatives = {o.negative: o.key for o in command_line_options() if o.negative}
    assert negatives["--no-abs-pos"] == "model.keep_abs_pos" and negatives["--no-prune"] == "data.prune"


def test_config_module_imports_nothing_heavy():
    code = (
        "import sys, omnivmed.trainer.config as c; c.command_line_options(); "
        "print(sorted({'torch', 'transformers', 'numpy', 'pyarrow', 'typer'} & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
