"""Endpoint predictions through the captioner's client and cache: faults survived, a killed run resumed with zero repeats."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from omnivmed.eval_predict import BLIND_SYSTEM, EndpointPredictor, EndpointSettings, LocalModelPredictor
from omnivmed.evaluation.errors import EvalInputError
from omnivmed.evaluation.benchmarks import get_benchmark, read_ground_truth
from omnivmed.evaluation.predictions import read_predictions
from omnivmed.evaluation.predictors import requests_for
from omnivmed.evaluation.prompts import get_template
from omnivmed.rejection_sampling.cache import ReplyCache
from omnivmed.rejection_sampling.server import HttpError, LocalServer, Stall
from support.eval_fixtures import Answers, build_eval_staged, image_parts, user_text


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    return build_eval_staged(tmp_path_factory.getbasetemp() / "eval-ground-truth")


def questions(staged, name, n=None, template="llava-med"):
    benchmark = get_benchmark(name)
    records = read_ground_truth(benchmark, staged / benchmark.source)[:n]
    return records, requests_for(benchmark, records, get_template(template))


def settings(url, **kw):
    return EndpointSettings(**{"base_url": url, "model": "vlm", "api_key_env": None, "concurrency": 4, "timeout_s": 0.5, "backoff_s": 0.01, "max_frames": 4, **kw})


def test_faults_are_retried_and_a_rerun_sends_nothing(staged, tmp_path):
    records, requests = questions(staged, "vqa_rad", 12)
    clips, clip_requests = questions(staged, "cholec80_vqa")

    def faults(key, body, seen):
        # Every request: a 500, then a 429 with Retry-After, then a stall past the timeout, then the answer.
        return (HttpError(500), HttpError(429, retry_after="0"), Stall(1.5), None)[min(seen, 3)]

    script = Answers(faults)
    with LocalServer(script) as server:
        predictor = EndpointPredictor(settings(server.base_url), tmp_path / "requests.sqlite")
        outcome = predictor.predict(requests + clip_requests)
        assert not outcome.failures and outcome.sent == 16 and outcome.cached == 0
        replies = server.keys("reply")
        assert len(replies) == len(set(replies)) == 16  # each question answered once
        assert set(script.asked.values()) == {4}  # 500, 429, stall, reply
        before = len(server.log)
        again = predictor.predict(requests + clip_requests)
        assert len(server.log) == before and again.sent == 0 and again.cached == 16
        assert again.predictions == outcome.predictions
    by_id = {p.question_id: p for p in outcome.predictions}
    for record, request in zip(records, requests):
        expected = "yes" if request.prompt.endswith("[yes, no]") else "axial"
        assert by_id[record.question_id].text == expected and by_id[record.question_id].sample_id == record.sample_id
        assert by_id[record.question_id].prompt == request.prompt
    sent = {user_text(b): image_parts(b) for b in script.bodies}
    assert sent[requests[0].prompt] == 1  # an image: its stored JPEG
    assert sent[clip_requests[0].prompt] == 4  # a clip of 8 frames: 4 evenly spaced images
    first = next(b for b in script.bodies if user_text(b) == requests[0].prompt)
    assert first["messages"][-1]["content"][0]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert (first["temperature"], first["max_tokens"], first["model"]) == (0.0, 128, "vlm")


def test_failures_are_recorded_and_only_they_are_asked_again(staged, tmp_path):
    _, requests = questions(staged, "vqa_rad", 6)
    down = {0, 1}
    script = Answers(lambda key, body, seen: HttpError(503) if user_text(body) in {requests[i].prompt for i in down} else None)
    with LocalServer(script) as server:
        predictor = EndpointPredictor(settings(server.base_url, max_retries=1), tmp_path / "c.sqlite")
        outcome = predictor.predict(requests)
        assert set(outcome.failures) == {requests[i].record.question_id for i in down}
        assert outcome.failures[requests[0].record.question_id] == "http_503 after 2 tries"
        with ReplyCache(tmp_path / "c.sqlite") as cache:
            assert {f["clip_id"] for f in cache.failures()} == set(outcome.failures)
        script.faults = None
        before = len(server.log)
        again = predictor.predict(requests)
        assert not again.failures and again.sent == 2 and again.cached == 4
        assert len(server.log) - before == 2


def test_blind_sends_no_frame_and_its_own_system_prompt(staged, tmp_path):
    _, requests = questions(staged, "cholec80_vqa")
    script = Answers()
    with LocalServer(script) as server:
        outcome = EndpointPredictor(settings(server.base_url), tmp_path / "c.sqlite", images=False, system=BLIND_SYSTEM).predict(requests)
    assert len(outcome.predictions) == 4
    assert all(image_parts(b) == 0 and b["messages"][0] == {"role": "system", "content": BLIND_SYSTEM} for b in script.bodies)


def test_prompt_version_and_frames_are_in_the_cache_key(staged, tmp_path):
    records, plain = questions(staged, "vqa_rad", 3, "plain")
    _, llava = questions(staged, "vqa_rad", 3, "llava-med")
    predictor = EndpointPredictor(settings("http://127.0.0.1:9/v1"), tmp_path / "c.sqlite")
    blind = EndpointPredictor(settings("http://127.0.0.1:9/v1"), tmp_path / "c.sqlite", images=False)
    keys = {predictor.chat_request(r).key for r in plain + llava} | {blind.chat_request(r).key for r in plain}
    assert len(keys) == 9
    moved = EndpointPredictor(settings("http://127.0.0.1:7/v1"), tmp_path / "c.sqlite")  # where the endpoint is: not in the key
    assert moved.chat_request(plain[0]).key == predictor.chat_request(plain[0]).key


def test_a_local_model_answers_as_the_trainers_runner_does(staged, tmp_path):
    from support.tiny_stage import write_tiny_stage

    from omnivmed.trainer.inference import Runner, Settings

    folder = write_tiny_stage(tmp_path)
    records, requests = questions(staged, "vqa_rad", 3, "plain")
    predictor = LocalModelPredictor(folder, batch_size=2, max_new_tokens=4)
    outcome = predictor.predict(requests)
    assert not outcome.failures and outcome.sent == 3
    assert [p.question_id for p in outcome.predictions] == [r.question_id for r in records]
    direct = Runner.load(folder).generate([predictor.query(r) for r in requests], Settings(max_new_tokens=4))
    assert [p.text for p in outcome.predictions] == [a.text.strip() for a in direct]
    assert predictor.query(requests[0]).visual.frames  # the question's image goes in, as the shards hold it
    with pytest.raises(EvalInputError, match=r"--model .*: not a trained omnivmed model folder \(no config.json\)"):
        LocalModelPredictor(tmp_path / "nowhere")


@pytest.mark.slow
@pytest.mark.parametrize("seed", [3])
def test_killed_predict_run_resumes_with_zero_repeats(staged, tmp_path, seed):
    out = tmp_path / "out"
    script = Answers()
    with LocalServer(script, latency_s=0.01) as server:
        command = [
            str(Path(sys.executable).parent / "omnivmed-eval"), "predict", "--benchmark", "vqa_rad", "--gt", str(staged / "vqa_rad"),
            "--endpoint", server.base_url, "--model", "vlm", "--concurrency", "4", "--out", str(out),
        ]  # fmt: skip
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        kill_after = 40 + 7 * seed
        deadline = time.monotonic() + 120
        while len(server.keys()) < kill_after and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()[-2000:]
        first = server.keys()
        with ReplyCache(out / "requests.sqlite") as cache:
            received = cache.keys()
        assert received and received <= set(first)
        # Sent but not yet committed when the run died: what was in flight or waiting on the cache's disk.
        assert len(set(first) - received) <= 4 * 3
        assert not (out / "vqa_rad" / "predictions.jsonl").exists()

        before = len(server.log)
        rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert rerun.returncode == 0, rerun.stderr
        second = server.keys(None)[before:]
        assert second and not set(second) & received  # zero repeats of replies already received
        assert len(second) == len(set(second))
        assert len(received) + len(second) >= 451
        assert f"{len(second)} requests sent, {451 - len(second)} from the cache" in rerun.stdout
    predictions = read_predictions(out / "vqa_rad" / "predictions.jsonl")
    assert len(predictions) == 451 and {p.text for p in predictions} == {"yes", "axial"}
    run = json.loads((out / "run.json").read_text())
    assert run["predictor"] == "endpoint" and run["benchmarks"]["vqa_rad"]["answered"] == 451


@pytest.mark.parametrize("engine", ["local", pytest.param("ray", marks=pytest.mark.slow)])
def test_spread_predictions_equal_one_process(staged, tmp_path, engine, monkeypatch):
    """Chunks of questions asked by 2 workers sharing the cache: the same predictions, each question asked once."""
    import omnivmed.eval_predict as eval_predict
    from omnivmed.engines.shared_cache import spread_for

    monkeypatch.setattr(eval_predict, "QUESTIONS_PER_TASK", 5)  # 16 questions: 4 chunks over 2 workers
    _, requests = questions(staged, "vqa_rad", 12)
    _, clip_requests = questions(staged, "cholec80_vqa")
    every = requests + clip_requests

    def faults(key, body, seen):
        return HttpError(503) if seen == 0 and int(key[:8], 16) % 3 == 0 else None

    with LocalServer(Answers()) as server:
        plain = EndpointPredictor(settings(server.base_url), tmp_path / "plain.sqlite").predict(every)
    with LocalServer(Answers(faults)) as server:
        spread = EndpointPredictor(settings(server.base_url), tmp_path / "spread.sqlite", spread=spread_for(engine, 2)).predict(every)
        replies = server.keys("reply")
    assert len(replies) == len(set(replies)) == 16 and spread.sent == 16 and not spread.failures
    assert spread.predictions == plain.predictions
    with ReplyCache(tmp_path / "spread.sqlite") as cache:
        assert cache.keys() == set(replies)
