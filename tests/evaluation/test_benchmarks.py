"""Ground truth from built manifests, keyed by the sources' own question ids (real embedded files)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from omnivmed.build import build_source
from omnivmed.builders import get_builder
from omnivmed.evaluation.benchmarks import BENCHMARKS, frames_of, get_benchmark, m3d_choices, parse_benchmarks, read_ground_truth, record_of
from omnivmed.evaluation.errors import EvalInputError
from support.m3d_trees import make_m3d_vqa_tree
from support.surgical_trees import make_endovis18_tree, make_psiava_tree

DATA = Path(__file__).resolve().parents[2] / "data"


def test_the_seven_benchmarks_and_their_splits():
    assert list(BENCHMARKS) == ["vqa_rad", "slake", "pathvqa", "m3d_vqa", "cholec80_vqa", "endovis18_vqa", "psiava_vqa"]
    splits = {name: b.split for name, b in BENCHMARKS.items()}
    assert splits == {"vqa_rad": "test", "slake": "test", "pathvqa": "test", "m3d_vqa": "test", "cholec80_vqa": "validation", "endovis18_vqa": "validation", "psiava_vqa": "validation"}
    assert [b.name for b in parse_benchmarks("slake, vqa_rad")] == ["slake", "vqa_rad"]
    assert len(parse_benchmarks("all")) == 7
    with pytest.raises(EvalInputError, match="unknown benchmark 'vqa-rad'; known: vqa_rad"):
        get_benchmark("vqa-rad")


def test_vqa_rad_ground_truth_is_the_official_test_rows_by_qid(staged):
    records = read_ground_truth(get_benchmark("vqa_rad"), staged / "vqa_rad")
    rows = json.loads((DATA / "vqa_rad" / "VQA_RAD Dataset Public.json").read_text(encoding="utf-8"))
    test = {str(r["qid"]): r for r in rows if r["phrase_type"].startswith("test_")}
    assert len(records) == len(test) == 451
    assert {r.question_id for r in records} == set(test)
    for record in records:
        row = test[record.question_id]
        assert record.question == row["question"].strip()
        assert record.answer == str(row["answer"]).strip()
        assert record.answer_type == row["answer_type"].strip().lower()
        assert record.question_type == row["question_type"]
        assert record.split == "test" and record.visual_kind == "image" and record.n_frames == 1
        assert dict(record.extra)["benchmark"] == "vqa_rad"
    assert Counter(r.answer_type for r in records) == {"closed": 272, "open": 179}
    assert len({r.sample_id for r in records}) == 451
    first = records[0]
    assert first.question_id == "10" and first.answer == "yes" and first.modality == "x_ray"
    assert frames_of(first)[0] == (DATA / "vqa_rad" / "VQA_RAD Image Folder" / "synpic42202.jpg").read_bytes()
    item = first.item("Yes.")
    assert (item.question_id, item.sample_id, item.prediction, item.answer_type) == ("10", first.sample_id, "Yes.", "closed")


def test_slake_ground_truth_is_keyed_by_qid_english_only(staged):
    records = read_ground_truth(get_benchmark("slake"), staged / "slake")
    rows = json.loads((staged.parent / "raw" / "slake" / "test.json").read_text(encoding="utf-8"))
    english = {str(r["qid"]): r for r in rows if r["q_lang"] == "en"}
    assert {r.question_id for r in records} == set(english) and len(records) == 28
    for record in records:
        assert record.question_type == english[record.question_id]["content_type"]
        assert record.answer == english[record.question_id]["answer"].strip()
    validation = read_ground_truth(get_benchmark("slake"), staged / "slake", split="validation")
    assert len(validation) == 23 and all(r.split == "validation" for r in validation)


def test_cholec80_ground_truth_is_the_held_out_video_by_frame_and_question(staged):
    records = read_ground_truth(get_benchmark("cholec80_vqa"), staged / "cholec80_vqa")
    assert [r.question_id for r in records][0] == "5/100|what is the phase of image?"
    assert len(records) == 4 and {r.split for r in records} == {"validation"}
    assert all(r.question_id.startswith("5/") for r in records)
    assert {r.visual_kind for r in records} == {"video"} and {r.n_frames for r in records} == {8}
    assert {r.question_type for r in records} >= {"phase_recognition"}


def test_m3d_from_a_raw_folder_closed_and_open_with_choices_and_type(tmp_path):
    raw = make_m3d_vqa_tree(tmp_path / "raw")
    manifest = build_source(get_builder("m3d_vqa"), raw, tmp_path / "staged", progress=False).manifest_path
    records = read_ground_truth(get_benchmark("m3d_vqa"), manifest)
    by_id = {r.question_id: r for r in records}
    assert sorted(by_id) == sorted(f"test#{row}:{form}" for row in range(4) for form in ("closed", "open"))
    closed, opened = by_id["test#3:closed"], by_id["test#3:open"]
    assert closed.choices == ("Ground-glass opacities", "Cyst", "Mass", "Effusion")
    assert (closed.answer_choice, closed.answer, closed.question_type) == ("A", "Ground-glass opacities", "abnormality")
    assert closed.question.endswith("Choices: A. Ground-glass opacities B. Cyst C. Mass D. Effusion")
    assert (opened.choices, opened.answer, opened.answer_type) == ((), "Ground-glass opacities", "open")
    assert by_id["test#0:closed"].question_type == "plane" and by_id["test#1:open"].question_type == "organ"
    assert closed.visual_kind == "volume" and closed.n_frames > 1


@pytest.mark.parametrize(
    ("name", "make", "first"),
    [
        ("endovis18_vqa", make_endovis18_tree, "seq_1/"),
        ("psiava_vqa", make_psiava_tree, "CASE"),
    ],
)
def test_surgical_validation_questions_are_keyed_by_frame_and_question(tmp_path, name, make, first):
    raw = make(tmp_path / "raw")
    manifest = build_source(get_builder(name, {"short_side": "0"}), raw, tmp_path / "staged", progress=False).manifest_path
    records = read_ground_truth(get_benchmark(name), manifest)
    assert records and all(r.split == "validation" for r in records)
    assert all(r.question_id.startswith(first) and "|" in r.question_id for r in records)
    video_frame, question = records[0].question_id.split("|", 1)
    assert question == records[0].question


def test_pathvqa_ids_are_the_lxmert_image_and_index():
    row = {
        "id": "abc",
        "source": "pathvqa",
        "split": "test",
        "task": "vqa",
        "modality": "pathology",
        "visual_kind": "image",
        "frame_format": "jpeg",
        "conversations": [{"role": "user", "content": "<image>\nIs this a granuloma?"}, {"role": "assistant", "content": "yes"}],
        "answer_type": "closed",
        "provenance": {"raw_paths": [], "record_id": "test_0003:2", "license": "", "source_url": "", "fields": [{"key": "img_id", "value": "test_0003"}]},
    }
    record = record_of(get_benchmark("pathvqa"), row)
    assert (record.question_id, record.question, record.answer, record.question_type) == ("test_0003:2", "Is this a granuloma?", "yes", "")


def test_m3d_choices_parse():
    assert m3d_choices("Which plane? Choices: A. Axial B. Coronal C. Sagittal D. Oblique") == ("Axial", "Coronal", "Sagittal", "Oblique")
    assert m3d_choices("Which plane?") == ()


def test_bad_ground_truth_is_one_line(staged, tmp_path):
    with pytest.raises(EvalInputError) as err:
        read_ground_truth(get_benchmark("vqa_rad"), staged / "slake")
    assert str(err.value) == f"{staged / 'slake' / 'manifest.json'}: no vqa_rad test questions (no vqa_rad rows at all)"
    with pytest.raises(EvalInputError, match=r"no vqa_rad validation questions \(splits present: test, train\)"):
        read_ground_truth(get_benchmark("vqa_rad"), staged / "vqa_rad", split="validation")
    with pytest.raises(EvalInputError, match="no such manifest"):
        read_ground_truth(get_benchmark("vqa_rad"), tmp_path / "nothing.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(EvalInputError, match="broken.json: not valid JSON"):
        read_ground_truth(get_benchmark("vqa_rad"), tmp_path / "broken.json")
