"""Captioning spread over workers (local processes, Ray): the same bytes as one process, no reply asked twice.

The scripted endpoint (support.caption_fixtures.Script) answers from rules, and
a fault function makes the first ask of some keys fail with a 503, so the
client's retries run inside the workers too. Each run keeps its own cache, so
every request is asked of the server; a key answered twice is a repeat.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import pytest

from omnivmed.engines import EngineError
from omnivmed.engines.shared_cache import spread_for
from omnivmed.rejection_sampling.cache import ReplyCache
from omnivmed.rejection_sampling.run import caption_run
from omnivmed.rejection_sampling.server import HttpError, LocalServer
from support.caption_fixtures import Script, caption_config, make_windows

OUTPUTS = ("candidates.arrow", "manifest.json", "summary.json")


def first_ask_of_every_fifth_fails(key: str, body: dict, seen: int):
    return HttpError(503) if seen == 0 and int(key[:8], 16) % 5 == 0 else None


def output_digests(out: Path) -> dict[str, str]:
    files = [out / name for name in OUTPUTS] + sorted(out.glob("*.arrow"))
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files if p.is_file()}


@pytest.fixture(scope="module")
def windows(tmp_path_factory):
    return make_windows(tmp_path_factory.mktemp("spread-windows"))


@pytest.fixture(scope="module")
def plain(windows, tmp_path_factory):
    """One process, the plain path."""
    out = tmp_path_factory.mktemp("plain") / "out"
    with LocalServer(Script(faults=first_ask_of_every_fifth_fails)) as server:
        result = caption_run(windows, out, caption_config(server.base_url))
    assert result.outputs.summary["clips"] == 10 and not result.problems()
    return output_digests(out), len(server.keys())


def spread_run(windows: Path, out: Path, engine: str, workers: int) -> tuple[object, LocalServer]:
    with LocalServer(Script(faults=first_ask_of_every_fifth_fails)) as server:
        result = caption_run(windows, out, caption_config(server.base_url), spread=spread_for(engine, workers), clips_per_task=3)
    return result, server


def assert_same_as_plain(result, server: LocalServer, out: Path, plain) -> None:
    digests, replies = plain
    assert output_digests(out) == digests
    answered = Counter(server.keys())
    assert not [k for k, n in answered.items() if n > 1]  # no reply asked for twice
    assert len(answered) == replies
    with ReplyCache(out / "requests.sqlite") as cache:
        assert cache.keys() == set(answered)  # every reply the workers got is in the run's one cache
    report = result.outputs.run
    assert report["sent"] == replies and report["cached"] == 0
    assert report["failed"] == 0 and not result.problems()


def test_local_workers_write_the_plain_bytes(windows, plain, tmp_path):
    result, server = spread_run(windows, tmp_path / "out", "local", 2)
    assert_same_as_plain(result, server, tmp_path / "out", plain)


def test_a_second_spread_run_asks_nothing(windows, plain, tmp_path):
    out = tmp_path / "out"
    spread_run(windows, out, "local", 2)
    result, server = spread_run(windows, out, "local", 2)
    assert server.keys(None) == []
    assert output_digests(out) == plain[0]
    assert result.outputs.run["sent"] == 0 and result.outputs.run["cached"] == plain[1]


def test_bad_engine_is_one_line():
    with pytest.raises(EngineError, match="--engine 'spark' is not one of local, ray"):
        spread_for("spark", 2)
    with pytest.raises(EngineError, match="--workers 0 must be at least 1"):
        spread_for("local", 0)
    assert spread_for("local", 1) is None  # the plain path


@pytest.mark.slow
def test_ray_workers_write_the_plain_bytes(windows, plain, tmp_path):
    result, server = spread_run(windows, tmp_path / "out", "ray", 2)
    assert_same_as_plain(result, server, tmp_path / "out", plain)
