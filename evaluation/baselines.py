"""Baselines that need no model: what a benchmark gives away without looking at the image.

``majority``: every test question gets the train split's most common answer
among questions of the same answer type and question type (VQA-RAD
question_type, SLAKE content_type, M3D plane/phase/organ/abnormality/location,
the surgical task); when the train split has no question of that pair, the
most common answer of the answer type; when it has none of that either, the
most common answer overall. Answers are counted after lower-casing and
stripping, and the counted form is the prediction; ties go to the answer
seen first in the train split. Multiple-choice questions (M3D closed) count
the correct letter instead, and predict ``"<letter>. <that choice>"``.

``blind`` (a text-only model answering without the image) needs an endpoint,
so it lives in the app (``omnivmed/eval_predict.py``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Sequence

from omnivmed.evaluation.benchmarks import GtRecord
from omnivmed.evaluation.errors import EvalInputError
from omnivmed.evaluation.predictions import Prediction

MAJORITY_VERSION = "majority-v1"


def _counted(record: GtRecord) -> str:
    if record.choices:
        return record.answer_choice
    return record.answer.strip().lower()


@dataclass(frozen=True)
class MajorityBaseline:
    by_type: dict[tuple[str, str], str]  # (answer_type, question_type) -> answer
    by_answer_type: dict[str, str]
    overall: str

    @classmethod
    def fit(cls, train: Sequence[GtRecord]) -> "MajorityBaseline":
        if not train:
            raise EvalInputError("the majority baseline needs train questions; none were given")
        pairs: dict[tuple[str, str], Counter] = {}
        kinds: dict[str, Counter] = {}
        overall: Counter = Counter()
        for record in train:
            answer = _counted(record)
            key = (_kind(record), record.question_type)
            pairs.setdefault(key, Counter())[answer] += 1
            kinds.setdefault(_kind(record), Counter())[answer] += 1
            overall[answer] += 1
        return cls(
            {k: c.most_common(1)[0][0] for k, c in pairs.items()},
            {k: c.most_common(1)[0][0] for k, c in kinds.items()},
            overall.most_common(1)[0][0],
        )

    def rule(self, record: GtRecord) -> tuple[str, str]:
        """(answer, which table gave it: 'type', 'answer_type' or 'overall')."""
        kind = _kind(record)
        if (kind, record.question_type) in self.by_type:
            return self.by_type[(kind, record.question_type)], "type"
        if kind in self.by_answer_type:
            return self.by_answer_type[kind], "answer_type"
        return self.overall, "overall"

    def answer(self, record: GtRecord) -> str:
        answer, _ = self.rule(record)
        if record.choices:
            letter = answer if answer in "ABCD" and len(answer) == 1 else "A"
            return f"{letter}. {record.choices['ABCD'.index(letter)]}"
        return answer

    def predict(self, test: Sequence[GtRecord]) -> list[Prediction]:
        return [Prediction(r.question_id, self.answer(r), r.sample_id, "") for r in test]


def _kind(record: GtRecord) -> str:
    """Multiple choice is its own kind: its counted answers are letters."""
    return "choice" if record.choices else record.answer_type
