"""The majority baseline: hand-checked on a toy set and on the real VQA-RAD split."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from omnivmed.evaluation.baselines import MajorityBaseline
from omnivmed.evaluation.benchmarks import GtRecord, get_benchmark, read_ground_truth
from omnivmed.evaluation.errors import EvalInputError

DATA = Path(__file__).resolve().parents[2] / "data"


def rec(qid, answer, answer_type="closed", question_type="", choices=(), letter=""):
    return GtRecord(qid, f"s{qid}", "train", "q", answer, answer_type, question_type, choices=choices, answer_choice=letter)


def test_per_type_then_answer_type_then_overall_ties_to_first_seen():
    train = [
        rec(1, "Yes", question_type="PRES"),
        rec(2, "no", question_type="PRES"),
        rec(3, "no ", question_type="PRES"),  # counted as "no": lower-cased, stripped
        rec(4, "yes", question_type="SIZE"),
        rec(5, "no", question_type="SIZE"),  # a tie: "yes" was seen first
        rec(6, "Axial", "open", "PLANE"),
        rec(7, "left", "open", "POS"),
        rec(8, "left", "open", "POS"),
    ]
    majority = MajorityBaseline.fit(train)
    assert majority.by_type == {("closed", "PRES"): "no", ("closed", "SIZE"): "yes", ("open", "PLANE"): "axial", ("open", "POS"): "left"}
    assert majority.by_answer_type == {"closed": "no", "open": "left"}  # closed: no 3, yes 2
    assert majority.overall == "no"
    test = [rec(10, "x", question_type="PRES"), rec(11, "x", "open", "COLOR"), rec(12, "x", "other-kind", "PRES")]
    assert [majority.rule(r) for r in test] == [("no", "type"), ("left", "answer_type"), ("no", "overall")]
    assert [p.text for p in majority.predict(test)] == ["no", "left", "no"]


def test_multiple_choice_counts_letters_and_answers_with_the_choice():
    choices = ("Axial", "Coronal", "Sagittal", "Oblique")
    train = [rec(1, "Coronal", question_type="plane", choices=choices, letter="B"), rec(2, "Coronal", question_type="plane", choices=choices, letter="B"), rec(3, "Axial", question_type="plane", choices=choices, letter="A")]
    majority = MajorityBaseline.fit(train)
    other = ("Liver", "Kidney", "Lung", "Radius")
    assert majority.answer(rec(9, "Lung", question_type="plane", choices=other, letter="C")) == "B. Kidney"


def test_no_train_questions_is_bad_input():
    with pytest.raises(EvalInputError, match="needs train questions"):
        MajorityBaseline.fit([])


def test_vqa_rad_majority_hand_checked(staged):
    benchmark = get_benchmark("vqa_rad")
    train = read_ground_truth(benchmark, staged / "vqa_rad", split="train")
    test = read_ground_truth(benchmark, staged / "vqa_rad")
    majority = MajorityBaseline.fit(train)
    # Counted by hand on the official JSON's train rows (phrase_type freeform/para):
    rows = json.loads((DATA / "vqa_rad" / "VQA_RAD Dataset Public.json").read_text(encoding="utf-8"))
    train_rows = [r for r in rows if not r["phrase_type"].startswith("test")]
    closed_pres = Counter(str(r["answer"]).strip().lower() for r in train_rows if r["answer_type"].strip() == "CLOSED" and r["question_type"] == "PRES")
    open_pos = Counter(str(r["answer"]).strip().lower() for r in train_rows if r["answer_type"].strip() == "OPEN" and r["question_type"] == "POS")
    assert closed_pres.most_common(2) == [("no", 272), ("yes", 222)]
    assert open_pos.most_common(2) == [("right", 18), ("left", 10)]
    assert majority.by_type[("closed", "PRES")] == "no" and majority.by_type[("open", "POS")] == "right"
    assert majority.by_answer_type == {"closed": "no", "open": "axial"} and majority.overall == "no"
    predictions = majority.predict(test)
    exact = Counter((r.answer_type, p.text == r.answer.strip().lower()) for p, r in zip(predictions, test))
    # 135 of the 272 closed test questions and 26 of the 179 open ones get their answer exactly.
    assert exact == {("closed", True): 135, ("closed", False): 137, ("open", True): 26, ("open", False): 153}
    assert Counter(majority.rule(r)[1] for r in test) == {"type": 450, "answer_type": 1}
