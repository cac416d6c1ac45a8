"""Offline batch mode: OpenAI batch JSONL out, batch output in, same cache, same results as online."""

from __future__ import annotations

import json

from omnivmed.rejection_sampling.batch import ingest_batch_output
from omnivmed.rejection_sampling.cache import ReplyCache
from omnivmed.rejection_sampling.run import caption_run
from omnivmed.rejection_sampling.server import LocalServer, run_batch
from support.caption_fixtures import Script, caption_config

NOWHERE = "http://127.0.0.1:9/v1"  # nothing listens: batch mode must never connect


def test_batch_rounds_end_like_an_online_run(windows, tmp_path):
    out = tmp_path / "out"
    config = caption_config(NOWHERE)
    step = 0
    outputs = ()
    while True:
        folder = tmp_path / f"batch-{step}"
        result = caption_run(windows, out, config, batch_write=folder, batch_ingest=outputs)
        if step == 0:
            lines = [json.loads(line) for line in (folder / "gen.jsonl").read_text().splitlines()]
            assert len(lines) == 20 and set(result.batch_files) == {"gen"}  # 10 clips x 2 candidates
            assert result.outputs.summary["pending"] == 10
            with ReplyCache(out / "requests.sqlite") as cache:
                assert len(cache) == 0
            for line in lines:
                assert line["method"] == "POST" and line["url"] == "/v1/chat/completions"
                assert len(line["custom_id"]) == 64 and line["body"]["model"] == "model-gen"
                assert line["body"]["messages"][1]["content"][0]["image_url"]["url"].startswith("data:image/jpeg;base64,")
        if step == 1:
            assert set(result.batch_files) == {"vision", "text"}  # the judges of the 20 captions
            assert all(r.cached == 20 for r in result.ingested)
        if not result.batch_files:
            break
        outputs = tuple(folder / f"{name}.out.jsonl" for name in result.batch_files)
        for name, path in result.batch_files.items():
            run_batch(path, folder / f"{name}.out.jsonl", Script())  # stands in for `vllm run-batch`
        step += 1
        assert step < 8
    summary = result.outputs.summary
    assert summary["pending"] == 0 and summary["accepted"] + summary["rejected"] == 10
    assert result.outputs.run["sent"] == 0

    with LocalServer(Script()) as server:
        online = caption_run(windows, tmp_path / "online", caption_config(server.base_url))
    assert (tmp_path / "online" / "candidates.arrow").read_bytes() == (out / "candidates.arrow").read_bytes()
    assert online.outputs.manifest.shards == result.outputs.manifest.shards


def test_bad_batch_output_lines_are_reported_and_the_rest_ingested(windows, tmp_path):
    out = tmp_path / "out"
    result = caption_run(windows, out, caption_config(NOWHERE), batch_write=tmp_path / "b", limit=2)
    path = result.batch_files["gen"]
    answered = tmp_path / "answered.jsonl"
    run_batch(path, answered, Script())
    good = answered.read_text().splitlines()
    assert len(good) == 4
    error_line = json.loads(good[1])
    error_line["response"] = {"status_code": 500, "body": None}
    error_line["error"] = {"message": "engine died"}
    foreign = json.loads(good[2])
    foreign["custom_id"] = "f" * 64
    broken = tmp_path / "broken.jsonl"
    broken.write_text("\n".join([good[0], json.dumps(error_line), json.dumps(foreign), '{"response": {}}', good[3][:40], good[0]]) + "\n")
    with ReplyCache(out / "requests.sqlite") as cache:
        run = cache.begin_run("batch")
        report = ingest_batch_output(cache, broken, run)
        assert (report.cached, report.already_cached, report.failed) == (1, 1, 1)
        assert [p.split(": ", 1)[1][:20] for p in report.problems] == ["custom_id ffffffffff", "no custom_id", "not JSON (Invalid co"]
        assert all(p.startswith("broken.jsonl:") for p in report.problems)
        assert [f["kind"] for f in cache.failures(run)] == ["batch_500"]
        assert len(cache) == 1
    missing = caption_run(windows, out, caption_config(NOWHERE), batch_write=tmp_path / "c", batch_ingest=(tmp_path / "absent.jsonl",), limit=2)
    assert "cannot read" in missing.ingested[0].problems[0]
    assert len((tmp_path / "c" / "gen.jsonl").read_text().splitlines()) == 3  # the failed and the lost lines asked again
