"""M3D-Bench's VQA scorer (M3D-VQA), reproduced, and ``m3d-fixed``.

Source: BAAI-DCAI/M3D 63e7200, ``Bench/eval/eval_vqa.py`` (read at 8d263bf53477) with the
Hugging Face ``evaluate`` metrics it loads (bleu, rouge, meteor, bertscore) and
``Bench/dataset/multi_dataset.py`` (VQADataset: the closed target is "<letter>. <answer>").

Rules. M3D writes one CSV row per question; the means are taken per "Question Type"
(plane, phase, organ, abnormality, location, from ``EvalItem.question_type``) and over all
items ("all/..."); values are fractions in [0, 1] as in the CSV.

- Closed (items with ``answer_choice``): "Correct" = 1 iff the string "<letter>." (the answer
  letter and a period, case-sensitive) occurs anywhere in the output.
- Open: prediction and answer are stripped of surrounding whitespace, then
  - "bleu": ``evaluate``'s bleu with max_order=1 (BLEU-1: tokenizer 13a, clipped unigram
    precision times the brevity penalty exp(1 - r/c) when c <= r, no smoothing);
  - "rouge1": ``evaluate``'s rouge (the ``rouge_score`` package, no stemming) ROUGE-1 F;
  - "meteor": ``evaluate``'s meteor (NLTK ``meteor_score``, alpha 0.9, beta 3, gamma 0.5,
    on NLTK ``word_tokenize`` tokens) -- needs NLTK's wordnet and punkt data;
  - "bert_f1": ``evaluate``'s bertscore with lang="en" (roberta-large) -- needs the
    ``bert_score`` package and the model in the local cache.
  A metric whose package or data is missing is reported as unavailable.
- "count" per type: the number of items behind each mean.

Defects the plain variant reproduces; ``m3d-fixed`` corrects them:
- "<letter>." is a substring test: "A." inside "DNA." or "CTA." counts, and an output
  listing several options ("A. ... B. ...") is correct for each of them. Fixed: the
  first choice letter standing alone before a period (not preceded by a letter or digit)
  must be the answer letter.
- BLEU divides by the prediction length: an empty prediction (or answer) raises
  ZeroDivisionError in ``evaluate``'s bleu and stops M3D's run. Both variants score it 0;
  the plain variant counts such items in "all/would_crash".
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from typing import Callable, Sequence

from omnivmed.evaluation.items import CLOSED, EvalItem
from omnivmed.evaluation.protocols.base import UNAVAILABLE, Metrics, Protocol
from omnivmed.evaluation.protocols.common import M3D_QUESTION_TYPES, mean, nltk_data_available, optional_import

SOURCE = (
    "BAAI-DCAI/M3D 63e7200 (read at 8d263bf53477): Bench/eval/eval_vqa.py, Bench/dataset/multi_dataset.py; "
    "Hugging Face evaluate metrics bleu (max_order=1), rouge (rouge1), meteor, bertscore (lang=en)"
)
RULES = (
    "Closed: Correct iff '<answer letter>.' occurs in the output. Open (stripped): BLEU-1 (evaluate, "
    "tokenizer 13a), ROUGE-1 F (rouge_score), METEOR (NLTK, needs wordnet), BERTScore F1 (roberta-large). "
    "Means per question type and over all items, fractions."
)
FIXED_RULES = (
    "As m3d, but closed: the first choice letter standing alone before a period must be the answer letter "
    "('A.' inside 'DNA.' no longer counts)."
)
DEFECTS = (
    "closed rule is a substring test: 'A.' inside 'DNA.'/'CTA.' counts, and listing several options is "
    "correct for each of them",
    "an empty prediction or answer makes evaluate's BLEU divide by zero and stops the run (scored 0 here, "
    "counted in all/would_crash)",
)


# --- closed -------------------------------------------------------------------------------------

STANDALONE_LETTER = re.compile(r"(?<![A-Za-z0-9])([A-D])\.")


def m3d_closed_correct(item: EvalItem) -> int:
    """M3D: 1 iff "<answer letter>." occurs in the output."""
    return int(bool(item.answer_choice) and (item.answer_choice + ".") in item.prediction)


def fixed_closed_correct(item: EvalItem) -> int:
    """m3d-fixed: the first standalone "<letter>." in the output is the answer letter."""
    match = STANDALONE_LETTER.search(item.prediction)
    return int(match is not None and match.group(1) == item.answer_choice.strip().upper())


# --- open ---------------------------------------------------------------------------------------

_13A_RULES = (
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),  # symbols
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),  # period/comma unless preceded by a digit
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),  # period/comma unless followed by a digit
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),  # dash after a digit
)


def tokenize_13a(line: str) -> list[str]:
    """The "13a" tokenizer of sacrebleu as ``evaluate``'s bleu uses it."""
    line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        line = line.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    line = f" {line} "
    for pattern, replacement in _13A_RULES:
        line = pattern.sub(replacement, line)
    return line.split()


def bleu1(prediction: str, reference: str) -> float | None:
    """``evaluate``'s bleu(max_order=1); None where it would divide by zero."""
    hypothesis, ref = tokenize_13a(prediction), tokenize_13a(reference)
    if not hypothesis or not ref:
        return None
    matches = sum((Counter(hypothesis) & Counter(ref)).values())
    precision = matches / len(hypothesis)
    geo_mean = math.exp(math.log(precision)) if precision > 0 else 0
    length_ratio = len(hypothesis) / len(ref)
    brevity = 1.0 if length_ratio > 1.0 else math.exp(1 - 1.0 / length_ratio)
    return geo_mean * brevity


def rouge1_scorer() -> Callable[[str, str], float] | None:
    """ROUGE-1 F as ``evaluate``'s rouge computes it for one pair; None without ``rouge_score``."""
    scorer_module = optional_import("rouge_score.rouge_scorer")
    if scorer_module is None:
        return None
    scorer = scorer_module.RougeScorer(["rouge1"], use_stemmer=False)
    return lambda prediction, reference: float(scorer.score(reference, prediction)["rouge1"].fmeasure)


def meteor_scorer() -> Callable[[str, str], float] | None:
    """NLTK METEOR as ``evaluate``'s meteor computes it; None without NLTK's wordnet and punkt data."""
    if not nltk_data_available("corpora/wordnet", "tokenizers/punkt_tab"):
        return None
    from nltk import word_tokenize
    from nltk.translate import meteor_score

    def meteor(prediction: str, reference: str) -> float:
        return float(
            meteor_score.meteor_score(
                [word_tokenize(reference)], word_tokenize(prediction), alpha=0.9, beta=3, gamma=0.5
            )
        )

    return meteor


def bert_f1(predictions: Sequence[str], references: Sequence[str]) -> list[float] | None:
    """BERTScore F1 (roberta-large, layer 17, no rescaling) when the package and model are local."""
    bert_score = optional_import("bert_score")
    hub = optional_import("huggingface_hub")
    if bert_score is None or hub is None or not predictions:
        return None
    if not isinstance(hub.try_to_load_from_cache("roberta-large", "config.json"), str):
        return None
    try:
        _, _, f1 = bert_score.score(list(predictions), list(references), lang="en", verbose=False)
    except Exception:  # noqa: BLE001 - any failure to load or run the model means: not available here
        return None
    return [float(x) for x in f1]


# --- scoring ------------------------------------------------------------------------------------

OPEN_METRICS = ("bleu", "rouge1", "meteor", "bert_f1")


def question_type(item: EvalItem) -> str:
    return item.question_type.strip().lower() or "unknown"


def make_score(closed_rule: Callable[[EvalItem], int], count_crashes: bool) -> Callable[..., Metrics]:
    def score(items: Sequence[EvalItem], *, candidates: Sequence[str] | None = None) -> Metrics:
        rouge, meteor = rouge1_scorer(), meteor_scorer()
        rows: dict[str, dict[str, list[float | None]]] = defaultdict(lambda: defaultdict(list))
        crashes = 0
        open_items: list[tuple[str, str, str]] = []
        for item in items:
            kind = question_type(item)
            if item.answer_choice or item.choices or item.answer_type == CLOSED:
                rows[kind]["Correct"].append(float(closed_rule(item)))
                continue
            prediction, answer = item.prediction.strip(), item.answer.strip()
            value = bleu1(prediction, answer)
            if value is None:
                crashes += 1
                value = 0.0
            rows[kind]["bleu"].append(value)
            rows[kind]["rouge1"].append(None if rouge is None else rouge(prediction, answer))
            rows[kind]["meteor"].append(None if meteor is None else meteor(prediction, answer))
            open_items.append((kind, prediction, answer))
        bert = bert_f1([p for _, p, _ in open_items], [a for _, _, a in open_items])
        for index, (kind, _, _) in enumerate(open_items):
            rows[kind]["bert_f1"].append(None if bert is None else bert[index])
        available = {
            "bleu": True, "rouge1": rouge is not None, "meteor": meteor is not None, "bert_f1": bert is not None,
        }

        def summarise(name: str, values: list[float | None]) -> float | str:
            if not available.get(name, True) or any(v is None for v in values):
                return UNAVAILABLE
            return mean(values)  # type: ignore[arg-type]

        metrics: Metrics = {}
        ordered = [t for t in M3D_QUESTION_TYPES if t in rows] + sorted(set(rows) - set(M3D_QUESTION_TYPES))
        for kind in ordered:
            for name in ("Correct", *OPEN_METRICS):
                if name in rows[kind]:
                    metrics[f"{kind}/{name}"] = summarise(name, rows[kind][name])
            metrics[f"{kind}/count"] = float(len(rows[kind].get("Correct", [])) + len(rows[kind].get("bleu", [])))
        for name in ("Correct", *OPEN_METRICS):
            values = [v for kind in ordered for v in rows[kind].get(name, [])]
            metrics[f"all/{name}"] = summarise(name, values)
        metrics["all/count"] = float(len(items))
        if count_crashes:
            metrics["all/would_crash"] = float(crashes)
        return metrics

    return score


PROTOCOL = Protocol(name="m3d", source=SOURCE, rules=RULES, defects=DEFECTS, score=make_score(m3d_closed_correct, True))
FIXED = Protocol(
    name="m3d-fixed", source=SOURCE, rules=FIXED_RULES, defects=(), score=make_score(fixed_closed_correct, False)
)
