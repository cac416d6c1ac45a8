"""kill -9 at seeded random points of build, mix and windows: a re-run gives byte-identical final outputs.

Each case runs the command once to completion and keeps the bytes of every
file it wrote, then, in the same place, starts it again from nothing, kills
it (SIGKILL) after a seeded random delay within the measured run time, runs
it once more, and compares every file, byte for byte. Nothing of the killed
run (temporaries, the lock) may remain.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.raw_trees import make_vqa_rad_subset
from support.staged_sources import write_staged

CLI = [sys.executable, "-c", "from omnivmed.cli.data import main; main()"]

pytestmark = pytest.mark.slow


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def run_to_end(args: list[str]) -> float:
    start = time.monotonic()
    done = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return time.monotonic() - start


def kill_at(args: list[str], delay: float) -> None:
    proc = subprocess.Popen([*CLI, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)


def kill_then_rerun_matches(args: list[str], outputs: list[Path], seeds: range) -> None:
    elapsed = run_to_end(args)
    reference = {str(o): tree(o) for o in outputs}
    assert all(reference.values())
    for seed in seeds:
        for o in outputs:
            shutil.rmtree(o, ignore_errors=True)
        delay = random.Random(seed).uniform(0.2 * elapsed, 1.0 * elapsed)
        kill_at(args, delay)
        run_to_end(args)
        for o in outputs:
            got = tree(o)
            assert sorted(got) == sorted(reference[str(o)]), (seed, delay)
            for name, data in reference[str(o)].items():
                assert got[name] == data, (seed, delay, name)


def test_build_killed_at_random_points_rebuilds_the_same_bytes(tmp_path):
    raw = make_vqa_rad_subset(tmp_path / "raw", 150)
    out = tmp_path / "out"
    args = ["build", "vqa_rad", "--raw", str(raw), "--out", str(out), "--no-progress", "--max-shard-mb", "1"]
    kill_then_rerun_matches(args, [out], range(3))


def test_mix_killed_at_random_points_remixes_the_same_bytes(tmp_path):
    staged = tmp_path / "staged"
    write_staged(staged, "alpha", {("train", "vqa", "ct"): 150, ("test", "vqa", "mri"): 20})
    write_staged(staged, "beta", {("train", "surgical_vqa", "endoscopy"): 30}, kind="video")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: killed\nseed: 3\nsources:\n  alpha: {take: 120}\n  beta: {take: all}\n")
    out, manifests = tmp_path / "out", tmp_path / "manifests"
    args = ["mix", str(recipe), "--staged", str(staged), "--out", str(out), "--manifests", str(manifests), "--no-progress", "--max-shard-mb", "1"]
    kill_then_rerun_matches(args, [out, manifests], range(3))


def test_windows_killed_at_random_points_cuts_the_same_bytes(tmp_path):
    from omnivmed.surgical_demo import write_demo_tree

    raw = write_demo_tree(tmp_path / "raw" / "cholec80_vqa")
    out = tmp_path / "windows"
    args = ["windows", "cholec80_vqa", "--raw", str(raw), "--out", str(out), "--step", "5", "-o", "short_side=0", "--no-progress"]
    kill_then_rerun_matches(args, [out], range(3))
