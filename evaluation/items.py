"""What every protocol scores: one question, its ground truth and one prediction."""

from __future__ import annotations

from dataclasses import dataclass, field

CLOSED, OPEN = "closed", "open"


@dataclass(frozen=True)
class EvalItem:
    """One benchmark question with a model's answer.

    ``question_id`` is the source's own id (VQA-RAD ``qid``, SLAKE ``qid``,
    PathVQA row, M3D-VQA row, surgical frame + question); ``sample_id`` is
    ours. ``choices`` holds the M3D closed options in order (A, B, C, D) and
    ``answer_choice`` the correct letter; elsewhere they are empty.
    """

    question_id: str
    question: str
    answer: str  # ground truth, as the source wrote it
    prediction: str  # the model's raw text
    answer_type: str  # CLOSED or OPEN
    sample_id: str = ""
    question_type: str = ""  # M3D: plane, phase, organ, abnormality, location; VQA-RAD: its question_type
    modality: str = ""
    choices: tuple[str, ...] = ()
    answer_choice: str = ""
    extra: tuple[tuple[str, str], ...] = field(default=())  # source fields a protocol may need (e.g. SLAKE content_type)
