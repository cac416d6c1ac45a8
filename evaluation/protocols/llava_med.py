"""LLaVA-Med v1.0.0's VQA scorer, reproduced: its metric names, its percent, its quirks.

Source: microsoft/LLaVA-Med, tag v1.0.0: ``llava/eval/run_eval.py`` (``evaluate``) with
``llava/eval/eval_metrics/evaluate_metrics.py`` (calculate_exactmatch, calculate_f1score,
calculate_appearance_with_normalization), ``glossary.py`` (normalize_word) and ``utils.py``
(split_sentence). Read at commit ad758b687d4e (run_eval.py, evaluate_metrics.py, utils.py) and
356ba559f471 (glossary.py); the closed branch is the one after pull request 35 (see below).

Rules, per item (``answer_type`` decides the branch; anything else is skipped):

- ``gt`` = normalize_word(answer.lower()), ``pred`` = normalize_word(prediction.lower()).
- CLOSED: if the substring "yes" or "no" occurs anywhere in ``pred`` (so "no" inside
  "nodule", "know", "not", "normal"), the hit is 1 when ``gt`` is a substring of ``pred``,
  else 0; without either substring the hit is 0. Both "yes" and "no" in one answer count
  as correct for either truth.
- OPEN, each on pred/gt normalised a second time:
  - "exact match score": distinct reference words found in the prediction divided by the
    prediction's word count (with repeats) -- a precision, not an exact match.
  - "precision"/"recall"/"f1 score": over the union of word types, tp adds the
    prediction's count of each shared word, fp the prediction's count of each word not in
    the reference, fn the reference's count of each word not in the prediction;
    precision = tp/(tp+fp), recall = tp/(tp+fn); all three are 0 when either side has no
    words or tp is 0.
  - "open accuracy": every candidate answer is normalised; its score is the number of
    distinct prediction words among the candidate's words divided by the candidate's
    distinct word count (0 for an empty candidate); the first best candidate is the
    answer, a hit when it equals the reference. Candidates are the ``candidates`` argument
    in its order (LLaVA-Med's candidate.json was never released, issue 28) or, when None,
    the distinct ground-truth answers of all the items in first-seen order.
  - "bleu_score", "bleu_score_1/2/3": NLTK ``sentence_bleu`` (no smoothing) of pred's
    words against gt's words (once-normalised, split on whitespace) with the default
    weights (0.25 x 4) and with (1,0,0,0), (0,1,0,0), (0,0,1,0).
- Every metric is a mean times 100. "num_open" and "num_close" are the counts LLaVA-Med
  prints, swapped as it swaps them: "num_open" is the number of closed items and
  "num_close" the number of open ones.

Empty input: LLaVA-Med divides by zero when there is no open item; here every mean of an
empty set is 0.0. An explicitly empty candidate list makes "open accuracy" unavailable
(LLaVA-Med's argmax would fail). Without NLTK the four BLEU metrics are unavailable.

Before pull request 35 ("fix closed accuracy calculation", merged before the v1.0.0 tag) a
closed answer that contained "yes"/"no" but not the truth appended nothing, so misses left
the denominator; the tagged code appends 0, which is what this reproduces.
"""

from __future__ import annotations

from typing import Sequence

from omnivmed.evaluation.items import CLOSED, OPEN, EvalItem
from omnivmed.evaluation.protocols.base import UNAVAILABLE, Metrics, Protocol
from omnivmed.evaluation.protocols.common import mean, nltk_sentence_bleu, vqa_normalize, word_counts

NAME = "llava-med"
SOURCE = (
    "microsoft/LLaVA-Med tag v1.0.0 (read at ad758b687d4e / 356ba559f471): llava/eval/run_eval.py, "
    "llava/eval/eval_metrics/evaluate_metrics.py, glossary.py, utils.py"
)
RULES = (
    "Lowercase + normalize_word (VQA punctuation, number words, articles, contractions). "
    "CLOSED: hit iff the prediction contains the substring 'yes' or 'no' and contains the truth as a substring. "
    "OPEN: 'exact match score' = reference words found / prediction word count; token precision/recall/f1; "
    "NLTK sentence_bleu (default and 1/2/3-gram weights); 'open accuracy' = first candidate with the "
    "highest word overlap equals the truth. Percent. num_open/num_close printed swapped."
)
DEFECTS = (
    "closed hit is a substring test: 'no' matches inside 'nodule', 'know', 'not'; a prediction holding both "
    "'yes' and 'no' is correct whatever the truth (issue 12)",
    "'exact match score' is a precision: distinct reference words present / prediction word count",
    "token precision/recall count a shared word with the prediction's multiplicity, so recall can exceed "
    "the share of reference words recalled",
    "'open accuracy' needs candidate.json, never released (issue 28); an all-zero overlap picks the first "
    "candidate",
    "num_open and num_close are printed swapped",
)

BLEU_WEIGHTS = {
    "bleu_score": (0.25, 0.25, 0.25, 0.25),
    "bleu_score_1": (1, 0, 0, 0),
    "bleu_score_2": (0, 1, 0, 0),
    "bleu_score_3": (0, 0, 1, 0),
}


def normalized_pair(item: EvalItem) -> tuple[str, str]:
    """(gt, pred) as LLaVA-Med's ``evaluate`` holds them: lowercased, then normalize_word."""
    return vqa_normalize(item.answer.lower()), vqa_normalize(item.prediction.lower())


def closed_hit(gt: str, pred: str) -> int:
    if "yes" in pred or "no" in pred:
        return 1 if gt in pred else 0
    return 0


def exact_match_score(pred: str, gt: str) -> float:
    """calculate_exactmatch: distinct reference words present / prediction words (with repeats)."""
    candidate, reference = word_counts(vqa_normalize(pred)), word_counts(vqa_normalize(gt))
    total = sum(candidate.values())
    if total == 0:
        return 0.0
    return sum(1 for word in reference if word in candidate) / total


def f1_precision_recall(pred: str, gt: str) -> tuple[float, float, float]:
    """calculate_f1score: (f1, precision, recall) with its counting."""
    candidate, reference = word_counts(vqa_normalize(pred)), word_counts(vqa_normalize(gt))
    if not candidate or not reference:
        return 0.0, 0.0, 0.0
    tp = fp = fn = 0
    for word in set(candidate) | set(reference):
        if word in candidate and word in reference:
            tp += candidate[word]
        elif word in candidate:
            fp += candidate[word]
        else:
            fn += reference[word]
    if tp == 0:
        return 0.0, 0.0, 0.0
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    return 2 * precision * recall / (precision + recall), precision, recall


def candidate_overlap(candidate: str, prediction_words: Sequence[str]) -> float:
    """similarity_candidate_prediction: prediction word types in the candidate / candidate word types."""
    words = word_counts(candidate)
    if not words:
        return 0.0
    return sum(1 for word in prediction_words if word in words) / len(words)


def open_hit(pred: str, gt: str, normalized_candidates: Sequence[str]) -> float:
    """calculate_appearance_with_normalization with candidates already normalised."""
    prediction_words = list(word_counts(vqa_normalize(pred)))
    reference = vqa_normalize(gt)
    scores = [candidate_overlap(candidate, prediction_words) for candidate in normalized_candidates]
    chosen = normalized_candidates[scores.index(max(scores))]
    return 1.0 if chosen == reference else 0.0


def default_candidates(items: Sequence[EvalItem]) -> list[str]:
    """The distinct ground-truth answers of the items, in first-seen order."""
    return list(dict.fromkeys(item.answer for item in items))


def score(items: Sequence[EvalItem], *, candidates: Sequence[str] | None = None) -> Metrics:
    pool = default_candidates(items) if candidates is None else list(candidates)
    normalized_candidates = [vqa_normalize(str(candidate)) for candidate in pool]
    closed_hits: list[int] = []
    open_hits: list[float] = []
    exact: list[float] = []
    f1s: list[float] = []
    precisions: list[float] = []
    recalls: list[float] = []
    bleus: dict[str, list[float | None]] = {name: [] for name in BLEU_WEIGHTS}  # None: NLTK absent
    for item in items:
        gt, pred = normalized_pair(item)
        if item.answer_type == OPEN:
            if normalized_candidates:
                open_hits.append(open_hit(pred, gt, normalized_candidates))
            exact.append(exact_match_score(pred, gt))
            f1, precision, recall = f1_precision_recall(pred, gt)
            f1s.append(f1)
            precisions.append(precision)
            recalls.append(recall)
            for name, weights in BLEU_WEIGHTS.items():
                bleus[name].append(nltk_sentence_bleu(gt.lower().split(), pred.lower().split(), weights))
        elif item.answer_type == CLOSED:
            closed_hits.append(closed_hit(gt, pred))

    n_open = len(exact)
    metrics: Metrics = {
        "exact match score": mean(exact) * 100,
        "f1 score": mean(f1s) * 100,
        "precision": mean(precisions) * 100,
        "recall": mean(recalls) * 100,
    }
    bleu_available = nltk_sentence_bleu([], [], (1,)) is not None
    for name, values in bleus.items():
        metrics[name] = mean(values) * 100 if bleu_available else UNAVAILABLE  # type: ignore[arg-type]
    if n_open and not normalized_candidates:
        metrics["open accuracy"] = UNAVAILABLE
    else:
        metrics["open accuracy"] = mean(open_hits) * 100
    metrics["yes/no accuracy"] = mean(closed_hits) * 100
    metrics["num_open"] = float(len(closed_hits))  # swapped, as LLaVA-Med prints it
    metrics["num_close"] = float(n_open)
    return metrics


PROTOCOL = Protocol(name=NAME, source=SOURCE, rules=RULES, defects=DEFECTS, score=score)
