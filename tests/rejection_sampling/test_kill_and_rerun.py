"""Kill a caption run at a random point, run it again: no reply already received is asked for twice."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from omnivmed.rejection_sampling.cache import ReplyCache
from omnivmed.rejection_sampling.run import caption_run
from omnivmed.rejection_sampling.server import LocalServer
from support.caption_fixtures import Script, caption_config


def config_file(path: Path, base_url: str) -> Path:
    def ep(name):
        return {"name": name, "base_url": base_url, "model": f"model-{name}", "api_key_env": None, "concurrency": 4, "backoff_s": 0.01}

    path.write_text(
        json.dumps(
            {
                "generator": ep("gen"),
                "judges": [{**ep("vision"), "kind": "multimodal"}, {**ep("text"), "kind": "text", "sampling": {"temperature": 0.0, "top_p": 1.0, "max_tokens": 128}}],
                "candidates": 2,
                "extra_rounds": 1,
                "clip_workers": 4,
            }
        )
    )
    return path


def settle(server: LocalServer, quiet_s: float = 0.5) -> None:
    """Wait until the server's log stops growing (its handlers answer with a latency)."""
    seen = -1
    while seen != len(server.log):
        seen = len(server.log)
        time.sleep(quiet_s)


# Two kill points; the second, like the first, spawns a captioning process (~5 s): the fast set keeps one.
@pytest.mark.parametrize("seed", [5, pytest.param(11, marks=pytest.mark.slow)])
def test_killed_run_resumes_without_repeats(windows, tmp_path, seed):
    out = tmp_path / "out"
    script = Script()
    with LocalServer(script, latency_s=0.02) as server:
        config = config_file(tmp_path / "caption.json", server.base_url)
        command = [str(Path(sys.executable).parent / "omnivmed-data"), "caption", "--windows", str(windows), "--out", str(out), "--config", str(config), "--no-progress"]
        kill_after = random.Random(seed).randint(10, 60)  # of about 90 replies
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while len(server.keys()) < kill_after and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()[-2000:]
        settle(server)  # requests of the killed run still being answered are logged as theirs, not the re-run's
        first = server.keys()
        assert len(first) >= kill_after
        with ReplyCache(out / "requests.sqlite") as cache:
            received = cache.keys()
        assert received and received <= set(first)
        assert len(set(first) - received) <= 4 * 3  # at most what was in flight when the run died

        before = len(server.log)
        # A long timeout: on a loaded machine (make test-fast runs on every core) a 5 s timeout would
        # re-ask a slow reply, which is right, but is not what is counted here.
        result = caption_run(windows, out, caption_config(server.base_url, timeout_s=120.0))
        second = server.keys(None)[before:]
        assert second  # the kill came mid-run: there was work left
        assert not set(second) & received  # zero repeats of replies already received
        twice = [(e.key[:12], e.outcome) for e in server.log[before:] if second.count(e.key) > 1]
        assert not twice, twice  # and nothing asked twice within the re-run
        summary = result.outputs.summary
        assert summary["accepted"] + summary["rejected"] == summary["clips"] == 10

    # The resumed run ends where an uninterrupted one does.
    with LocalServer(Script()) as server:
        clean = caption_run(windows, tmp_path / "clean", caption_config(server.base_url))
    assert (out / "candidates.arrow").read_bytes() == (tmp_path / "clean" / "candidates.arrow").read_bytes()
    assert clean.outputs.manifest.shards == result.outputs.manifest.shards
