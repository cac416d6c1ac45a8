from typer.testing import CliRunner

from omnivmed.trainer.cli import app


def test_train_says_plainly_that_training_arrives_later():
    result = CliRunner().invoke(app, ["--shards", "manifests/"])
    assert result.exit_code == 2
    assert "not implemented" in result.output


def test_train_has_help():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0 and "--shards" in result.output
