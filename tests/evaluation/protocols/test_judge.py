"""The judge's prompt and reply parsing."""

from __future__ import annotations

from omnivmed.evaluation.protocols.judge import (
    JUDGE_KEY,
    JudgeVerdict,
    judge_messages,
    parse_judge_reply,
    verdict_extra,
)


def test_the_prompt_carries_the_question_and_both_answers():
    messages = judge_messages(" Which lobe? ", "right upper lobe", "RUL")
    assert [m["role"] for m in messages] == ["user"]
    text = messages[0]["content"]
    assert "Question: Which lobe?" in text
    assert "Reference answer: right upper lobe" in text
    assert "User's answer: RUL" in text
    assert '"correct"' in text


def test_replies_are_parsed():
    assert parse_judge_reply('{"rationale": "same lobe", "correct": 1}') == JudgeVerdict(True, "same lobe")
    assert parse_judge_reply('```json\n{"correct": 0, "rationale": "other side"}\n```').correct is False
    assert parse_judge_reply('Sure. {"correct": "true"}').correct is True
    assert parse_judge_reply('{"x": {"y": 1}} then {"correct": 0}').correct is False


def test_unreadable_replies_give_no_verdict():
    for reply in (None, "", "correct", '{"correct": 2}', '{"verdict": 1}', "<judge>0</judge>"):
        verdict = parse_judge_reply(reply)
        assert verdict.correct is None and verdict.rationale
        assert dict(verdict_extra(verdict))[JUDGE_KEY] == ""


def test_a_verdict_becomes_extra_entries():
    entries = dict(verdict_extra(JudgeVerdict(True, "ok")))
    assert entries[JUDGE_KEY] == "1"
    assert dict(verdict_extra(JudgeVerdict(False, "no")))[JUDGE_KEY] == "0"
    assert verdict_extra(None) == ((JUDGE_KEY, ""),)  # not judged, but the run used the judge
