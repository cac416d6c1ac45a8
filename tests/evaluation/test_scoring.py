"""Scores overall and per group, merged per benchmark into the score folder's three files."""

from __future__ import annotations

import json

import pytest

from omnivmed.evaluation.errors import EvalInputError
from omnivmed.evaluation.items import EvalItem
from omnivmed.evaluation.protocols.base import Protocol
from omnivmed.evaluation.scoring import format_value, groups, load_scores, save_scores, score_items, table_lines


def counting(items, *, candidates=None):
    """A test protocol: exact matches in percent, the item count, a NaN and a string."""
    hits = sum(i.prediction == i.answer for i in items)
    return {"exact": 100.0 * hits / len(items), "n": float(len(items)), "nan": float("nan"), "bert": "unavailable", "first candidate": (candidates or ["-"])[0]}


PROTOCOL = Protocol("counting", "tests", "exact match", (), counting)


def item(qid, answer, prediction, answer_type, question_type="", modality="ct"):
    return EvalItem(qid, "q", answer, prediction, answer_type, question_type=question_type, modality=modality)


ITEMS = [
    item("1", "yes", "yes", "closed", "PRES"),
    item("2", "no", "yes", "closed", "PRES", "mri"),
    item("3", "axial", "axial", "open", "PLANE"),
    item("4", "left", "right", "open", "", "mri"),
]


def test_every_axis_is_scored_with_the_same_protocol():
    scores = score_items(ITEMS, [PROTOCOL], candidates=["c1", "c2"])
    assert scores.overall == {"counting": {"exact": 50.0, "n": 4.0, "nan": None, "bert": "unavailable", "first candidate": "c1"}}
    by = scores.breakdowns["counting"]
    assert set(by) == {"answer_type", "modality", "question_type", "answer_type/question_type"}
    assert by["answer_type"]["closed"] == {"n": 2, "metrics": {"exact": 50.0, "n": 2.0, "nan": None, "bert": "unavailable", "first candidate": "c1"}}
    assert by["answer_type"]["open"]["metrics"]["exact"] == 50.0
    assert {k: v["n"] for k, v in by["question_type"].items()} == {"PLANE": 1, "PRES": 2, "unknown": 1}
    assert {k: v["metrics"]["exact"] for k, v in by["answer_type/question_type"].items()} == {"closed/PRES": 50.0, "open/PLANE": 100.0, "unknown": 0.0}
    assert {k: v["n"] for k, v in by["modality"].items()} == {"ct": 2, "mri": 2}


def test_an_axis_without_values_is_left_out():
    assert groups([item("1", "a", "a", "open", modality="")], "modality") == {}
    assert "modality" not in score_items([item("1", "a", "a", "open", modality="")], [PROTOCOL]).breakdowns["counting"]


def test_nothing_to_score_is_bad_input():
    with pytest.raises(EvalInputError, match="no questions"):
        score_items([], [PROTOCOL])


def test_results_merge_per_benchmark(tmp_path):
    save_scores(tmp_path, "vqa_rad", score_items(ITEMS, [PROTOCOL]), {"questions": 4})
    save_scores(tmp_path, "slake", score_items(ITEMS[:2], [PROTOCOL]), {"questions": 2})
    save_scores(tmp_path, "vqa_rad", score_items(ITEMS[:1], [PROTOCOL]), {"questions": 1})
    scores, breakdowns, matching = load_scores(tmp_path)
    assert list(scores) == ["vqa_rad", "slake"]
    assert scores["vqa_rad"]["counting"]["exact"] == 100.0 and scores["slake"]["counting"]["exact"] == 50.0
    assert matching == {"vqa_rad": {"questions": 1}, "slake": {"questions": 2}}
    assert json.loads((tmp_path / "scores.json").read_text())["slake"]["counting"]["nan"] is None
    assert breakdowns["slake"]["counting"]["answer_type"]["closed"]["n"] == 2


def test_bad_score_folders(tmp_path):
    with pytest.raises(EvalInputError, match="no scores.json"):
        load_scores(tmp_path)
    (tmp_path / "scores.json").write_text("[1]")
    with pytest.raises(EvalInputError, match="scores.json: expected a JSON object"):
        load_scores(tmp_path)


def test_table_and_number_format():
    assert [format_value(v) for v in (49.632, 0.35698, 451.0, 6.3e-155, None, "unavailable")] == ["49.63", "0.3570", "451", "0.0000", "-", "unavailable"]
    lines = table_lines({"vqa_rad": {"counting": {"exact": 50.0}}})
    assert lines[0].split() == ["benchmark", "protocol", "metric", "value"]
    assert lines[2].split() == ["vqa_rad", "counting", "exact", "50"]
