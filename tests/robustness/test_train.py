"""`omnivmed-train` given bad input: one line on stderr naming the cause, exit 2, never a traceback.

Driven as a user would, through the console entry point in a subprocess, on a
real embedded mix whose files are then damaged one way at a time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from omnivmed.embedded import build_embedded

pytestmark = pytest.mark.slow  # subprocesses a user would run: tens of seconds together

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def manifests(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train-robustness")
    build_embedded(root / "out" / "omnivmed-embedded", manifests_dir=root / "manifests", progress=False)
    return root / "manifests"


def train(*args, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "omnivmed.cli.train", *map(str, args), "--no-progress"]
    return subprocess.run(command, capture_output=True, text=True, env=ENV, cwd=cwd, timeout=300)


def one_line(done: subprocess.CompletedProcess, *words: str) -> None:
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("omnivmed-train: ")
    for word in words:
        assert word in done.stderr, done.stderr


def damaged_copy(manifests: Path, tmp_path: Path) -> Path:
    """A copy of the published manifests and the mixes they point at, laid out the same way."""
    shutil.copytree(manifests.parent, tmp_path / "copy")
    return tmp_path / "copy" / "manifests"


def test_an_unknown_mix_source(manifests, tmp_path):
    one_line(train("--shards", manifests, "--stage", "3", "--init", tmp_path, "--mix", "vqarad=1", cwd=tmp_path), "vqarad", "vqa_rad")


def test_a_missing_previous_stage(manifests, tmp_path):
    one_line(train("--shards", manifests, "--stage", "2", "--out", tmp_path / "run", cwd=tmp_path), "stage 1's output", "missing")


def test_shards_that_do_not_exist(tmp_path):
    one_line(train("--shards", tmp_path / "nowhere", cwd=tmp_path), "nowhere", "no such manifest file or folder")


def test_a_folder_without_manifests(tmp_path):
    (tmp_path / "empty").mkdir()
    one_line(train("--shards", tmp_path / "empty", cwd=tmp_path), "holds no *.manifest.json")


def test_a_manifest_that_is_not_json(tmp_path):
    bad = tmp_path / "broken.manifest.json"
    bad.write_text("{ not json")
    one_line(train("--shards", bad, cwd=tmp_path), "broken.manifest.json")


def test_a_shard_whose_bytes_changed(manifests, tmp_path):
    copy = damaged_copy(manifests, tmp_path)
    manifest = json.loads((copy / "omnivmed-embedded-stage1.manifest.json").read_text())
    shard = (copy / manifest["shards"][0]["path"]).resolve()
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    one_line(train("--shards", copy, "--out", tmp_path / "run", cwd=tmp_path), shard.name)


def test_a_shard_that_is_gone(manifests, tmp_path):
    copy = damaged_copy(manifests, tmp_path)
    manifest = json.loads((copy / "omnivmed-embedded-stage1.manifest.json").read_text())
    (copy / manifest["shards"][0]["path"]).unlink()
    one_line(train("--shards", copy, "--out", tmp_path / "run", cwd=tmp_path), "missing")


@pytest.mark.parametrize(
    "args, words",
    [
        (["--steps", "0"], ["steps"]),
        (["--batch-size", "x"], ["--batch-size", "'x'"]),
        (["--precision", "fp8"], ["precision", "fp8"]),
        (["--model-config", "13b"], ["13b"]),
        (["--prune-normalisation", "minmax"], ["prune_normalisation", "minmax"]),
        (["--lr", "llm=1e-5", "--stage", "1"], ["does not train llm"]),
        (["--no-such-option"], ["--no-such-option"]),
    ],
)
def test_bad_options(manifests, tmp_path, args, words):
    one_line(train("--shards", manifests, "--out", tmp_path / "run", *args, cwd=tmp_path), *words)
