"""multimedeval and multimedeval-fixed, hand-computed."""

from __future__ import annotations

import math

import pytest

from omnivmed.evaluation.items import CLOSED, OPEN, EvalItem
from omnivmed.evaluation.protocols import get_protocol
from omnivmed.evaluation.protocols.multimedeval import bleu1_float32

plain, fixed = get_protocol("multimedeval"), get_protocol("multimedeval-fixed")


def item(answer, prediction, answer_type=OPEN):
    return EvalItem("m", "q", answer, prediction, answer_type)


@pytest.mark.parametrize(
    ("answer", "prediction", "plain_hit", "fixed_hit"),
    [
        ("yes", "yes or no", True, False),  # hedging: correct either way in MultiMedEval
        ("no", "yes, no", True, False),  # recall 1/2 of {no, not} >= 0.4
        ("no", "There is a nodule.", False, False),  # word level: "nodule" is not "no"
        ("no", "There is not a fracture.", True, True),  # "not" joins the "no" answer
        ("No", "NO!", True, True),
        ("yes", "No.", False, False),
        ("yes", "", False, False),
    ],
)
def test_closed_questions(answer, prediction, plain_hit, fixed_hit):
    assert plain([item(answer, prediction, CLOSED)])["closedQuestionsAccuracy"] == float(plain_hit)
    assert fixed([item(answer, prediction, CLOSED)])["closedQuestionsAccuracy"] == float(fixed_hit)


def test_closed_is_decided_by_the_answer_not_the_answer_type():
    metrics = plain([item("left", "left", CLOSED), item("yes", "yes", OPEN)])
    assert metrics["openQuestionsRecall"] == 1.0  # "left" is an open question here
    assert metrics["closedQuestionsAccuracy"] == 1.0


def test_open_recall_and_accuracy_threshold():
    items = [item("left lung", "lung"), item("two", "2"), item("right upper lobe", "upper lobe, right side")]
    metrics = plain(items)
    # recalls: 1/2, 1 (two -> 2), 3/3
    assert metrics["openQuestionsRecall"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert metrics["openQuestionsAccuracy"] == pytest.approx(2 / 3)  # recall >= 0.75


def test_f1_carries_the_1e8_in_its_denominator():
    assert plain([item("ct", "CT.")])["F1"] == pytest.approx(2 / (2 + 1e-8), abs=0, rel=1e-15)


def test_bleu_recall_and_f1_average_over_all_questions():
    metrics = plain([item("yes", "yes", CLOSED), item("ct", "mri")])
    assert metrics["recall"] == 0.5
    assert metrics["bleu"] == 0.5


def test_bleu1_is_clipped_unigram_precision_with_brevity_penalty_in_float32():
    assert bleu1_float32("left lung", "small left lung mass") == pytest.approx(math.exp(-1), rel=1e-6)
    assert bleu1_float32("lung lung lung", "lung") == pytest.approx(1 / 3, rel=1e-6)  # clipped, c > r
    assert bleu1_float32("", "lung") == 0.0
    value = plain([item("small left lung mass", "left lung")])["bleu"]
    assert value == pytest.approx(math.exp(-1), rel=1e-6)


def test_an_empty_prediction_scores_zero():
    metrics = plain([item("ct", "")])
    assert metrics == {
        "bleu": 0.0, "F1": 0.0, "recall": 0.0, "closedQuestionsAccuracy": 0.0, "openQuestionsRecall": 0.0,
        "openQuestionsAccuracy": 0.0,
    }
