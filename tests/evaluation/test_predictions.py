"""Answer files in, one prediction per question out: matched by source id or sample id, nothing dropped silently."""

from __future__ import annotations

import json

import pytest

from omnivmed.evaluation.benchmarks import GtRecord, get_benchmark, read_ground_truth
from omnivmed.evaluation.errors import EvalInputError
from omnivmed.evaluation.predictions import Prediction, match_predictions, read_predictions, write_predictions


def record(qid: str, answer: str = "yes", answer_type: str = "closed") -> GtRecord:
    return GtRecord(question_id=qid, sample_id=f"s{qid}", split="test", question=f"q{qid}?", answer=answer, answer_type=answer_type)


def test_reads_llava_med_answer_lines_with_integer_ids_and_extra_keys(tmp_path):
    path = tmp_path / "answers.jsonl"
    path.write_text(
        '{"question_id": 10, "prompt": "Is there ...?", "text": "Yes.", "answer_id": "x", "model_id": "llava-med", "metadata": {}}\n'
        "\n"
        '{"question_id": "11", "text": null}\n'
    )
    assert read_predictions(path) == [Prediction("10", "Yes.", "", "Is there ...?"), Prediction("11", "", "", "")]


def test_reads_a_json_array_and_our_own_format_round_trips(tmp_path):
    ours = [Prediction("10", "no", "abc", "Is it? Please choose"), Prediction("11", "axial", "def", "Plane?")]
    write_predictions(tmp_path / "p.jsonl", ours)
    assert read_predictions(tmp_path / "p.jsonl") == ours
    (tmp_path / "a.json").write_text(json.dumps([{"question_id": 1, "text": "yes"}]))
    assert read_predictions(tmp_path / "a.json") == [Prediction("1", "yes")]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"question_id": 1, "text": "yes"}\n{"question_id": 2, "text": "no"\n', r"p.jsonl:2: not a JSON object"),
        ('{"text": "yes"}\n', r"p.jsonl:1: no 'question_id'"),
        ('{"question_id": 1}\n', r"p.jsonl:1: no 'text' \(the answer\)"),
        ('{"question_id": 1, "text": 3}\n', r"p.jsonl:1: 'text' is int, expected a string"),
        ('{"question_id": [1], "text": "x"}\n', r"p.jsonl:1: 'question_id' is list"),
        ('["a"]', r"p.jsonl: item 0: expected a JSON object, found str"),
        ("\n\n", r"p.jsonl: holds no prediction"),
    ],
)
def test_bad_answer_files_name_the_file_line_and_reason(tmp_path, content, message):
    (tmp_path / "p.jsonl").write_text(content)
    with pytest.raises(EvalInputError, match=message):
        read_predictions(tmp_path / "p.jsonl")


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(EvalInputError, match="no such prediction file"):
        read_predictions(tmp_path / "none.jsonl")
    with pytest.raises(EvalInputError, match="is a folder"):
        read_predictions(tmp_path)


def test_matching_counts_missing_unmatched_duplicates_and_sample_ids():
    records = [record("1"), record("2", "no"), record("3", "axial", "open"), record("4")]
    predictions = [
        Prediction("1", "yes"),
        Prediction("1", "no"),  # a second answer to 1: counted, not scored
        Prediction("s2", "no"),  # our sample id in question_id
        Prediction("x", "yes", sample_id="s3"),  # our sample id in sample_id
        Prediction("99", "yes"),  # no such question
    ]
    matched = match_predictions(records, predictions)
    r = matched.report
    assert (r.questions, r.predictions, r.matched, r.missing, r.unmatched, r.duplicates, r.by_sample_id) == (4, 5, 3, 1, 1, 1, 2)
    assert r.missing_ids == ["4"] and r.unmatched_ids == ["99"]
    assert [(i.question_id, i.prediction) for i in matched.items] == [("1", "yes"), ("2", "no"), ("3", "yes"), ("4", "")]
    assert [p.question_id for p in matched.predictions] == ["1", "2", "3"]
    assert matched.predictions[1].sample_id == "s2"
    assert r.line() == (
        "3/4 questions answered, 1 missing (scored as empty answers; e.g. 4), 1 predictions match no question (e.g. 99), "
        "1 repeated predictions (the first one is scored)"
    )


def test_a_llava_med_file_on_the_real_vqa_rad_test_split(staged, tmp_path):
    records = read_ground_truth(get_benchmark("vqa_rad"), staged / "vqa_rad")
    path = tmp_path / "answers.jsonl"
    path.write_text("".join(json.dumps({"question_id": int(r.question_id), "text": "yes"}) + "\n" for r in records[:-3]))
    matched = match_predictions(records, read_predictions(path))
    assert (matched.report.matched, matched.report.missing, matched.report.unmatched) == (448, 3, 0)
    assert [i.prediction for i in matched.items[-3:]] == ["", "", ""]
