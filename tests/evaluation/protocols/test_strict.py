"""omnivmed: our strict protocol, hand-computed."""

from __future__ import annotations

import pytest

from omnivmed.evaluation.items import CLOSED, OPEN, EvalItem
from omnivmed.evaluation.protocols import get_protocol
from omnivmed.evaluation.protocols.strict import normalize, yes_no_verdict

ours = get_protocol("omnivmed")
CHOICES = ("Axial", "Coronal", "Sagittal", "Oblique")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Two", "2"),
        ("twelve nodules", "12 nodules"),
        ("5mm", "5 mm"),
        ("5 mm", "5 mm"),
        ("3.5cm.", "3.5 cm"),
        ("10%", "10 %"),
        ("1,000", "1000"),
        ("X-ray", "x ray"),
        ("The left lung.", "left lung"),
        ("Crohn's disease", "crohns disease"),
        ("T2", "t2"),
        ("none", "none"),  # not a number here
        ("", ""),
    ],
)
def test_normalize(text, expected):
    assert normalize(text) == expected


@pytest.mark.parametrize(
    ("prediction", "verdict"),
    [
        ("No.", "no"),
        ("Yes, there is.", "yes"),
        ("There is a nodule.", None),  # "nodule" is not "no"
        ("Not present.", None),  # "not" is not "no"
        ("yes or no", None),  # both
        ("", None),
    ],
)
def test_yes_no_needs_exactly_one_of_the_words(prediction, verdict):
    assert yes_no_verdict(prediction) == verdict


def test_closed_accuracy_and_counts():
    items = [
        EvalItem("1", "q", "no", "There is a nodule.", CLOSED),
        EvalItem("2", "q", "No", "NO.", CLOSED),
        EvalItem("3", "q", "yes", "yes and no", CLOSED),
        EvalItem("4", "q", "Left", "left.", CLOSED),
        EvalItem("5", "q", "Coronal", "B. Coronal", CLOSED, choices=CHOICES, answer_choice="B"),
        EvalItem("6", "q", "Axial", "A large mass", CLOSED, choices=CHOICES, answer_choice="A"),  # not a letter
        EvalItem("7", "q", "Sagittal", "sagittal", CLOSED, choices=CHOICES, answer_choice="C"),
    ]
    metrics = ours(items)
    assert metrics["closed accuracy"] == pytest.approx(400 / 7)  # items 2, 4, 5, 7
    assert metrics["yes/no count"] == 3.0
    assert metrics["yes/no unanswered count"] == 2.0
    assert metrics["closed count"] == 7.0


def test_open_exact_f1_and_recall():
    items = [
        EvalItem("1", "q", "two nodules", "2 nodules", OPEN),
        EvalItem("2", "q", "left lung", "lung", OPEN),  # P 1, R 1/2, F1 2/3
        EvalItem("3", "q", "5 mm", "5mm", OPEN),
        EvalItem("4", "q", "ct", "", OPEN),
    ]
    metrics = ours(items)
    assert metrics["open exact"] == 50.0
    assert metrics["open token f1"] == pytest.approx((1 + 2 / 3 + 1 + 0) / 4 * 100)
    assert metrics["open recall"] == pytest.approx((1 + 0.5 + 1 + 0) / 4 * 100)
    assert metrics["overall accuracy"] == 50.0
    assert metrics["open count"] == 4.0


def test_token_f1_counts_repeats_once_each():
    metrics = ours([EvalItem("1", "q", "lung mass", "lung lung", OPEN)])
    assert metrics["open recall"] == 50.0  # unlike LLaVA-Med's 2/3
    assert metrics["open token f1"] == pytest.approx(50.0)
