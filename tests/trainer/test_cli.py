import json
import typing

from typer.testing import CliRunner

from omnivmed.trainer.cli import app

runner = CliRunner()


def test_every_option_has_help():
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for option in ("--shards", "--stage", "--model-config", "--out", "--config", "--mix", "--lr", "--stop-after"):
        assert option in result.output
    hints = typing.get_type_hints(app.registered_commands[0].callback, include_extras=True)
    for name, hint in hints.items():
        if name != "return":
            assert hint.__metadata__[0].help, name


def test_missing_shards_and_bad_config_exit_2_naming_the_cause(tmp_path):
    result = runner.invoke(app, ["--out", str(tmp_path)])
    assert result.exit_code == 2 and "no shards given" in result.output
    result = runner.invoke(app, ["--shards", str(tmp_path / "none"), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "none: no such manifest file or folder" in result.output
    bad = tmp_path / "train.yaml"
    bad.write_text("data: {shards: [x], batch_size: 0}\n")
    result = runner.invoke(app, ["--config", str(bad)])
    assert result.exit_code == 2 and "train.yaml" in result.output and "batch_size" in result.output
    result = runner.invoke(app, ["--shards", "x", "--stage", "1", "--lr", "llm=1e-4"])
    assert result.exit_code == 2 and "stage 1 does not train llm" in result.output


def test_a_tiny_run_from_the_command_line_with_a_config_file(embedded_manifest, tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text(
        f"data: {{shards: ['{embedded_manifest}'], batch_size: 2}}\n"
        "run: {tensorboard: true}\n"
        "stage: {steps: 2, warmup_steps: 0, visual_kinds: [volume]}\n"
    )
    result = runner.invoke(
        app, ["--config", str(config), "--out", str(tmp_path / "run"), "--model-config", "tiny", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert "finished at step 2" in result.output
    summary = json.loads((tmp_path / "run" / "stage1" / "summary.json").read_text())
    assert set(summary["kept_ratio"]) == {"volume"} and summary["samples"] == 4
    assert list((tmp_path / "run" / "stage1" / "tensorboard").glob("events.out.tfevents.*"))
