"""A two-node Ray cluster on this machine: a build and a caption run survive a killed worker node.

The test starts the cluster itself (``ray start --head`` and one ``ray start
--address`` worker node, one CPU each, on 127.0.0.1, token authentication off
as on a trusted network), runs the real CLI with ``RAY_ADDRESS`` set, and
kills the worker node's raylet and its workers (SIGKILL) mid-run. Ray runs the
lost tasks again on the head node; the outputs must be the bytes of the plain
one-process run, and no reply the cache had received may be asked for again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

from omnivmed.caption_inputs import builder_source_card
from omnivmed.rejection_sampling.cache import ReplyCache
from omnivmed.rejection_sampling.run import caption_run
from omnivmed.rejection_sampling.server import HttpError, LocalServer
from support.caption_fixtures import Script, caption_config, make_windows

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
DATA = Path(__file__).resolve().parents[2] / "data"
VOLUME_OPTIONS = [
    "-o", "license=Apache-2.0 (TotalSegmentator repository)",
    "-o", "homepage=https://github.com/wasserth/TotalSegmentator",
    "-o", "citation=Wasserthal J, et al. TotalSegmentator. Radiology: Artificial Intelligence 5(5), e230024 (2023).",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raylets() -> dict[int, str]:
    """PID -> command line of every raylet on this machine."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                args = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if args and args[0].endswith(b"/raylet"):
                found[int(entry.name)] = b" ".join(args).decode(errors="replace")
    return found


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


class Cluster:
    def __init__(self, root: Path):
        self.root = root
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
                    # a dead node is noticed in about 2 s instead of 30
                    "RAY_health_check_period_ms": "500", "RAY_health_check_failure_threshold": "4"}
        self.env.pop("RAY_ADDRESS", None)
        self.worker_raylet: int | None = None

    def ray(self, *args: str) -> None:
        subprocess.run([str(BIN / "ray"), *args], env=self.env, check=True, capture_output=True, timeout=180)

    def start(self) -> "Cluster":
        self.ray("start", "--head", "--port", str(self.port), "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
                 "--include-dashboard", "false", "--temp-dir", str(self.root), "--disable-usage-stats")
        self.start_worker()
        return self

    def start_worker(self) -> None:
        before = set(raylets())
        self.ray("start", "--address", self.address, "--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--disable-usage-stats")
        # Other Rays may start meanwhile (parallel tests): ours is the one under this cluster's folder.
        new = [pid for pid, line in raylets().items() if pid not in before and str(self.root) in line]
        assert len(new) == 1, new
        self.worker_raylet = new[0]

    def kill_worker_node(self) -> None:
        """SIGKILL the worker node's raylet and every process under it (its Ray workers)."""
        pids = [self.worker_raylet, *descendants(self.worker_raylet)]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.worker_raylet = None

    def stop(self) -> None:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env={**self.env, "RAY_TMPDIR": str(self.root)}, capture_output=True, timeout=180)
        for pid in raylets():
            if str(self.root) in raylets().get(pid, ""):
                os.kill(pid, signal.SIGKILL)

    def run_env(self) -> dict[str, str]:
        return {**self.env, "RAY_ADDRESS": self.address}


@pytest.fixture(scope="module")
def cluster():
    root = Path(tempfile.mkdtemp(prefix="ovr", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    c = Cluster(root).start()
    try:
        yield c
    finally:
        c.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def two_nodes(cluster):
    if cluster.worker_raylet is None:
        cluster.start_worker()
    return cluster


def digests(out: Path, names=("manifest.json", "rejects.jsonl", "candidates.arrow", "summary.json")) -> dict[str, str]:
    files = [p for p in sorted(out.rglob("*")) if p.is_file() and (p.suffix == ".arrow" or p.name in names)]
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def kill_when(cluster: Cluster, process: subprocess.Popen, ready, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert process.poll() is None, "the run ended before the worker node could be killed"
    cluster.kill_worker_node()


def test_volume_build_survives_a_killed_worker_node(two_nodes, tmp_path):
    def build(out: Path, *extra: str, env=None) -> subprocess.Popen:
        command = [str(BIN / "omnivmed-data"), "build", "volumes", "--raw", str(DATA / "volumes"), "--out", str(out), "--no-progress", *VOLUME_OPTIONS, *extra]
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    plain = build(tmp_path / "plain")
    assert plain.wait(timeout=600) == 0, plain.stderr.read()[-2000:]

    out = tmp_path / "ray"
    run = build(out, "--engine", "ray", "--workers", "2", env=two_nodes.run_env())
    # Mid-run: Ray is up and the first units are being worked on by both nodes.
    kill_when(two_nodes, run, lambda: _tasks_running(two_nodes))
    assert run.wait(timeout=600) == 0, run.stderr.read()[-3000:]
    assert digests(out) == digests(tmp_path / "plain")


def _tasks_running(cluster: Cluster) -> bool:
    """True once the worker node runs a task of ours (a Ray worker process executing a map)."""
    if cluster.worker_raylet is None:
        return False
    for pid in descendants(cluster.worker_raylet):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "ray::" in title and "IDLE" not in title:
            return True
    return False


def first_ask_of_every_fifth_fails(key: str, body: dict, seen: int):
    return HttpError(503) if seen == 0 and int(key[:8], 16) % 5 == 0 else None


def test_caption_run_survives_a_killed_worker_node_with_no_reply_asked_twice(two_nodes, tmp_path):
    windows = make_windows(tmp_path / "windows")
    with LocalServer(Script(faults=first_ask_of_every_fifth_fails)) as server:
        caption_run(windows, tmp_path / "plain", caption_config(server.base_url), source_card=builder_source_card)  # as the CLI does
        total = len(server.keys())

    out = tmp_path / "ray"
    with LocalServer(Script(faults=first_ask_of_every_fifth_fails), latency_s=0.05) as server:
        config = tmp_path / "caption.json"
        endpoint = {"base_url": server.base_url, "api_key_env": None, "concurrency": 4, "backoff_s": 0.01, "max_backoff_s": 0.05, "timeout_s": 60.0}
        config.write_text(json.dumps({
            "generator": {"name": "gen", "model": "model-gen", **endpoint},
            "judges": [
                {"name": "vision", "model": "model-vision", "kind": "multimodal", **endpoint},
                {"name": "text", "model": "model-text", "kind": "text", "sampling": {"temperature": 0.0, "top_p": 1.0, "max_tokens": 128}, **endpoint},
            ],
            "candidates": 2, "extra_rounds": 1, "clip_workers": 4,
        }))
        command = [str(BIN / "omnivmed-data"), "caption", "--windows", str(windows), "--out", str(out), "--config", str(config),
                   "--no-progress", "--engine", "ray", "--workers", "2", "--clips-per-task", "1"]
        run = subprocess.Popen(command, env=two_nodes.run_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        kill_when(two_nodes, run, lambda: len(server.keys()) >= total // 3)
        with ReplyCache(out / "requests.sqlite") as cache:
            received = cache.keys()  # every reply committed before the kill
        assert run.wait(timeout=600) == 0, run.stderr.read()[-3000:]
        answered = Counter(server.keys())

    assert digests(out) == digests(tmp_path / "plain")
    asked_twice = {key for key, n in answered.items() if n > 1}
    assert not asked_twice & received  # no reply the cache held was asked for again
    assert len(asked_twice) <= 3 * 4  # only what was in flight on the dead node (3 endpoints x 4)
    with ReplyCache(out / "requests.sqlite") as cache:
        assert cache.keys() == set(answered)  # nothing lost: every request answered is in the cache
