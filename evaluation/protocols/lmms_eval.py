"""lmms-eval's SLAKE task scorer, reproduced.

Source: EvolvingLMMs-Lab/lmms-eval 75571cfe, ``lmms_eval/tasks/slake/utils.py``
(slake_process_results, normalize_answer, the aggregations) and
``lmms_eval/tasks/slake/_default_template_yaml`` (metric list; post-prompt "Answer the
question using a single word or phrase."; 32 new tokens); read at 65ef07dfd5aa.

Rules: both prediction and answer go through ``normalize_answer``:
strip + lowercase; every "(...)" and full-width "（...）" becomes a space; every ASCII
punctuation mark and the listed Chinese marks become spaces; whitespace collapses and the
text is stripped; the whole text "x ray"/"xray" becomes "xray"; a whole text in the yes set
(yes, yeah, yep, true, and the Chinese 是/是的/有/包含/可以/能/会/正常) becomes "yes", in the no
set (no, nope, false, 否/不是/没有/无/不包含/不能/不会/不可以/不正常/异常) "no". Correct iff the
two normalised strings are equal. Metrics are the mean of correct (fractions) overall and
per group, with lmms-eval's names: "slake_accuracy", "slake_open_accuracy",
"slake_closed_accuracy" (by answer_type), "slake_ct_accuracy", "slake_mri_accuracy",
"slake_xray_accuracy" (by modality: "ct", "mri", "x-ray"), and by content type
"slake_abnormality_accuracy", "slake_color_accuracy", "slake_kg_accuracy",
"slake_modality_accuracy", "slake_organ_accuracy", "slake_plane_accuracy",
"slake_position_accuracy", "slake_quantity_accuracy", "slake_shape_accuracy",
"slake_size_accuracy". A group without items is 0.0, as lmms-eval returns.

Groups are read from the item: modality from ``extra["modality"]`` (SLAKE's raw "CT",
"MRI", "X-Ray") or else ``EvalItem.modality``; content type from ``extra["content_type"]``.
lmms-eval ships this scorer for SLAKE only; on other benchmarks the same rule applies and
the names keep their "slake_" prefix. No defect is known: a strict exact match, which only
under-credits paraphrases.
"""

from __future__ import annotations

import re
import string
from typing import Sequence

from omnivmed.evaluation.items import EvalItem
from omnivmed.evaluation.protocols.base import Metrics, Protocol
from omnivmed.evaluation.protocols.common import extra, mean

SOURCE = (
    "EvolvingLMMs-Lab/lmms-eval 75571cfe (read at 65ef07dfd5aa): lmms_eval/tasks/slake/utils.py, "
    "lmms_eval/tasks/slake/_default_template_yaml"
)
RULES = (
    "normalize_answer (lowercase, drop (...), punctuation to spaces, 'x ray'->'xray', yes/no synonyms) on both "
    "sides; correct iff equal. Accuracy overall, by answer type, modality and content type. Fractions."
)

EN_YES = frozenset({"yes", "yeah", "yep", "true"})
EN_NO = frozenset({"no", "nope", "false"})
ZH_YES = frozenset({"是", "是的", "有", "包含", "可以", "能", "会", "正常"})
ZH_NO = frozenset({"否", "不是", "没有", "无", "不包含", "不能", "不会", "不可以", "不正常", "异常"})
ZH_PUNCTUATION = "！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～、，。；：《》？【】（）"
PUNCTUATION_TO_SPACE = str.maketrans({mark: " " for mark in string.punctuation + ZH_PUNCTUATION})

MODALITIES = {"slake_ct_accuracy": "ct", "slake_mri_accuracy": "mri", "slake_xray_accuracy": "x-ray"}
CONTENT_TYPES = (
    "abnormality", "color", "kg", "modality", "organ", "plane", "position", "quantity", "shape", "size",
)


def normalize_answer(answer: object) -> str:
    text = "" if answer is None else str(answer)
    text = text.strip().lower()
    text = re.sub(r"\([^)]*\)", " ", text)
    text = re.sub(r"（[^）]*）", " ", text)
    text = text.translate(PUNCTUATION_TO_SPACE)
    text = re.sub(r"\s+", " ", text).strip()
    if text in {"x ray", "xray"}:
        text = "xray"
    if text in EN_YES or text in ZH_YES:
        return "yes"
    if text in EN_NO or text in ZH_NO:
        return "no"
    return text


def group(value: str) -> str:
    return value.strip().lower()


def score(items: Sequence[EvalItem], *, candidates: Sequence[str] | None = None) -> Metrics:
    records = []
    for item in items:
        records.append(
            {
                "correct": float(normalize_answer(item.prediction) == normalize_answer(item.answer)),
                "answer_type": group(item.answer_type),
                "modality": group(extra(item, "modality", item.modality)),
                "content_type": group(extra(item, "content_type")),
            }
        )

    def accuracy(key: str | None = None, value: str | None = None) -> float:
        return mean(r["correct"] for r in records if key is None or r[key] == value)  # type: ignore[misc]

    metrics: Metrics = {
        "slake_accuracy": accuracy(),
        "slake_open_accuracy": accuracy("answer_type", "open"),
        "slake_closed_accuracy": accuracy("answer_type", "closed"),
    }
    for name, modality in MODALITIES.items():
        metrics[name] = accuracy("modality", modality)
    for content in CONTENT_TYPES:
        metrics[f"slake_{content}_accuracy"] = accuracy("content_type", content)
    return metrics


PROTOCOL = Protocol(name="lmms-eval", source=SOURCE, rules=RULES, defects=(), score=score)
