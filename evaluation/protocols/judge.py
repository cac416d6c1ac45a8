"""The LLM judge's prompt and the parsing of its reply: pure functions, no endpoint.

MedEvalKit-style (alibaba-damo-academy/MedEvalKit 9b12e3b, utils/utils.py
get_compare_messages): one question, its reference answer and the model's answer go to a
judge model, which answers with a verdict per answer and a short rationale; an answer that
means the same as the reference, or is another reading of it, is correct. MedEvalKit asks
for ``<think>...</think><judge>0|1</judge>`` with 0 meaning correct; we ask for one JSON
object with ``correct`` 1 (correct) or 0 (wrong) and a ``rationale``, which reads the same
way as every other score here. The wording is ours.

The caller (``omnivmed-eval --judge ENDPOINT``) sends :func:`judge_messages` to the
endpoint, parses the reply with :func:`parse_judge_reply`, and records the verdict on the
item as ``("judge_correct", "1" | "0")`` in ``EvalItem.extra`` (:data:`JUDGE_KEY`), with the
rationale under ``"judge_rationale"``. An item the judge did not see or whose reply could
not be read gets ``("judge_correct", "")``: the entry's presence on any item is what tells
a protocol (``medevalkit``) that the run used the judge, so every item of a judged run
should carry it; anything but "1" counts as wrong, as MedEvalKit counts a failed call.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

JUDGE_PROMPT_VERSION = "omnivmed-judge-1"
JUDGE_KEY = "judge_correct"
JUDGE_RATIONALE_KEY = "judge_rationale"

JUDGE_PROMPT = """You grade answers to medical visual questions.

Decide whether the user's answer is correct given the question and the reference answer.
Count it correct when it states the same finding as the reference, in other words, or
gives another valid reading of the reference; count it wrong when it contradicts the
reference, answers something else, hedges between options, or gives no answer.

Question: {question}
Reference answer: {answer}
User's answer: {prediction}

Reply with one JSON object and nothing else:
{{"rationale": "<one or two sentences>", "correct": <1 if correct, 0 if wrong>}}"""


@dataclass(frozen=True)
class JudgeVerdict:
    correct: bool | None  # None: the reply could not be read
    rationale: str


def judge_messages(question: str, answer: str, prediction: str) -> list[dict[str, str]]:
    """Chat messages (OpenAI format) asking the judge about one answer."""
    prompt = JUDGE_PROMPT.format(question=question.strip(), answer=answer.strip(), prediction=prediction.strip())
    return [{"role": "user", "content": prompt}]


_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


def parse_judge_reply(reply: str | None) -> JudgeVerdict:
    """The verdict in a judge reply: the last JSON object holding ``correct`` (1/0, true/false).

    Code fences and text around the object are ignored. Anything else -- no object, no
    ``correct`` key, a value other than 0/1/true/false -- gives ``correct=None`` with the
    reason as the rationale.
    """
    if not reply or not reply.strip():
        return JudgeVerdict(None, "empty judge reply")
    candidates = [match.group(0) for match in _OBJECT.finditer(reply)]
    candidates += re.findall(r"\{[^{}]*\}", reply)
    for text in reversed(candidates):
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            continue
        if not isinstance(data, dict) or "correct" not in data:
            continue
        value = data["correct"]
        rationale = str(data.get("rationale", "")).strip()
        if isinstance(value, bool):
            return JudgeVerdict(value, rationale)
        if isinstance(value, (int, float)) and value in (0, 1):
            return JudgeVerdict(bool(value), rationale)
        if isinstance(value, str) and value.strip().lower() in ("0", "1", "true", "false"):
            return JudgeVerdict(value.strip().lower() in ("1", "true"), rationale)
        return JudgeVerdict(None, f"unreadable verdict {value!r}")
    return JudgeVerdict(None, "no JSON object with a 'correct' field in the judge reply")


def verdict_extra(verdict: JudgeVerdict | None) -> tuple[tuple[str, str], ...]:
    """The ``EvalItem.extra`` entries for a verdict: "1"/"0", or "" for no verdict (None: not judged)."""
    if verdict is None:
        return ((JUDGE_KEY, ""),)
    value = "" if verdict.correct is None else ("1" if verdict.correct else "0")
    return ((JUDGE_KEY, value), (JUDGE_RATIONALE_KEY, verdict.rationale))
