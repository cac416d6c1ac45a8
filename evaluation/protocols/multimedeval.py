"""MultiMedEval's VQA scorer (VQA-RAD, SLAKE, PathVQA), reproduced, and ``multimedeval-fixed``.

Source: corentin-ryr/MultiMedEval d9ac283, ``multimedeval/task_families.py`` (class VQA,
``evaluate``; read at 0044b1fd7ebb), ``multimedeval/utils.py`` (clean_str; read at 04578b234ade),
``multimedeval/vqa.py`` (getCorrectAnswer = answer.lower().strip(); the closed prompt
"Answer the following question with yes or no."); torchmetrics ``BLEUScore(n_gram=1)``.

Rules, per item (``answer_type`` is ignored):
- correct = clean_str(answer.lower().strip()), predicted = clean_str(prediction), where
  clean_str is the lowercase + VQA normaliser of the LLaVA-Med lineage (common.py).
- token sets of each (whitespace split, empty token discarded); precision = shared /
  predicted tokens (0 with none), recall = shared / correct tokens (0 with none),
  F1 = 2pr / (p + r + 1e-8).
- bleu: torchmetrics BLEU-1 of predicted against correct (whitespace tokens, clipped
  unigram precision times the brevity penalty exp(1 - r/c) when c <= r, 0 without a
  match), in float32 as torchmetrics computes it: torchmetrics itself when installed, else
  the same steps on torch tensors (bit-identical, checked against torchmetrics 1.x), else
  numpy float32 (within a few float32 ulps, relative 1e-6).
- closed question iff the cleaned answer is "yes" or "no"; for "no" the token "not" joins
  the correct tokens; correct iff |predicted & correct| / |correct| >= 0.4.
- open question otherwise: its recall counts towards "openQuestionsRecall", and it is
  accurate iff recall >= 0.75.
Metrics (fractions, MultiMedEval's names): "bleu", "F1", "recall" (means over *all*
questions, closed included), "closedQuestionsAccuracy", "openQuestionsRecall",
"openQuestionsAccuracy"; an empty group gives 0, as MultiMedEval's own guards do.

Defect reproduced here, corrected by ``multimedeval-fixed``: the closed rule is a recall
threshold, so a prediction naming both answers ("yes or no", "yes, no") is correct
whatever the truth. Fixed: the prediction must take exactly one side -- it holds "yes" and
neither "no" nor "not", or it holds "no" or "not" and not "yes" -- and that side must be
the truth ("not" stays a negative answer, as MultiMedEval intends: "there is not a
fracture" answers "no"). Everything else is unchanged.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable, Sequence

import numpy as np

from omnivmed.evaluation.items import EvalItem
from omnivmed.evaluation.protocols.base import Metrics, Protocol
from omnivmed.evaluation.protocols.common import mean, optional_import, ratio, vqa_normalize

SOURCE = (
    "corentin-ryr/MultiMedEval d9ac283 (read at 0044b1fd7ebb / 04578b234ade): multimedeval/task_families.py "
    "(VQA.evaluate), multimedeval/utils.py (clean_str), multimedeval/vqa.py; torchmetrics BLEUScore(n_gram=1)"
)
RULES = (
    "clean_str (lowercase + VQA normaliser), token sets. Closed (answer yes/no; 'not' added for 'no'): token "
    "recall >= 0.4. Open: recall, accurate iff recall >= 0.75. bleu (BLEU-1), F1, recall averaged over all "
    "questions. Fractions."
)
FIXED_RULES = (
    "As multimedeval, but a closed answer is correct only if it takes exactly one side ('yes' vs 'no'/'not') "
    "and that side is the truth."
)
DEFECTS = (
    "closed rule is a recall threshold: a prediction holding both 'yes' and 'no' is correct whatever the truth",
)


def clean_str(text: str) -> str:
    return vqa_normalize(text.lower())


def token_set(text: str) -> set[str]:
    return set(text.split()) - {""}


def clipped_unigrams(predicted: str, correct: str) -> tuple[int, int, int]:
    """(clipped unigram matches, predicted length, reference length) on whitespace tokens."""
    hypothesis = predicted.split() if predicted else []
    reference = correct.split() if correct else []
    return sum((Counter(hypothesis) & Counter(reference)).values()), len(hypothesis), len(reference)


def bleu1_float32(predicted: str, correct: str) -> float:
    """torchmetrics' BLEU-1 steps in numpy float32 (its log/exp may differ from torch's in the last bit)."""
    matches, c, r = clipped_unigrams(predicted, correct)
    if matches == 0:
        return 0.0
    f32 = np.float32
    geometric_mean = np.exp(f32(1.0) * np.log(f32(matches) / f32(c)))
    brevity = f32(1.0) if c > r else np.exp(f32(1.0) - f32(r) / f32(c))
    return float(f32(brevity * geometric_mean))


def bleu1_torch(torch) -> Callable[[str, str], float]:
    """torchmetrics' BLEU-1 steps on torch float32 tensors: bit for bit what BLEUScore returns."""

    def bleu(predicted: str, correct: str) -> float:
        matches, c, r = clipped_unigrams(predicted, correct)
        if matches == 0:
            return 0.0
        precision = torch.tensor([float(matches)]) / torch.tensor([float(c)])
        geometric_mean = torch.exp(torch.sum(torch.tensor([1.0]) * torch.log(precision)))
        c_t, r_t = torch.tensor(float(c)), torch.tensor(float(r))
        brevity = torch.tensor(1.0) if c_t > r_t else torch.exp(1 - (r_t / c_t))
        return float((brevity * geometric_mean).item())

    return bleu


def bleu1_scorer() -> Callable[[str, str], float]:
    """``BLEUScore(n_gram=1)([predicted], [[correct]])``: torchmetrics itself when installed, else its
    steps on torch tensors (identical), else in numpy float32 (within a few float32 ulps)."""
    torchmetrics_text = optional_import("torchmetrics.text")
    if torchmetrics_text is not None:
        metric = torchmetrics_text.BLEUScore(n_gram=1)
        return lambda predicted, correct: float(metric([predicted], [[correct]]).item())
    torch = optional_import("torch")
    if torch is not None:
        return bleu1_torch(torch)
    return bleu1_float32


def recall_closed(predicted: set[str], correct: set[str]) -> bool:
    """MultiMedEval: recall against the answer (plus "not" for "no") of at least 0.4."""
    expected = set(correct)
    if expected == {"no"}:
        expected.add("not")
    return ratio(len(predicted & expected), len(expected)) >= 0.4


def one_sided_closed(predicted: set[str], correct: set[str]) -> bool:
    """multimedeval-fixed: exactly one side named, and it is the truth."""
    says_yes = "yes" in predicted
    says_no = bool(predicted & {"no", "not"})
    if says_yes == says_no:
        return False
    return says_yes if correct == {"yes"} else says_no


def make_score(closed_rule: Callable[[set[str], set[str]], bool]) -> Callable[..., Metrics]:
    def score(items: Sequence[EvalItem], *, candidates: Sequence[str] | None = None) -> Metrics:
        bleu1 = bleu1_scorer()
        bleus: list[float] = []
        f1s: list[float] = []
        recalls: list[float] = []
        closed_correct: list[bool] = []
        open_recalls: list[float] = []
        for item in items:
            correct_text = clean_str(item.answer.lower().strip())
            predicted_text = clean_str(item.prediction)
            predicted, correct = token_set(predicted_text), token_set(correct_text)
            shared = len(predicted & correct)
            precision = shared / len(predicted) if predicted else 0
            recall = shared / len(correct) if correct else 0
            f1s.append(2 * (precision * recall) / (precision + recall + 1e-8))
            recalls.append(recall)
            bleus.append(bleu1(predicted_text, correct_text))
            if correct_text in ("yes", "no"):
                closed_correct.append(closed_rule(predicted, correct))
            else:
                open_recalls.append(recall)
        return {
            "bleu": mean(bleus),
            "F1": mean(f1s),
            "recall": mean(recalls),
            "closedQuestionsAccuracy": mean(float(c) for c in closed_correct),
            "openQuestionsRecall": mean(open_recalls),
            "openQuestionsAccuracy": mean(float(r >= 0.75) for r in open_recalls),
        }

    return score


PROTOCOL = Protocol(name="multimedeval", source=SOURCE, rules=RULES, defects=DEFECTS, score=make_score(recall_closed))
FIXED = Protocol(
    name="multimedeval-fixed", source=SOURCE, rules=FIXED_RULES, defects=(), score=make_score(one_sided_closed)
)
