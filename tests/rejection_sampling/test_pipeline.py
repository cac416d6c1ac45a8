"""The whole loop against the local server: selection, rounds, outputs, faults, re-runs, determinism."""

from __future__ import annotations

import hashlib
import json
import shutil

import pyarrow as pa

from omnivmed.data.manifest import Manifest, verify_manifest
from omnivmed.data.shards import iter_samples
from omnivmed.rejection_sampling.cache import ReplyCache
from omnivmed.rejection_sampling.clip_inputs import read_clips
from omnivmed.rejection_sampling.config import AcceptanceRule
from omnivmed.rejection_sampling.outputs import read_candidates
from omnivmed.rejection_sampling.prompts import clip_header
from omnivmed.rejection_sampling.run import caption_run
from omnivmed.rejection_sampling.server import Drop, HttpError, LocalServer, Reply, Stall, TruncatedBody
from support.caption_fixtures import Script, is_judge, caption_config

CLIPS = 10


def outputs(out):
    """Bytes of every deterministic output."""
    manifest = Manifest.load(out / "manifest.json")
    files = ["manifest.json", "rejects.jsonl", "candidates.arrow", "summary.json"] + [s.path for s in manifest.shards]
    return {name: (out / name).read_bytes() for name in files}


def test_candidates_judged_and_best_passing_wins(windows, tmp_path):
    script = Script()
    with LocalServer(script) as server:
        result = caption_run(windows, tmp_path / "out", caption_config(server.base_url))
    summary = result.outputs.summary
    assert summary["clips"] == CLIPS
    assert summary["accepted"] + summary["rejected"] + summary["failed"] == CLIPS and summary["failed"] == 0
    out = tmp_path / "out"
    assert verify_manifest(out / "manifest.json") == []
    manifest = Manifest.load(out / "manifest.json")
    assert manifest.counts["task"] == {"video_caption": summary["accepted"]}
    samples = [s for shard in manifest.shards for s in iter_samples(out / shard.path)]
    assert len(samples) == summary["accepted"]

    table = read_candidates(out / "candidates.arrow").to_pylist()
    assert len(table) == summary["candidates"]
    by_clip = {}
    for row in table:
        by_clip.setdefault(row["clip_id"], []).append(row)
        assert {j["judge"] for j in row["judges"]} == {"vision", "text"}  # every judge scored every candidate
        for j in row["judges"]:
            assert j["raw_reply"] and j["rationale"] and j["prompt_tokens"] == 200
        scores = [v for j in row["judges"] for v in (j["relevance"], j["fluency"], j["accuracy"])]
        assert row["passed"] == (min(scores) >= 4)
    for sample in samples:
        rows = by_clip[sample.provenance.record_id]
        winner = [r for r in rows if r["winner"]]
        assert len(winner) == 1 and winner[0]["caption"] == sample.conversations[1].content
        same_round = [r for r in rows if r["round"] == winner[0]["round"] and r["passed"]]
        total = lambda r: sum(j["relevance"] + j["fluency"] + j["accuracy"] for j in r["judges"])  # noqa: E731
        assert total(winner[0]) == max(total(r) for r in same_round)
        assert sample.task == "video_caption" and sample.visual_kind == "video" and len(sample.frames) == 8
        assert sample.conversations[0].content.startswith("<video>")
    # rounds: a clip whose first round had no passing candidate got another one
    assert any(r["round"] == 1 for r in table)
    rejected = [cid for cid, rows in by_clip.items() if not any(r["winner"] for r in rows)]
    assert len(rejected) == summary["rejected"]
    for cid in rejected:
        assert len(by_clip[cid]) == 4 and not any(r["passed"] for r in by_clip[cid])  # 2 rounds of 2
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert sorted(r["record"] for r in rejects if r["reason"] == "no_passing_candidate") == sorted(rejected)
    assert manifest.rejects.get("no_passing_candidate", 0) == summary["rejected"]

    hist = summary["score_histograms"]
    for judge in ("vision", "text"):
        for criterion in ("relevance", "fluency", "accuracy"):
            assert sum(hist[judge][criterion].values()) == summary["candidates"]
    assert summary["tokens"]["caption"]["requests"] == summary["candidates"]
    assert summary["tokens"]["judge:text"]["prompt_tokens"] == 200 * summary["candidates"]
    run = result.outputs.run
    assert run["sent"] == 3 * summary["candidates"] and run["requests_per_second"] > 0


def test_rerun_sends_nothing_and_rewrites_the_same_bytes(windows, tmp_path):
    script = Script()
    with LocalServer(script) as server:
        caption_run(windows, tmp_path / "a", caption_config(server.base_url))
        first = outputs(tmp_path / "a")
        sent = len(server.log)
        again = caption_run(windows, tmp_path / "a", caption_config(server.base_url))
        assert len(server.log) == sent and again.outputs.run["sent"] == 0
    assert outputs(tmp_path / "a") == first
    # Same cache, other worker count and concurrency (replies complete in another order): same winners.
    (tmp_path / "b").mkdir()
    shutil.copy(tmp_path / "a" / "requests.sqlite", tmp_path / "b" / "requests.sqlite")
    with LocalServer(lambda body, headers: HttpError(500)) as server:
        caption_run(windows, tmp_path / "b", caption_config(server.base_url, clip_workers=1, concurrency=1))
        assert server.log == []
    assert outputs(tmp_path / "b") == first


def test_every_fault_ends_in_a_cached_success_or_a_recorded_failure(windows, tmp_path):
    """500, 429 + Retry-After, timeouts, drops, truncated bodies on first sight of some requests;
    truncated JSON and out-of-range scores in some judges' first replies; one clip's captions fail for good."""

    def pick(key, n):
        return int(key[:8], 16) % 7 == n

    doomed_clip = read_clips(windows)[0][-1]
    doomed = {"header": clip_header(doomed_clip)}

    def faults(key, body, seen):
        if not is_judge(body) and doomed["header"] and doomed["header"] in json.dumps(body["messages"]):
            return HttpError(503)
        if seen == 0:
            for n, fault in enumerate([HttpError(500), HttpError(429, retry_after="0"), Stall(1.0), Drop(), TruncatedBody()]):
                if pick(key, n):
                    return fault
        if is_judge(body) and body["temperature"] == 0.0 and pick(key, 5):
            return Reply('{"relevance": 5, "fluency": 4, "accur', 50, 10)  # truncated JSON
        if is_judge(body) and body["temperature"] == 0.0 and pick(key, 6):
            return Reply('{"relevance": 7, "fluency": 4, "accuracy": 4, "rationale": "x"}', 50, 10)
        return None

    script = Script(faults=faults)
    with LocalServer(script) as server:
        config = caption_config(server.base_url, timeout_s=0.3, max_retries=3)
        result = caption_run(windows, tmp_path / "out", config)
        summary = result.outputs.summary
        assert summary["accepted"] + summary["rejected"] + summary["failed"] == CLIPS
        assert summary["failed"] == 1  # the doomed clip, and only it
        log = list(server.log)
        outcomes = {e.outcome for e in log}
        assert {"http_500", "http_429", "stall", "drop", "truncated", "http_503", "reply"} <= outcomes
        with ReplyCache(tmp_path / "out" / "requests.sqlite") as cache:
            failures = cache.failures(run=1)
            cached = cache.keys()
        kinds = {f["kind"] for f in failures}
        assert "http_503" in kinds and "parse" in kinds
        assert {f["clip_id"] for f in failures if f["kind"] == "http_503"} == {doomed_clip.clip_id} == {
            r["record"] for r in map(json.loads, (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()) if r["reason"] == "request_failed"
        }
        # every reply the server sent is in the cache; nothing that failed is
        assert {e.key for e in log if e.outcome == "reply"} == cached
        parse_failed = [row for row in read_candidates(tmp_path / "out" / "candidates.arrow").to_pylist() for j in row["judges"] if len(j["attempts"]) > 1]
        assert parse_failed  # re-asked after a bad reply; the bad reply is kept for audit
        for row in parse_failed:
            for j in row["judges"]:
                if len(j["attempts"]) > 1:
                    assert j["attempts"][0]["error"] and j["attempts"][-1]["error"] is None

        # The server recovers: a re-run asks only for the doomed clip, never for a reply it already has.
        doomed["header"] = None
        before = len(server.log)
        rerun = caption_run(windows, tmp_path / "out", config)
        second = server.log[before:]
        assert not {e.key for e in second} & cached
        assert {e.key for e in second} and rerun.outputs.summary["failed"] == 0
        assert rerun.outputs.summary["accepted"] + rerun.outputs.summary["rejected"] == CLIPS


def test_no_api_key_in_any_file_the_run_writes(windows, tmp_path, monkeypatch):
    planted_env = "sk-PLANTED-ENV-7f3a9c1e5b"
    planted_file = "sk-PLANTED-FILE-2d8e4b6a0c"
    monkeypatch.setenv("CAPTION_TEST_KEY", planted_env)
    seen_auth = set()

    class Echoing(Script):
        def __call__(self, body, headers):
            seen_auth.add(headers.get("authorization"))
            key = headers.get("x-omnivmed-request")
            if is_judge(body) and (self.victim is None or self.victim == key):
                self.victim = key
                # A careless server that echoes the credentials in its error text (for good, on one request).
                return HttpError(500, message=f"upstream refused {headers.get('authorization')}")
            return super().__call__(body, headers)

    echoing = Echoing()
    echoing.victim = None
    with LocalServer(echoing) as server:
        config = caption_config(server.base_url)
        gen = config.generator.__class__(**{**config.generator.__dict__, "api_key": planted_file})
        judges = tuple(j.__class__(endpoint=j.endpoint.__class__(**{**j.endpoint.__dict__, "api_key_env": "CAPTION_TEST_KEY"}), kind=j.kind, sampling=j.sampling) for j in config.judges)
        config = config.with_overrides(generator=gen, judges=judges, extra_rounds=0)
        config_file = tmp_path / "caption.json"
        config_file.write_text(json.dumps({"note": "user's own file, not an output"}))
        caption_run(windows, tmp_path / "out", config, batch_write=None)
        caption_run(windows, tmp_path / "out", config, dry_run=True)
        caption_run(windows, tmp_path / "out2", config, batch_write=tmp_path / "out2" / "batch")
    assert f"Bearer {planted_file}" in seen_auth and f"Bearer {planted_env}" in seen_auth  # the keys were really used
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p != config_file]
    assert len(files) > 8
    for path in files:
        data = path.read_bytes()
        for key in (planted_env, planted_file):
            assert key.encode() not in data, f"{path} holds an API key"
    with ReplyCache(tmp_path / "out" / "requests.sqlite") as cache:
        assert any("***" in f["detail"] for f in cache.failures())  # the echoed key was redacted


def test_acceptance_rule_is_configurable(windows, tmp_path):
    with LocalServer(Script()) as server:
        strict = caption_run(windows, tmp_path / "strict", caption_config(server.base_url).with_overrides(acceptance=AcceptanceRule(min_each=5)))
        lax = caption_run(windows, tmp_path / "lax", caption_config(server.base_url).with_overrides(acceptance=AcceptanceRule(min_each=1)))
    assert strict.outputs.summary["accepted"] < lax.outputs.summary["accepted"] == CLIPS
    assert "every criterion of every judge >= 5" in strict.outputs.manifest.options["acceptance"]


def test_limit_and_no_judges(windows, tmp_path):
    with LocalServer(Script()) as server:
        result = caption_run(windows, tmp_path / "out", caption_config(server.base_url, candidates=3).with_overrides(judges=()), limit=3)
        assert len(server.log) == 9  # 3 clips x 3 candidates, no judge requests
    assert result.outputs.summary["accepted"] == 3
    table = read_candidates(tmp_path / "out" / "candidates.arrow").to_pylist()
    assert [r["candidate"] for r in table if r["winner"]] == [0, 0, 0]  # no scores: the lowest index


def test_unusable_windows_are_rejected_with_the_file(windows, tmp_path):
    from omnivmed.data.caption_windows import WINDOW_SCHEMA

    table = pa.ipc.open_stream(pa.memory_map(str(windows))).read_all()
    rows = table.to_pylist()[:3]
    rows[1]["qa"] = []
    rows[2]["frames"] = []
    path = tmp_path / "bad" / "windows.arrow"
    path.parent.mkdir()
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, WINDOW_SCHEMA) as writer:
        writer.write_batch(pa.RecordBatch.from_pylist(rows, schema=WINDOW_SCHEMA))
    with LocalServer(Script(scores=lambda seed, judge: (5, 5, 5))) as server:
        result = caption_run(path, tmp_path / "out", caption_config(server.base_url))
    assert result.outputs.summary["accepted"] == 1
    assert result.outputs.summary["inputs_rejected"] == {"no_frames": 1, "no_qa_text": 1}
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert {(r["file"], r["reason"]) for r in rejects} == {("windows.arrow", "no_frames"), ("windows.arrow", "no_qa_text")}
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert Manifest.load(tmp_path / "out" / "manifest.json").inputs[0].sha256 == digest


def test_server_gone_mid_run_then_back(windows, tmp_path):
    """The endpoint dies mid-run (connections cut, port closed): the run ends with failed clips recorded,
    and the next run, against the server back up, asks only for what was missing."""
    import threading
    import time

    script = Script()
    server = LocalServer(script, latency_s=0.01).start()
    config = caption_config(server.base_url, max_retries=1)
    results = {}
    worker = threading.Thread(target=lambda: results.setdefault("first", caption_run(windows, tmp_path / "out", config)))
    worker.start()
    while len(server.keys()) < 20 and worker.is_alive():
        time.sleep(0.002)
    server.stop()
    worker.join(timeout=60)
    summary = results["first"].outputs.summary
    assert summary["failed"] > 0 and summary["accepted"] + summary["rejected"] + summary["failed"] == CLIPS
    with ReplyCache(tmp_path / "out" / "requests.sqlite") as cache:
        received = cache.keys()
        assert {f["kind"] for f in cache.failures(run=1)} <= {"connection", "parse"}
    sent = set(server.keys())
    assert received <= sent and len(sent - received) <= 3 * 64  # only replies cut off in flight are missing

    with LocalServer(script) as back:  # another port: where the endpoint is does not enter the keys
        rerun = caption_run(windows, tmp_path / "out", caption_config(back.base_url))
        assert back.keys(None) and not set(back.keys(None)) & received
    assert rerun.outputs.summary["failed"] == 0
    assert rerun.outputs.summary["accepted"] + rerun.outputs.summary["rejected"] == CLIPS
