"""medevalkit and medevalkit-fixed: each defect shown, and the fixed variant's correct value."""

from __future__ import annotations

import pytest

from omnivmed.evaluation.items import CLOSED, OPEN, EvalItem
from omnivmed.evaluation.protocols import UNAVAILABLE, get_protocol
from omnivmed.evaluation.protocols.medevalkit import boxed, parse_response

plain, fixed = get_protocol("medevalkit"), get_protocol("medevalkit-fixed")
SLAKE = (("benchmark", "slake"),)


def rad(answer, prediction, answer_type=OPEN, judge=None):
    extra = () if judge is None else (("judge_correct", judge),)
    return EvalItem("r", "q", answer, prediction, answer_type, extra=extra)


def slake(answer, prediction, answer_type, judge=None):
    extra = SLAKE + (() if judge is None else (("judge_correct", judge),))
    return EvalItem("s", "q", answer, prediction, answer_type, extra=extra)


def test_answer_extraction():
    assert boxed("so \\boxed{a} then \\boxed{left {lobe}} done") == "left {lobe}"
    assert boxed("no box here") == "None"
    assert parse_response("The answer is Left lung") == " left lung"  # no strip
    assert parse_response("we boxed it") == "None"  # the word alone turns the text into "None"
    assert parse_response("<think>x</think><answer>Yes</answer>") == "yes"


def test_precision_recall_f1_are_mislabelled_and_fixed():
    # token sets {the, left, lung} vs {left, lung}: P 2/3, R 1, F1 0.8
    item = rad("Left lung", "the left lung")
    wrong, right = plain([item]), fixed([item])
    assert (wrong["open/precision"], wrong["open/recall"], wrong["open/f1"]) == pytest.approx((0.8, 2 / 3, 1.0))
    assert (right["open/precision"], right["open/recall"], right["open/f1"]) == pytest.approx((2 / 3, 1.0, 0.8))


def test_open_acc_is_divided_twice_and_fixed():
    items = [rad("ct", "CT"), rad("mri", "x ray")]
    assert plain(items)["open/acc"] == pytest.approx(0.25)  # (1/2)/2
    assert fixed(items)["open/acc"] == pytest.approx(0.5)
    assert plain(items)["open/em"] == pytest.approx(0.5)
    assert plain(items)["total metrics/acc"] == fixed(items)["total metrics/acc"] == pytest.approx(0.5)


def test_judge_mode_loses_the_closed_hits_in_vqa_rad_and_fixed_keeps_them():
    items = [rad("yes", "Yes.", CLOSED), rad("ct", "computed tomography", judge="1"), rad("mri", "ct", judge="0")]
    wrong, right = plain(items), fixed(items)
    assert wrong["close/right"] == 0.0 and wrong["close/acc"] == 0.0
    assert wrong["total metrics/right"] == 1.0
    assert right["close/right"] == 1.0 and right["close/acc"] == 1.0
    assert right["total metrics/right"] == 2.0 and right["total metrics/acc"] == pytest.approx(2 / 3)
    assert wrong["open/right"] == right["open/right"] == 1.0


def test_a_judged_item_without_a_verdict_counts_as_wrong():
    items = [rad("ct", "computed tomography", judge="1"), rad("liver", "the liver"), rad("mri", "mri", judge="")]
    assert fixed(items)["open/right"] == 1.0  # the exact match of "mri" no longer counts: the judge decides


def test_an_empty_verdict_entry_switches_judge_mode_on_for_a_closed_only_group():
    items = [rad("yes", "yes", CLOSED, judge="")]
    assert plain(items)["close/right"] == 0.0  # judge mode: VQA_RAD.py drops the closed hits
    assert fixed(items)["close/right"] == 1.0
    assert plain([rad("yes", "yes", CLOSED)])["close/right"] == 1.0  # no judge


def test_slake_judge_counts_closed_questions_twice_and_fixed_once():
    items = [slake("Yes", "Yes", CLOSED, judge="1"), slake("Liver", "the liver", OPEN, judge="1")]
    wrong, right = plain(items), fixed(items)
    assert wrong["close/right"] == 2.0 and wrong["close/acc"] == 2.0
    assert wrong["total metrics/right"] == 3.0 and wrong["total metrics/acc"] == 1.5
    assert right["close/right"] == 1.0 and right["close/acc"] == 1.0
    assert right["total metrics/right"] == 2.0 and right["total metrics/acc"] == 1.0


def test_slake_capitalised_yes_needs_an_exact_match_and_fixed_uses_the_yes_no_rule():
    items = [slake("Yes", "Yes, there is.", CLOSED)]
    assert plain(items)["close/acc"] == 0.0
    assert fixed(items)["close/acc"] == 1.0
    # a non-yes/no closed SLAKE answer is an exact match after deleting "." and newlines, in both
    for protocol in (plain, fixed):
        assert protocol([slake("Left", "Left.", CLOSED)])["close/acc"] == 1.0
        assert protocol([slake("Left", "The left", CLOSED)])["close/acc"] == 0.0


@pytest.mark.parametrize(
    ("answer", "prediction", "plain_hit", "fixed_hit"),
    [
        ("no", "Nodule.", True, False),  # "no" inside "nodule"
        ("yes", "Yes, there is a nodule.", False, True),  # "nodule" makes both appear
        ("no", "No.", True, True),
        ("yes", "yes or no", False, False),  # both: wrong in each
        ("no", "", False, False),
        ("yes", "\\boxed{Yes}", True, True),
    ],
)
def test_closed_yes_no(answer, prediction, plain_hit, fixed_hit):
    items = [rad(answer, prediction, CLOSED)]
    assert plain(items)["close/acc"] == float(plain_hit)
    assert fixed(items)["close/acc"] == float(fixed_hit)


def test_in_vqa_rad_a_closed_question_is_one_whose_answer_is_yes_or_no():
    # VQA-RAD's answer_type CLOSED with a non-yes/no answer is scored as open by MedEvalKit
    metrics = plain([rad("left", "left", CLOSED)])
    assert metrics["open/total"] == 1.0 and metrics["close/total"] == 0.0


def test_an_empty_prediction_would_crash_medevalkit_and_scores_zero_here():
    pytest.importorskip("rouge")
    items = [rad("ct", ""), rad("mri", "mri")]
    metrics = plain(items)
    assert metrics["open/would_crash"] == 1.0
    assert metrics["open/rouge1"] == pytest.approx(0.5 * 0.9999999950000001)  # rouge's F carries its epsilon
    assert metrics["open/precision"] == pytest.approx(0.5)
    assert "open/would_crash" not in fixed(items)


def test_numbers_are_not_normalised():
    metrics = plain([rad("two", "2")])
    assert metrics["open/em"] == 0.0 and metrics["open/recall"] == 0.0


def test_bleu_uses_nltk_with_uniform_weights():
    pytest.importorskip("nltk")
    metrics = plain([rad("left lung", "left lung")])
    assert metrics["open/bleu1"] == pytest.approx(1.0)
    assert metrics["open/bleu2"] == pytest.approx(1.0)
    assert metrics["open/bleu3"] < 1e-50


def test_mixing_slake_with_another_benchmark_is_refused():
    with pytest.raises(ValueError, match="one benchmark at a time"):
        plain([rad("ct", "ct"), slake("CT", "CT", OPEN)])


def test_missing_packages_are_reported_not_faked(monkeypatch):
    from omnivmed.evaluation.protocols import medevalkit

    monkeypatch.setattr(medevalkit, "optional_import", lambda name: None)
    metrics = plain([rad("ct", "ct")])
    assert metrics["open/rouge1"] == UNAVAILABLE
    assert metrics["open/em"] == 1.0
