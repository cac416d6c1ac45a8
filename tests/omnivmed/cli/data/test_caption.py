"""The caption commands through Typer's runner."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from omnivmed.cli.data import app
from omnivmed.rejection_sampling.server import LocalServer
from support.caption_fixtures import Script, make_windows

runner = CliRunner()


@pytest.fixture(scope="module")
def windows(tmp_path_factory):
    return make_windows(tmp_path_factory.mktemp("cli-windows"), step=8)  # 4 clips


def write_config(path, base_url):
    def ep(name):
        return {"name": name, "base_url": base_url, "model": f"model-{name}", "api_key_env": None, "backoff_s": 0.01}

    path.write_text(
        "generator: " + json.dumps(ep("gen")) + "\njudges:\n"
        f"  - {json.dumps({**ep('vision'), 'kind': 'multimodal'})}\n"
        f"  - {json.dumps({**ep('text'), 'kind': 'text'})}\n"
        "candidates: 2\nextra_rounds: 1\n"
    )
    return path


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("command", ["caption", "caption-demo"])
def test_help(command):
    result = run(command, "--help")
    assert result.exit_code == 0
    assert "--limit" in result.output


def test_dry_run_sends_nothing_and_prints_the_plan(windows, tmp_path):
    with LocalServer(Script()) as server:
        config = write_config(tmp_path / "c.yaml", server.base_url)
        result = run("caption", "--windows", windows.parent, "--out", tmp_path / "out", "--config", config, "--dry-run")
        assert server.log == []
    assert result.exit_code == 0, result.output
    assert "plan: 4 clips" in result.output and "requests to send next: 8" in result.output
    assert "caption: 8" in result.output
    assert "at most 48 requests" in result.output  # 4 clips x 2 rounds x 2 candidates x (1 + 2 judges)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_caption_then_rerun(windows, tmp_path):
    with LocalServer(Script()) as server:
        config = write_config(tmp_path / "c.yaml", server.base_url)
        first = run("caption", "--windows", windows, "--out", tmp_path / "out", "--config", config, "--limit", "3", "--no-progress")
        assert first.exit_code == 0, first.output
        assert "3 clips:" in first.output and "requests sent" in first.output and "judge:vision: paid" in first.output
        sent = len(server.log)
        plan = run("caption", "--windows", windows, "--out", tmp_path / "out", "--config", config, "--limit", "3", "--dry-run")
        assert "requests to send next: 0" in plan.output and "at most 0 requests" in plan.output
        again = run("caption", "--windows", windows, "--out", tmp_path / "out", "--config", config, "--limit", "3", "--no-progress")
        assert "this run: 0 requests sent" in again.output and len(server.log) == sent
        verify = run("verify", tmp_path / "out" / "manifest.json")
        assert verify.exit_code == 0, verify.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--config", "{tmp}/absent.yaml"], "cannot read"),
        (["--config", "{tmp}/bad.yaml"], "unknown keys in generator: colour"),
        (["--dry-run", "--batch-write", "{tmp}/b"], "exclude each other"),
    ],
)
def test_bad_options_exit_2(windows, tmp_path, args, message):
    (tmp_path / "bad.yaml").write_text("generator: {name: g, base_url: u, model: m, colour: red}\n")
    result = run("caption", "--windows", windows, "--out", tmp_path / "out", *[a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == 2 and message in result.output


def test_missing_or_broken_windows_file(tmp_path):
    result = run("caption", "--windows", tmp_path / "nothing.arrow", "--out", tmp_path / "out", "--dry-run")
    assert result.exit_code == 2 and "no such windows file" in result.output
    (tmp_path / "broken.arrow").write_bytes(b"not arrow at all")
    result = run("caption", "--windows", tmp_path / "broken.arrow", "--out", tmp_path / "out", "--dry-run")
    assert result.exit_code == 2 and "broken.arrow: not an Arrow IPC stream" in result.output
