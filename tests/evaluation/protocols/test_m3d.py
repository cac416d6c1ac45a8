"""m3d and m3d-fixed: M3D-Bench's eval_vqa.py, hand-computed."""

from __future__ import annotations

import math

import pytest

from omnivmed.evaluation.items import CLOSED, OPEN, EvalItem
from omnivmed.evaluation.protocols import UNAVAILABLE, get_protocol
from omnivmed.evaluation.protocols.common import nltk_data_available
from omnivmed.evaluation.protocols.m3d import bleu1, tokenize_13a

plain, fixed = get_protocol("m3d"), get_protocol("m3d-fixed")
CHOICES = ("Axial", "Coronal", "Sagittal", "Oblique")


def closed(letter, prediction, qtype="plane"):
    return EvalItem("c", "q", "Axial", prediction, CLOSED, question_type=qtype, choices=CHOICES,
                    answer_choice=letter)


def open_(answer, prediction, qtype="organ"):
    return EvalItem("o", "q", answer, prediction, OPEN, question_type=qtype)


@pytest.mark.parametrize(
    ("letter", "prediction", "plain_hit", "fixed_hit"),
    [
        ("A", "A. Axial", 1, 1),
        ("A", "B. DNA.", 1, 0),  # "A." inside "DNA."
        ("B", "A. Axial B. Coronal", 1, 0),  # listing options: plain counts each
        ("A", "a. axial", 0, 0),  # case-sensitive
        ("A", "The answer is A", 0, 0),  # no period
        ("A", "Answer: A. Axial", 1, 1),
        ("C", "(C) Sagittal", 0, 0),  # no "C." anywhere
        ("A", "", 0, 0),
    ],
)
def test_closed_choice_letter(letter, prediction, plain_hit, fixed_hit):
    assert plain([closed(letter, prediction)])["plane/Correct"] == plain_hit
    assert fixed([closed(letter, prediction)])["plane/Correct"] == fixed_hit


def test_tokenizer_13a_and_bleu1():
    assert tokenize_13a("left lung.") == ["left", "lung", "."]
    assert tokenize_13a("3.5 cm, x-ray") == ["3.5", "cm", ",", "x-ray"]  # a dash splits only after a digit
    assert tokenize_13a("3-4 mm") == ["3", "-", "4", "mm"]
    assert bleu1("left lung", "small left lung mass") == pytest.approx(math.exp(1 - 4 / 2))
    assert bleu1("lung.", "lung") == pytest.approx(0.5)  # the period is a token: precision 1/2, c > r
    assert bleu1("", "lung") is None  # evaluate's bleu divides by zero here


def test_open_metrics_per_type_and_overall():
    items = [open_("small left lung mass", "left lung"), open_("liver", "liver", qtype="location")]
    metrics = plain(items)
    assert metrics["organ/bleu"] == pytest.approx(math.exp(-1))
    assert metrics["location/bleu"] == pytest.approx(1.0)
    assert metrics["all/bleu"] == pytest.approx((math.exp(-1) + 1) / 2)
    assert metrics["organ/count"] == 1.0 and metrics["all/count"] == 2.0
    if nltk_data_available("corpora/wordnet", "tokenizers/punkt_tab"):
        assert isinstance(metrics["all/meteor"], float)
    else:
        assert metrics["all/meteor"] == UNAVAILABLE
    assert metrics["all/bert_f1"] in (UNAVAILABLE,) or isinstance(metrics["all/bert_f1"], float)


def test_rouge1_through_rouge_score():
    pytest.importorskip("rouge_score")
    metrics = plain([open_("small left lung mass", "left lung")])
    assert metrics["organ/rouge1"] == pytest.approx(2 / 3)  # P 1, R 1/2


def test_an_empty_prediction_would_crash_m3d_and_scores_zero():
    items = [open_("liver", ""), open_("liver", "liver")]
    metrics = plain(items)
    assert metrics["all/would_crash"] == 1.0
    assert metrics["all/bleu"] == pytest.approx(0.5)
    assert "all/would_crash" not in fixed(items)


def test_types_come_in_m3d_order_with_closed_and_open_together():
    items = [closed("A", "A. x", qtype="phase"), closed("A", "B. x", qtype="plane"), open_("kidney", "kidney")]
    metrics = plain(items)
    keys = [key for key in metrics if key.endswith("/count")]
    assert keys == ["plane/count", "phase/count", "organ/count", "all/count"]
    assert metrics["all/Correct"] == 0.5
