"""The figures of the OmniV-Med paper's tables, computed the way its text says they were.

Source: OmniV-Med (arXiv 2504.14692) Tables 1-3 and "for 2D images, we follow LLaVA-Med and
measure accuracy and recall"; the scorer is LLaVA-Med's (microsoft/LLaVA-Med tag v1.0.0,
llava/eval/run_eval.py + llava/eval/eval_metrics/) as its lineage reports it (Med-MoE,
MedTrinity: OPEN = token recall, CLOSED = yes/no accuracy); M3D's closed rule is
BAAI-DCAI/M3D 63e7200 ``Bench/eval/eval_vqa.py``. The paper released no evaluation code.

Rules (every figure in percent):

- 2D Med-VQA (VQA-RAD, SLAKE, PathVQA; any item not M3D or surgical):
  "closed accuracy" = LLaVA-Med's yes/no accuracy (lowercase + normalize_word; a hit when
  the prediction contains the substring "yes" or "no" and contains the truth);
  "open recall" = LLaVA-Med's token recall (calculate_f1score's recall).
- M3D-VQA, per question type (plane, phase, organ, abnormality, location):
  "closed accuracy/<type>" = M3D's rule, correct iff "<answer letter>." occurs in the
  output; "open recall/<type>" = LLaVA-Med's token recall; "closed accuracy/avg" and
  "open recall/avg" = the mean of the per-type figures present (the paper's Avg column
  is the mean of its five types: M3D-LaMed closed 98.80/79.75/74.75/66.65/58.94 -> 75.78).
- Surgical video QA (Cholec80-VQA, EndoVis18-VQA, PSI-AVA-VQA): "accuracy" = the
  normalised prediction equals the normalised answer (lowercase + normalize_word); the
  paper does not spell its rule out, this is our reading of a classification-style answer.
- Counts: "closed count", "open count" (2D), "m3d closed count", "m3d open count",
  "surgical count". A group with no items reports 0.0.

Which rules apply is decided per item: the ``benchmark`` entry of ``EvalItem.extra``
("m3d-vqa", "cholec80-vqa", ...), else M3D choices or an M3D question type, else 2D.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

from omnivmed.evaluation.items import CLOSED, OPEN, EvalItem
from omnivmed.evaluation.protocols.base import Metrics, Protocol
from omnivmed.evaluation.protocols.common import M3D, M3D_QUESTION_TYPES, SURGICAL, benchmark_kind, mean
from omnivmed.evaluation.protocols.llava_med import closed_hit, f1_precision_recall, normalized_pair
from omnivmed.evaluation.protocols.m3d import m3d_closed_correct

NAME = "omnivmed-paper"
SOURCE = (
    "OmniV-Med arXiv 2504.14692 Tables 1-3 (no code released); scorer: microsoft/LLaVA-Med tag v1.0.0 "
    "llava/eval/run_eval.py + llava/eval/eval_metrics/{evaluate_metrics,glossary,utils}.py; "
    "M3D closed rule: BAAI-DCAI/M3D 63e7200 Bench/eval/eval_vqa.py"
)
RULES = (
    "2D: closed accuracy = LLaVA-Med yes/no accuracy, open recall = LLaVA-Med token recall. "
    "M3D per question type: closed accuracy = '<letter>.' in output, open recall = LLaVA-Med token recall; "
    "avg = mean of the types. Surgical: accuracy = normalised exact match. Percent."
)
DEFECTS = (
    "inherits LLaVA-Med's substring yes/no rule ('no' inside 'nodule' counts) and its token recall counting",
    "inherits M3D's '<letter>.' substring rule ('A.' inside 'DNA.' counts)",
)


def m3d_type(item: EvalItem) -> str:
    return item.question_type.strip().lower() or "unknown"


def score(items: Sequence[EvalItem], *, candidates: Sequence[str] | None = None) -> Metrics:
    closed: list[int] = []
    recall: list[float] = []
    m3d_closed: dict[str, list[int]] = defaultdict(list)
    m3d_recall: dict[str, list[float]] = defaultdict(list)
    surgical: list[int] = []
    for item in items:
        kind = benchmark_kind(item)
        gt, pred = normalized_pair(item)
        if kind == SURGICAL:
            surgical.append(int(pred == gt))
        elif kind == M3D:
            if item.answer_choice or item.answer_type == CLOSED:
                m3d_closed[m3d_type(item)].append(m3d_closed_correct(item))
            else:
                m3d_recall[m3d_type(item)].append(f1_precision_recall(pred, gt)[2])
        elif item.answer_type == CLOSED:
            closed.append(closed_hit(gt, pred))
        elif item.answer_type == OPEN:
            recall.append(f1_precision_recall(pred, gt)[2])

    metrics: Metrics = {
        "closed accuracy": mean(closed) * 100,
        "open recall": mean(recall) * 100,
        "closed count": float(len(closed)),
        "open count": float(len(recall)),
    }
    if m3d_closed or m3d_recall:
        types = [t for t in M3D_QUESTION_TYPES if t in m3d_closed or t in m3d_recall]
        types += sorted((set(m3d_closed) | set(m3d_recall)) - set(M3D_QUESTION_TYPES))
        for label, groups in (("closed accuracy", m3d_closed), ("open recall", m3d_recall)):
            per_type = {t: mean(groups[t]) * 100 for t in types if t in groups}
            for t, value in per_type.items():
                metrics[f"{label}/{t}"] = value
            metrics[f"{label}/avg"] = mean(per_type.values())
        metrics["m3d closed count"] = float(sum(len(v) for v in m3d_closed.values()))
        metrics["m3d open count"] = float(sum(len(v) for v in m3d_recall.values()))
    if surgical:
        metrics["accuracy"] = mean(surgical) * 100
        metrics["surgical count"] = float(len(surgical))
    return metrics


PROTOCOL = Protocol(name=NAME, source=SOURCE, rules=RULES, defects=DEFECTS, score=score)
