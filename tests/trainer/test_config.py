import pytest

from omnivmed.trainer.config import ConfigError, build_config
from omnivmed.trainer.presets import get_preset
from omnivmed.trainer.stages import default_stage


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
