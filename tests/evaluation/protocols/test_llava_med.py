"""llava-med: LLaVA-Med v1.0.0's run_eval.py, hand-computed."""

from __future__ import annotations

import math

import pytest

from omnivmed.evaluation.items import CLOSED, OPEN, EvalItem
from omnivmed.evaluation.protocols import UNAVAILABLE, get_protocol

llava_med = get_protocol("llava-med")


def closed(answer, prediction):
    return EvalItem("c", "q", answer, prediction, CLOSED)


def open_(answer, prediction):
    return EvalItem("o", "q", answer, prediction, OPEN)


@pytest.mark.parametrize(
    ("answer", "prediction", "hit"),
    [
        ("no", "There is a nodule.", 1),  # "no" inside "nodule"
        ("no", "Normal.", 1),  # "no" inside "normal"
        ("yes", "yes and no", 1),  # both: correct whatever the truth
        ("no", "yes and no", 1),
        ("yes", "No.", 0),
        ("yes", "Maybe", 0),  # neither substring: a miss, still counted
        ("left", "left side", 0),  # no yes/no substring at all
        ("left", "left, not right", 1),  # "not" carries the "no"
        ("Yes", "YES!", 1),  # case and punctuation
        ("yes", "", 0),
    ],
)
def test_closed_is_a_substring_rule(answer, prediction, hit):
    assert llava_med([closed(answer, prediction)])["yes/no accuracy"] == 100.0 * hit


def test_closed_misses_stay_in_the_denominator():
    items = [closed("yes", "yes"), closed("yes", "no"), closed("no", "maybe"), closed("no", "no")]
    assert llava_med(items)["yes/no accuracy"] == 50.0


def test_exact_match_score_is_a_precision():
    metrics = llava_med([open_("left lung", "left lung lesion")])
    assert metrics["exact match score"] == pytest.approx(200 / 3)
    assert metrics["precision"] == pytest.approx(200 / 3)
    assert metrics["recall"] == pytest.approx(100.0)
    assert metrics["f1 score"] == pytest.approx(80.0)


def test_token_counts_use_the_predictions_multiplicity():
    # tp counts "lung" twice (the prediction's count), fn counts "mass" once: recall 2/3
    metrics = llava_med([open_("lung mass", "lung lung")])
    assert metrics["precision"] == pytest.approx(100.0)
    assert metrics["recall"] == pytest.approx(200 / 3)
    assert metrics["f1 score"] == pytest.approx(80.0)
    assert metrics["exact match score"] == pytest.approx(50.0)  # 1 distinct reference word / 2 words


def test_number_words_case_and_punctuation_are_normalised():
    metrics = llava_med([open_("two", "2"), open_("Left Lung", "LEFT lung!")])
    assert metrics["exact match score"] == 100.0
    assert metrics["recall"] == 100.0


def test_an_empty_prediction_scores_zero():
    metrics = llava_med([open_("ct", ""), open_("mri", "mri")], candidates=["mri", "ct"])
    assert metrics["exact match score"] == 50.0
    assert metrics["f1 score"] == 50.0
    assert metrics["open accuracy"] == 50.0  # the empty prediction picks "mri", the first candidate


def test_open_accuracy_takes_the_first_best_candidate_in_the_given_order():
    item = open_("left lung", "left lung")
    # "left lung" and "lung" both overlap fully (2/2 and 1/1): the first listed wins
    assert llava_med([item], candidates=["right lung", "left lung", "lung"])["open accuracy"] == 100.0
    assert llava_med([item], candidates=["lung", "left lung"])["open accuracy"] == 0.0


def test_default_candidates_are_the_distinct_answers_in_first_seen_order():
    items = [open_("ct", ""), open_("mri", "an mri"), closed("yes", "yes")]
    # candidates: ct, mri, yes; the empty prediction overlaps nothing and gets "ct", the first
    assert llava_med(items)["open accuracy"] == 100.0
    items = [open_("mri", "mri"), open_("ct", "")]
    assert llava_med(items)["open accuracy"] == 50.0


def test_an_explicitly_empty_candidate_list_makes_open_accuracy_unavailable():
    assert llava_med([open_("ct", "ct")], candidates=[])["open accuracy"] == UNAVAILABLE


def test_num_open_and_num_close_are_swapped_as_llava_med_prints_them():
    metrics = llava_med([closed("yes", "yes"), closed("no", "no"), open_("ct", "ct")])
    assert metrics["num_open"] == 2.0  # the closed count
    assert metrics["num_close"] == 1.0  # the open count


def test_bleu_uses_nltk_sentence_bleu_with_its_weights():
    pytest.importorskip("nltk")
    metrics = llava_med([open_("left lung", "left lung")])
    assert metrics["bleu_score_1"] == pytest.approx(100.0)
    assert metrics["bleu_score_2"] == pytest.approx(100.0)
    assert metrics["bleu_score_3"] < 1e-200  # no trigram: NLTK's tiny floor, not 0
    assert metrics["bleu_score"] < 1e-100
    short = llava_med([open_("small left lung mass", "left lung")])
    assert short["bleu_score_1"] == pytest.approx(100 * math.exp(1 - 4 / 2))  # brevity penalty


def test_metric_names_are_llava_meds():
    assert list(llava_med([]))[:10] == [
        "exact match score", "f1 score", "precision", "recall", "bleu_score", "bleu_score_1", "bleu_score_2",
        "bleu_score_3", "open accuracy", "yes/no accuracy",
    ]


def test_without_nltk_bleu_is_unavailable_not_zero(monkeypatch):
    from omnivmed.evaluation.protocols import common

    monkeypatch.setattr(common, "optional_import", lambda name: None)
    metrics = llava_med([open_("ct", "ct")])
    assert metrics["bleu_score"] == metrics["bleu_score_3"] == UNAVAILABLE
    assert metrics["exact match score"] == 100.0
