"""``--judge URL --judge-model NAME``: an LLM judge's verdict (1/0 with a rationale) on every answer, MedEvalKit-style.

The prompt and the parser are the protocols' (``omnivmed.evaluation.protocols.judge``); the
requests go through the same client, retries and reply cache as endpoint predictions, so a
judged run killed half-way pays only for the verdicts it never received. Every item of a
judged run carries ``judge_correct``: "1", "0", or "" when the reply could not be read (the
protocols count anything but "1" as wrong, as MedEvalKit counts a failed judge call). An
empty prediction is judged wrong without asking. Verdicts are kept for audit in
``OUT/<benchmark>/judgments.jsonl``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

from omnivmed.data.fileio import atomic_write_bytes
from omnivmed.evaluation.items import EvalItem
from omnivmed.evaluation.protocols.judge import JUDGE_KEY, JUDGE_PROMPT_VERSION, JUDGE_RATIONALE_KEY, JudgeVerdict, judge_messages, parse_judge_reply, verdict_extra
from omnivmed.eval_predict import ENDPOINT_NAME, EndpointSettings, ask_all

JUDGMENTS_NAME = "judgments.jsonl"


@dataclass
class Judged:
    items: list[EvalItem]
    failed: int  # requests with no reply after every retry (asked again by the next run)
    unreadable: int  # replies without a readable verdict (recorded as "")
    sent: int
    cached: int


def judge_request(benchmark: str, item: EvalItem, settings: EndpointSettings):
    from omnivmed.rejection_sampling.chat_request import ChatRequest, Message

    messages = tuple(Message(m["role"], (m["content"],)) for m in judge_messages(item.question, item.answer, item.prediction))
    return ChatRequest(
        stage=f"judge:{benchmark}",
        endpoint=ENDPOINT_NAME,
        model=settings.model,
        messages=messages,
        temperature=0.0,
        top_p=1.0,
        max_tokens=settings.max_tokens,
        seed=0,
        response_format=None,
        clip_id=item.question_id,
        candidate=0,
        attempt=0,
        prompt_version=JUDGE_PROMPT_VERSION,
    )


def judge_items(benchmark: str, items: Sequence[EvalItem], settings: EndpointSettings, cache_path: Path, out: Path | None = None) -> Judged:
    asked = [i for i, item in enumerate(items) if item.prediction.strip()]
    answers = ask_all(settings, cache_path, [judge_request(benchmark, items[i], settings) for i in asked])
    replies = dict(zip(asked, answers.replies))
    judged, rows, failed, unreadable = [], [], 0, 0
    for i, item in enumerate(items):
        failure = None
        if i not in replies:
            verdict = JudgeVerdict(False, "no prediction")
        else:
            content, failure = replies[i]
            verdict = JudgeVerdict(None, failure) if failure else parse_judge_reply(content)
        failed += failure is not None
        unreadable += failure is None and verdict.correct is None
        extra = verdict_extra(verdict) or ((JUDGE_KEY, ""), (JUDGE_RATIONALE_KEY, verdict.rationale))
        judged.append(replace(item, extra=tuple(kv for kv in item.extra if kv[0] not in (JUDGE_KEY, JUDGE_RATIONALE_KEY)) + extra))
        rows.append({"question_id": item.question_id, "correct": None if verdict.correct is None else int(verdict.correct), "rationale": verdict.rationale, "failed": failure})
    if out is not None:
        text = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)
        atomic_write_bytes(Path(out) / benchmark / JUDGMENTS_NAME, text.encode())
    return Judged(judged, failed, unreadable, answers.sent, answers.cached)
