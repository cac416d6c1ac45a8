"""Output folders: one writer at a time, per-run temporaries, and one line for paths of the wrong kind.

Two processes write into one --out: the second stops with one line naming the
first's PID and command (exit 2) and the first run's output is intact. A
folder where a file is expected (and the reverse), a JSON that is not a
manifest, a failed download: one line each, never a traceback.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.raw_trees import make_vqa_rad_subset
from typer.testing import CliRunner

from omnivmed.builders.base import DownloadFile
from omnivmed.cli.data import app
from omnivmed.data.fileio import LOCK_NAME, FolderBusy, atomic_write_bytes, folder_lock, temporary_name
from omnivmed.data.manifest import Manifest
from omnivmed.data.output import OutputBusy, OutputWriter

runner = CliRunner()
CLI = [sys.executable, "-c", "from omnivmed.cli.data import main; main()"]


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result) -> str:
    """The CLI's error: exactly one 'error:' line, and no traceback anywhere."""
    text = result.output if hasattr(result, "output") else result
    assert "Traceback" not in text, text
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, text
    return errors[0]


@pytest.fixture
def built(tmp_path):
    raw = make_vqa_rad_subset(tmp_path / "raw", 20)
    out = tmp_path / "out"
    result = run("build", "vqa_rad", "--raw", raw, "--out", out, "--no-progress")
    assert result.exit_code == 0, result.output
    return raw, out


def test_a_new_writer_removes_what_a_killed_run_was_writing_and_nothing_else(tmp_path):
    out = tmp_path / "out"
    (out / "figures").mkdir(parents=True)
    stale = [temporary_name(out / name) for name in ("README.md", "stats.json", "manifest.json", "rejects.jsonl")]
    stale.append(temporary_name(out / "figures" / "tokens.png"))
    for path in stale:
        path.write_bytes(b"half")
    users = [out / "notes.tmp", out / ".draft.tmp", out / "figures" / ".mine.1-xyz.tmp"]  # not temporary_name's
    for path in users:
        path.write_bytes(b"mine")
    with OutputWriter(out):
        pass
    assert not any(p.exists() for p in stale) and all(p.exists() for p in users)


# -- the lock ---------------------------------------------------------------------------------


def test_temporary_names_are_unique_per_call_and_process(tmp_path):
    final = tmp_path / "train-00000.arrow"
    a, b = temporary_name(final), temporary_name(final)
    assert a != b and a.parent == tmp_path
    assert a.name.startswith(".train-00000.arrow.") and a.name.endswith(".tmp") and str(os.getpid()) in a.name
    atomic_write_bytes(final, b"x")
    assert final.read_bytes() == b"x" and [p.name for p in tmp_path.iterdir()] == ["train-00000.arrow"]


def test_a_second_writer_in_another_process_is_refused_with_pid_and_command(tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, pathlib; from omnivmed.data.fileio import folder_lock\n"
         "with folder_lock(pathlib.Path(sys.argv[1]), 'omnivmed-data build holder'):\n"
         "    print('held', flush=True); sys.stdin.readline()", str(out)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderBusy) as caught:
            OutputWriter(out)
        assert str(caught.value) == f"{out} is being written by PID {holder.pid} (omnivmed-data build holder); wait or choose another --out"
    finally:
        holder.communicate("\n", timeout=30)
    assert not (out / LOCK_NAME).exists()  # released and removed
    with OutputWriter(out) as writer:  # free again
        writer.finish(Manifest(name="after"))


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time, pathlib; from omnivmed.data.fileio import folder_lock\n"
         "with folder_lock(pathlib.Path(sys.argv[1]), 'doomed'):\n    print('held', flush=True); time.sleep(60)", str(out)],
        stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=30)
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == holder.pid  # the stale file is still there
    with folder_lock(out, "me"):
        assert json.loads((out / LOCK_NAME).read_text()) == {"pid": os.getpid(), "command": "me"}
    assert not (out / LOCK_NAME).exists()


def test_the_lock_is_reentrant_within_a_process_and_released_after(tmp_path):
    with folder_lock(tmp_path / "o"):
        with OutputWriter(tmp_path / "o") as writer:
            writer.finish(Manifest(name="inner"))
        assert (tmp_path / "o" / LOCK_NAME).exists()  # the outer hold remains
    assert not (tmp_path / "o" / LOCK_NAME).exists()
    assert OutputBusy is FolderBusy


def _lock_pid(out: Path) -> int | None:
    try:
        return json.loads((out / LOCK_NAME).read_text() or "{}").get("pid")
    except (OSError, ValueError):
        return None


def test_cli_build_into_a_folder_another_build_writes_stops_and_the_first_finishes(tmp_path):
    """A real build paused (SIGSTOP) while it holds --out: a second build gets one line and exit 2."""
    raw = make_vqa_rad_subset(tmp_path / "raw", 120)
    out = tmp_path / "out"
    first = subprocess.Popen([*CLI, "build", "vqa_rad", "--raw", str(raw), "--out", str(out), "--no-progress"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    # Held once the file names the first build's PID: the file itself is created before the flock is taken,
    # so a build paused between the two would not hold the folder yet.
    while _lock_pid(out) != first.pid and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    if first.poll() is not None:
        pytest.skip("the first build finished before it could be paused")
    os.kill(first.pid, signal.SIGSTOP)
    try:
        second = run("build", "vqa_rad", "--raw", raw, "--out", out, "--no-progress")
    finally:
        os.kill(first.pid, signal.SIGCONT)
    stdout, stderr = first.communicate(timeout=120)
    assert second.exit_code == 2
    line = one_line_error(second)
    assert f"is being written by PID {first.pid}" in line and "build vqa_rad" in line and "choose another --out" in line
    assert first.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert run("verify", out).exit_code == 0
    assert Manifest.load(out / "manifest.json").rows > 0
    assert not list(out.rglob("*.tmp")) and not (out / LOCK_NAME).exists()


@pytest.mark.slow
def test_two_builds_started_together_leave_one_complete_output(tmp_path):
    raw = make_vqa_rad_subset(tmp_path / "raw", 60)
    out = tmp_path / "out"
    reference = tmp_path / "ref"
    assert run("build", "vqa_rad", "--raw", raw, "--out", reference, "--no-progress").exit_code == 0
    for attempt in range(3):
        procs = [
            subprocess.Popen([*CLI, "build", "vqa_rad", "--raw", str(raw), "--out", str(out), "--no-progress", "--force"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        results = [(p.wait(timeout=180), p.stderr.read()) for p in procs]
        assert all(code in (0, 2) for code, _ in results), results
        assert any(code == 0 for code, _ in results), results
        for code, err in results:
            assert "Traceback" not in err
            if code == 2:
                assert "is being written by PID" in err
        assert (out / "manifest.json").read_bytes() == (reference / "manifest.json").read_bytes()
        assert run("verify", out / "manifest.json").exit_code == 0
        assert not (out / LOCK_NAME).exists() and not list(out.rglob("*.tmp"))


# -- paths of the wrong kind ------------------------------------------------------------------


def test_out_that_is_a_file_is_one_line(tmp_path, built):
    raw, _ = built
    file = tmp_path / "a-file"
    file.write_text("keep me")
    for args in (["build", "vqa_rad", "--raw", raw, "--out", file], ["build", "vqa_rad", "--raw", raw, "--out", file / "sub"]):
        result = run(*args, "--no-progress")
        assert result.exit_code == 2
        assert "is a file, not a folder" in one_line_error(result) and str(file) in result.output
    assert file.read_text() == "keep me"


def test_raw_that_is_a_file_is_one_line(tmp_path):
    file = tmp_path / "raw.json"
    file.write_text("[]")
    result = run("build", "vqa_rad", "--raw", file, "--out", tmp_path / "out", "--no-progress")
    assert result.exit_code == 2 and "is a file, not a folder" in one_line_error(result)


@pytest.mark.parametrize("command", ["verify", "stats", "preview", "export"])
def test_manifest_commands_take_the_folder_holding_the_manifest(tmp_path, built, command):
    _, out = built
    extra = {"export": ["--format", "llava", "--out", tmp_path / "exported"], "preview": ["--out", tmp_path / "p.html"]}
    result = run(command, out, *extra.get(command, []))
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", ["verify", "stats", "preview", "export"])
def test_a_json_that_is_not_a_manifest_is_one_line(tmp_path, built, command):
    _, out = built
    exported = tmp_path / "exported"
    assert run("export", out / "manifest.json", "--format", "llava", "--out", exported).exit_code == 0
    train = next(exported.glob("*.json"))
    extra = {"export": ["--format", "llava", "--out", tmp_path / "again"]}
    result = run(command, train, *extra.get(command, []))
    assert result.exit_code == 2
    line = one_line_error(result)
    assert str(train) in line and "not a manifest" in line


@pytest.mark.parametrize("command", ["verify", "stats", "preview"])
def test_a_folder_without_a_manifest_and_a_missing_path_are_one_line(tmp_path, command):
    (tmp_path / "empty").mkdir()
    for target, words in ((tmp_path / "empty", "without manifest.json"), (tmp_path / "nowhere", "no such manifest")):
        result = run(command, target)
        assert result.exit_code == 2 and words in one_line_error(result)


def test_export_out_that_is_a_file_is_one_line(tmp_path, built):
    _, out = built
    file = tmp_path / "f"
    file.write_text("")
    result = run("export", out, "--format", "llava", "--out", file)
    assert result.exit_code == 2 and "is a file, not a folder" in one_line_error(result)


def test_mix_out_that_is_a_file_is_one_line(tmp_path):
    from support.staged_sources import write_staged

    write_staged(tmp_path / "staged", "alpha", {("train", "vqa", "ct"): 5})
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: m\nseed: 0\nsources:\n  alpha: {take: all}\n")
    file = tmp_path / "f"
    file.write_text("")
    result = run("mix", recipe, "--staged", tmp_path / "staged", "--out", file, "--manifests", tmp_path / "m", "--no-progress")
    assert result.exit_code == 2 and "is a file, not a folder" in one_line_error(result)


# -- a failed download ------------------------------------------------------------------------


def test_a_failed_download_leaves_no_empty_folder_and_suggests_from(tmp_path, monkeypatch):
    from omnivmed import download as dl
    from omnivmed.builders.vqa_rad import VqaRadBuilder

    monkeypatch.setattr(dl, "BACKOFF_BASE", 0.0)
    builder = VqaRadBuilder()
    info = builder.info.__class__(**{**builder.info.__dict__, "downloads": (DownloadFile("http://127.0.0.1:9/x.json", "x.json"),), "hf_repo": None})
    monkeypatch.setattr(builder, "info", info)
    to = tmp_path / "raw" / "vqa_rad"
    with pytest.raises(dl.DownloadError) as caught:
        dl.download_source(builder, to, progress=False)
    assert "--from" in str(caught.value) and "127.0.0.1:9" in str(caught.value)
    assert not to.exists()
    # Nothing left in the way: adopting a local copy then works.
    from support.raw_trees import VQA_RAD

    assert dl.adopt_local(builder, VQA_RAD, to) == to


# -- what people see: figures and counts ------------------------------------------------------


def test_token_histogram_bins_are_whole_integers():
    from collections import Counter

    from omnivmed.data.card_stats import CardStats
    from omnivmed.data.figures import integer_bins, token_lengths

    edges = integer_bins(list(range(7, 53)))  # 46 integers: no 30-bin zig-zag
    widths = {round(b - a, 6) for a, b in zip(edges, edges[1:])}
    assert widths == {2.0} and edges[0] == 6.5 and edges[-1] >= 52.5
    assert integer_bins([5]) == [4.5, 5.5]
    stats = CardStats(name="t", rows=46, counts={}, tokens=Counter({n: 1 for n in range(7, 53)}))
    bars = token_lengths(stats).axes[0].patches
    assert [round(b.get_height()) for b in bars] == [2] * 23  # every bar holds exactly two integers


def test_frames_per_sample_goes_log_when_counts_differ_by_orders_of_magnitude():
    from collections import Counter

    from omnivmed.data.card_stats import CardStats
    from omnivmed.data.figures import frames_per_sample

    skewed = CardStats(name="t", rows=2340, counts={}, frames={"image": Counter({1: 2320}), "volume": Counter({32: 10}), "video": Counter({8: 10})})
    ax = frames_per_sample(skewed).axes[0]
    assert ax.get_yscale() == "log" and "log" in ax.get_ylabel()
    even = CardStats(name="t", rows=30, counts={}, frames={"image": Counter({1: 20}), "video": Counter({8: 10})})
    assert frames_per_sample(even).axes[0].get_yscale() == "linear"


def test_one_shard_is_singular_in_verify_and_card(tmp_path):
    from support.staged_sources import write_staged

    from omnivmed.data.datacard import render_datacard

    manifest_path = write_staged(tmp_path / "staged", "alpha", {("train", "vqa", "ct"): 3})
    manifest = Manifest.load(manifest_path)
    assert len(manifest.shards) == 1
    verify = run("verify", manifest_path.parent)
    assert verify.exit_code == 0 and "1 shard," in verify.output and "1 shards" not in verify.output
    card = render_datacard(manifest)
    assert "3 samples in 1 Arrow IPC stream shard " in card and "1 Arrow IPC stream shards" not in card
