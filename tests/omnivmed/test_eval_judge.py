"""--judge: a verdict per answer through the endpoint cache; unreadable replies count wrong; failures stop scoring."""

from __future__ import annotations

import json
import re

import pytest

from omnivmed.cli.eval import main
from omnivmed.eval_judge import judge_items
from omnivmed.eval_predict import EndpointSettings
from omnivmed.evaluation.benchmarks import get_benchmark, read_ground_truth
from omnivmed.evaluation.items import EvalItem
from omnivmed.rejection_sampling.server import HttpError, LocalServer, Reply
from support.eval_fixtures import build_eval_staged, user_text

FIELD = re.compile(r"^(Reference answer|User's answer): (.*)$", re.M)


def judge_responder(body, headers):
    fields = dict(FIELD.findall(user_text(body)))
    if fields["User's answer"] == "gibberish":
        return Reply("I cannot decide.")
    correct = int(fields["User's answer"].strip(" .").lower() == fields["Reference answer"].lower())
    return Reply(json.dumps({"rationale": "compared", "correct": correct}))


def item(qid, answer, prediction):
    return EvalItem(qid, f"question {qid}?", answer, prediction, "open", extra=(("benchmark", "slake"),))


def test_verdicts_are_recorded_on_every_item_and_cached(tmp_path):
    items = [item("1", "liver", "Liver."), item("2", "lung", "heart"), item("3", "ct", "gibberish"), item("4", "mri", "")]
    with LocalServer(judge_responder) as server:
        settings = EndpointSettings(server.base_url, "judge", api_key_env=None, backoff_s=0.01)
        judged = judge_items("slake", items, settings, tmp_path / "c.sqlite", tmp_path)
        assert (judged.sent, judged.cached, judged.failed, judged.unreadable) == (3, 0, 0, 1)  # the empty answer is not asked
        assert [dict(i.extra)["judge_correct"] for i in judged.items] == ["1", "0", "", "0"]
        before = len(server.log)
        again = judge_items("slake", items, settings, tmp_path / "c.sqlite")
        assert len(server.log) == before and again.cached == 3
    rows = [json.loads(line) for line in (tmp_path / "slake" / "judgments.jsonl").read_text().splitlines()]
    assert [(r["question_id"], r["correct"]) for r in rows] == [("1", 1), ("2", 0), ("3", None), ("4", 0)]
    assert rows[3]["rationale"] == "no prediction"


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    return build_eval_staged(tmp_path_factory.getbasetemp() / "eval-ground-truth")


def test_score_with_a_judge_and_with_a_judge_that_is_down(staged, tmp_path, capsys):
    records = read_ground_truth(get_benchmark("slake"), staged / "slake")
    answers = tmp_path / "answers.jsonl"
    answers.write_text("".join(json.dumps({"question_id": r.question_id, "text": r.answer if n % 2 else "no idea"}) + "\n" for n, r in enumerate(records)))
    with LocalServer(judge_responder) as server:
        argv = ["score", "--benchmark", "slake", "--gt", str(staged / "slake"), "--predictions", str(answers), "--protocol", "medevalkit", "--judge", server.base_url, "--judge-model", "judge", "--out", str(tmp_path / "o")]
        assert main(argv) == 0
    assert "judge: 28 verdicts asked, 0 from the cache, 0 unreadable" in capsys.readouterr().out
    matching = json.loads((tmp_path / "o" / "matching.json").read_text())["slake"]
    assert matching["judge"]["model"] == "judge"
    with LocalServer(lambda body, headers: HttpError(503)) as server:
        argv = ["score", "--benchmark", "slake", "--gt", str(staged / "slake"), "--predictions", str(answers), "--protocol", "medevalkit", "--judge", server.base_url, "--judge-model", "judge2", "--judge-retries", "0", "--out", str(tmp_path / "down")]
        assert main(argv) == 3
    assert not (tmp_path / "down" / "scores.json").exists()
    assert main(["score", "--benchmark", "slake", "--gt", str(staged / "slake"), "--predictions", str(answers), "--judge", "http://x/v1", "--out", str(tmp_path / "x")]) == 2
    assert "name the judge's model with --judge-model NAME" in capsys.readouterr().err
