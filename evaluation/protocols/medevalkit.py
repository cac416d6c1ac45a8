"""MedEvalKit's Med-VQA scoring (VQA-RAD, SLAKE, PathVQA), reproduced, and ``medevalkit-fixed``.

Source: alibaba-damo-academy/MedEvalKit 9b12e3b: ``utils/utils.py`` (parse_response,
judge_judgement, judge_close_end_vqa, judge_open_end_vqa, calculate_f1, bleu, rouge, extract),
``utils/VQA_RAD/VQA_RAD.py`` and ``utils/PATH_VQA/PATH_VQA.py`` (identical ``cal_metrics``) and
``utils/SLAKE/SLAKE.py``; ``mathruler.grader.extract_boxed_content``; issue 30.

Answer extraction. ``boxed(text)`` = the inside of the last ``\\boxed{...}`` (braces balanced,
stripped) or the string "None"; ``tag(text, t)`` = the contents of every ``<t>...</t>`` joined
by spaces, or the text itself when there is none. ``parse_response(r)``: lowercase; if
"boxed" occurs, r = boxed(r) (which is "None" when only the word occurs); elif "<answer>"
occurs, r = tag(r, "answer"); then for each of "**answer**:", "**answer**", "*answer*:",
"**answer:**", "answer is", "answer:", "答案:", "final answer", "final answer is" in order,
if it occurs r = the text after its last occurrence (no strip).

Per item (VQA-RAD and PathVQA, and any item without a ``benchmark`` of SLAKE): the
response becomes boxed(r) when that is not "None", else tag(r, "answer") when "<answer>"
occurs; answer and response are lowercased and stripped. An answer of "yes"/"no" makes a
closed question (``answer_type`` is ignored):
- closed: r' = parse_response(r) with "\\n" and "." deleted; correct iff exactly one of
  the substrings "yes"/"no" occurs in r' (so "no" inside "nodule" counts) and the answer
  is a substring of r'.
- open (any other answer): r' = parse_response(r); "em" = r' == answer; "bleu1".."bleu4" =
  NLTK sentence_bleu with uniform weights 1/n on tokens from lower(), "." -> " .",
  split(" "); "rouge1"/"rouge2"/"rougel" = the F of the ``rouge`` package's get_scores;
  "precision"/"recall"/"f1" from calculate_f1 over word *sets*.
SLAKE (``benchmark`` slake): the response is not lowercased or stripped before
parse_response; ``answer_type`` decides; a closed answer that is literally "yes"/"no" uses
the closed rule, any other closed answer (SLAKE's own "Yes"/"No" included, they are
capitalised) is correct iff parse_response(r) with "\\n" and "." deleted equals the
lowercased answer.

Metrics (fractions): "total metrics/{total,right,acc}", "open/{total,right,acc,bleu1,bleu2,
bleu3,bleu4,rouge1,rouge2,rougel,precision,recall,f1,em}", "close/{total,right,acc}"; every
open metric is its sum over open items divided by the open count.

LLM judge (MedEvalKit's USE_LLM_JUDGE): on when any item carries the ``judge_correct``
entry in ``EvalItem.extra`` ("1" correct, "0" wrong, "" not judged; see ``judge.py``), so a
run with the judge should give the entry to every item, even ones the judge did not see,
for a group of closed questions to be scored in judge mode too. An item without "1"
counts as a judge miss, as a failed judge call does in MedEvalKit.

Defects reproduced here, corrected by ``medevalkit-fixed``:
1. calculate_f1 returns (f1, precision, recall) but judge_open_end_vqa unpacks
   (precision, recall, f1): "open/precision" holds F1, "open/recall" holds precision and
   "open/f1" holds recall.
2. "open/acc" is divided by the open count twice (the division loop runs over the "acc"
   key it has just set): it reports right / total**2.
3. With the judge, VQA_RAD.py/PATH_VQA.py reset the total, open and closed right counts to
   0 and add back only the judged open answers: closed accuracy becomes 0 and the total
   loses every closed hit (issue 30).
4. With the judge, SLAKE.py judges every question, closed ones too, and adds the judge's
   hits on top of the rule-based closed hits, so closed questions count twice.
5. SLAKE's closed test compares the raw answer to "yes"/"no"; SLAKE's answers are "Yes"/"No",
   so its yes/no rule never runs and closed answers need an exact match.
6. calculate_f1 returns a bare 0 when either side has no words, and the ``rouge`` package
   raises on an empty hypothesis or reference: an empty (or all-period) prediction stops
   MedEvalKit's run. Both variants score such an item's ROUGE/P/R/F1 as 0; the plain
   variant counts them in "open/would_crash".
7. The yes/no test works on substrings: "no" occurs in "nodule", "normal", "not", "know", so
   "Yes, there is a nodule." is wrong for "yes" (both seem present) and "Nodule." is right
   for "no".
Fixed: P/R/F1 in their places, "open/acc" = right/total, the judge scores open questions
only and closed questions keep their rule-based hits (for SLAKE too), SLAKE's closed test
lowercases the answer first, and the yes/no test looks for the whole words "yes"/"no" (and
the answer as a whole word). Everything else -- extraction, BLEU, ROUGE, the exact match
of open and non-yes/no closed answers -- is unchanged.

Not reproduced: MedEvalKit's judge prompt wording (ours is in ``judge.py``) and, in an
earlier revision (c3651c9), get_compare_messages called with five arguments for a
three-parameter function (issue 30) -- a TypeError, not a score.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Sequence

from omnivmed.evaluation.items import OPEN, EvalItem
from omnivmed.evaluation.protocols.base import UNAVAILABLE, Metrics, Protocol
from omnivmed.evaluation.protocols.common import (
    SLAKE,
    benchmark_kind,
    extra,
    nltk_sentence_bleu,
    optional_import,
    ratio,
)
from omnivmed.evaluation.protocols.judge import JUDGE_KEY

SOURCE = (
    "alibaba-damo-academy/MedEvalKit 9b12e3b: utils/utils.py, utils/VQA_RAD/VQA_RAD.py, "
    "utils/PATH_VQA/PATH_VQA.py, utils/SLAKE/SLAKE.py; mathruler.grader.extract_boxed_content; issue 30"
)
RULES = (
    "Answer extracted (\\boxed{}, <answer>, 'answer is' patterns). Closed (answer yes/no): exactly one of the "
    "substrings 'yes'/'no' and the answer a substring. SLAKE non-yes/no closed: exact after deleting '\\n' and '.'. "
    "Open: exact match, BLEU-1..4 (NLTK), ROUGE-1/2/L F (rouge package), token-set P/R/F1. Optional LLM judge "
    "verdicts replace the open exact match. Fractions."
)
FIXED_RULES = (
    "As medevalkit, with precision/recall/f1 in their places, open acc = right/total, the judge scoring open "
    "questions only (closed keep their rule hits), SLAKE's yes/no test on the lowercased answer, yes/no "
    "matched as whole words."
)
DEFECTS = (
    "calculate_f1 returns (f1, precision, recall), callers unpack (precision, recall, f1): the three are mislabelled",
    "open acc is divided by the open count twice (right / total**2)",
    "judge mode in VQA_RAD.py/PATH_VQA.py resets the closed (and total) right count and never restores it "
    "(issue 30)",
    "judge mode in SLAKE.py judges closed questions too and adds the hits on top of the rule hits (issue 30)",
    "SLAKE's closed yes/no test compares the raw answer ('Yes'/'No') to lowercase 'yes'/'no', so it never applies",
    "an empty prediction crashes the run (calculate_f1 returns a bare 0; rouge raises); counted in "
    "open/would_crash",
    "the yes/no test is on substrings: 'no' inside 'nodule'/'normal'/'not' counts as a 'no'",
)

OPEN_SUMS = ("bleu1", "bleu2", "bleu3", "bleu4", "rouge1", "rouge2", "rougel", "precision", "recall", "f1", "em")
ANSWER_PATTERNS = (
    "**answer**:", "**answer**", "*answer*:", "**answer:**", "answer is", "answer:", "答案:", "final answer",
    "final answer is",
)


# --- text handling, as utils/utils.py does it --------------------------------------------------


def boxed(text: str) -> str:
    """mathruler's extract_boxed_content: the last \\boxed{...}'s inside, or "None"."""
    start = text.rfind("\\boxed{")
    if start == -1:
        return "None"
    content = text[start + len("\\boxed{") :]
    depth = 0
    for index, char in enumerate(content):
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        if depth == -1:
            return content[:index].strip()
    return "None"


def tag(text: str, name: str) -> str:
    """``extract(text, name)``: every <name>...</name> inside, joined by spaces; the text if none."""
    if not text:
        return ""
    opening, closing = f"<{name}>", f"</{name}>"
    found = ""
    start = text.find(opening)
    while start != -1:
        end = text.find(closing, start + len(opening))
        if end == -1:
            break
        found += text[start + len(opening) : end] + " "
        start = text.find(opening, end + len(closing))
    return found.strip() or text


def parse_response(response: str) -> str:
    response = response.lower()
    if "boxed" in response:
        response = boxed(response)
    elif "<answer>" in response:
        response = tag(response, "answer")
    for pattern in ANSWER_PATTERNS:
        if pattern in response:
            response = response.split(pattern)[-1]
    return response


def preextract(response: str) -> str:
    """What cal_metrics does before anything else: \\boxed{} content, else <answer> content."""
    inside = boxed(response)
    if inside != "None":
        return inside
    if "<answer>" in response:
        return tag(response, "answer")
    return response


def yes_no_correct(answer: str, response: str) -> bool:
    """judge_judgement."""
    answer = answer.lower()
    response = parse_response(response).replace("\n", "").replace(".", "")
    if ("yes" in response) ^ ("no" in response):
        return answer in response
    return False


def yes_no_words_correct(answer: str, response: str) -> bool:
    """medevalkit-fixed: judge_judgement on whole words ("nodule" holds no "no")."""
    words = set(re.findall(r"[^\W_]+", parse_response(response).lower()))
    if ("yes" in words) ^ ("no" in words):
        return answer.lower().strip() in words
    return False


def exact_correct(answer: str, response: str) -> bool:
    """judge_close_end_vqa."""
    return parse_response(response).replace("\n", "").replace(".", "") == answer.lower()


def bleu_tokens(text: str) -> list[str]:
    return text.lower().replace(".", " .").split(" ")


def token_set_scores(prediction: str, truth: str) -> tuple[float, float, float] | None:
    """calculate_f1 as (f1, precision, recall) -- its return order; None where it returns a bare 0."""
    predicted, expected = set(prediction.lower().split()), set(truth.lower().split())
    if not predicted or not expected:
        return None
    common = predicted & expected
    precision, recall = len(common) / len(predicted), len(common) / len(expected)
    if precision + recall == 0:
        return 0.0, 0.0, 0.0
    return 2 * precision * recall / (precision + recall), precision, recall


def rouge_f(prediction: str, truth: str) -> tuple[float, float, float] | None | str:
    """(rouge-1, rouge-2, rouge-l) F from the ``rouge`` package; None where it raises; UNAVAILABLE without it."""
    package = optional_import("rouge")
    if package is None:
        return UNAVAILABLE
    try:
        scores = package.Rouge().get_scores(prediction.lower(), truth.lower())[0]
    except ValueError:  # "Hypothesis is empty." / "Reference is empty."
        return None
    return scores["rouge-1"]["f"], scores["rouge-2"]["f"], scores["rouge-l"]["f"]


@dataclass
class OpenScores:
    values: dict[str, float | None]  # None: the metric's package is absent
    crashed: bool


def open_scores(answer: str, response: str, *, fixed: bool) -> OpenScores:
    """judge_open_end_vqa: answer lowercased, response through parse_response."""
    answer = answer.lower()
    response = parse_response(response)
    values: dict[str, float | None] = {}
    for n in (1, 2, 3, 4):
        values[f"bleu{n}"] = nltk_sentence_bleu(bleu_tokens(answer), bleu_tokens(response), [1 / n] * n)
    values["em"] = float(response == answer)
    crashed = False
    rouge = rouge_f(response, answer)
    if rouge is None:
        crashed = True
        rouge = (0.0, 0.0, 0.0)
    for key, value in zip(("rouge1", "rouge2", "rougel"), rouge if rouge != UNAVAILABLE else (None,) * 3):
        values[key] = value  # type: ignore[assignment]
    f1_first = token_set_scores(response, answer)
    if f1_first is None:
        crashed = True
        f1_first = (0.0, 0.0, 0.0)
    f1, precision, recall = f1_first
    if fixed:
        values.update(precision=precision, recall=recall, f1=f1)
    else:  # MedEvalKit unpacks (f1, precision, recall) as (precision, recall, f1)
        values.update(precision=f1, recall=precision, f1=recall)
    return OpenScores(values, crashed)


def judge_says_correct(item: EvalItem) -> bool:
    return extra(item, JUDGE_KEY).strip() == "1"


def judged(items: Sequence[EvalItem]) -> bool:
    return any(extra(item, JUDGE_KEY, "\0") != "\0" for item in items)


def unavailable_metrics() -> set[str]:
    """Open metrics whose package is not installed here (NLTK for BLEU, ``rouge`` for ROUGE)."""
    missing = set()
    if nltk_sentence_bleu([], [], (1,)) is None:
        missing |= {"bleu1", "bleu2", "bleu3", "bleu4"}
    if optional_import("rouge") is None:
        missing |= {"rouge1", "rouge2", "rougel"}
    return missing


# --- scoring ------------------------------------------------------------------------------------


def make_score(fixed: bool) -> Callable[..., Metrics]:
    def score(items: Sequence[EvalItem], *, candidates: Sequence[str] | None = None) -> Metrics:
        kinds = {benchmark_kind(item) == SLAKE for item in items}
        if len(kinds) > 1:
            raise ValueError("medevalkit scores one benchmark at a time: these items mix SLAKE with others")
        slake = kinds == {True}
        use_judge = judged(items)
        total = {"total": 0, "right": 0}
        close = {"total": 0, "right": 0}
        open_ = {"total": 0, "right": 0}
        sums = {name: 0.0 for name in OPEN_SUMS}
        unavailable = unavailable_metrics()
        crashes = 0
        judge_open = judge_closed = 0
        for item in items:
            response = preextract(item.prediction)
            if slake:
                answer = item.answer
                is_open = item.answer_type == OPEN
            else:
                answer = item.answer.lower().strip()
                response = response.lower().strip()
                is_open = answer not in ("yes", "no")
            total["total"] += 1
            if is_open:
                open_["total"] += 1
                result = open_scores(answer, response, fixed=fixed)
                crashes += result.crashed
                if result.values["em"]:
                    total["right"] += 1
                    open_["right"] += 1
                for name in OPEN_SUMS:
                    sums[name] += result.values[name] or 0.0
                if use_judge and judge_says_correct(item):
                    judge_open += 1
            else:
                close["total"] += 1
                yes_no = answer.lower().strip() if (slake and fixed) else answer
                if not slake or yes_no in ("yes", "no"):
                    correct = (yes_no_words_correct if fixed else yes_no_correct)(yes_no, response)
                else:
                    correct = exact_correct(answer, response)
                if correct:
                    total["right"] += 1
                    close["right"] += 1
                if use_judge and judge_says_correct(item):
                    judge_closed += 1

        if use_judge:
            if fixed:
                open_["right"] = judge_open
                total["right"] = close["right"] + judge_open
            elif slake:  # SLAKE.py: keep closed rule hits, add every judge hit (closed ones again)
                total["right"] = close["right"] + judge_open + judge_closed
                open_["right"] = judge_open
                close["right"] += judge_closed
            else:  # VQA_RAD.py / PATH_VQA.py: all three reset, only judged open answers added back
                open_["right"] = judge_open
                close["right"] = 0
                total["right"] = judge_open

        open_acc = ratio(open_["right"], open_["total"])
        if not fixed:  # the division loop also divides the freshly set "acc"
            open_acc = ratio(open_acc, open_["total"])
        metrics: Metrics = {
            "total metrics/total": float(total["total"]),
            "total metrics/right": float(total["right"]),
            "total metrics/acc": ratio(total["right"], total["total"]),
            "open/total": float(open_["total"]),
            "open/right": float(open_["right"]),
        }
        for name in OPEN_SUMS:
            metrics[f"open/{name}"] = UNAVAILABLE if name in unavailable else ratio(sums[name], open_["total"])
        metrics["open/acc"] = open_acc
        metrics["close/total"] = float(close["total"])
        metrics["close/right"] = float(close["right"])
        metrics["close/acc"] = ratio(close["right"], close["total"])
        if not fixed:
            metrics["open/would_crash"] = float(crashes)
        return metrics

    return score


PROTOCOL = Protocol(name="medevalkit", source=SOURCE, rules=RULES, defects=DEFECTS, score=make_score(False))
FIXED = Protocol(name="medevalkit-fixed", source=SOURCE, rules=FIXED_RULES, defects=(), score=make_score(True))
