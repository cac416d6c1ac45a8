"""The m3d_vqa builder on small generated copies: M3D_VQA_*.csv plus M3D-Cap volumes (.npy and slice folders)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from support.m3d_trees import (
    ARTERIAL,
    AXIAL,
    BONE,
    CORONAL,
    LONG_TEXT,
    LUNG_NPY,
    PLANES,
    default_vqa_rows,
    make_m3d_vqa_tree,
    npy_volume,
    vqa_row,
    write_vqa_csv,
)
from support.raw_trees import read_rejects
from support.samples import build_named, samples_of

import omnivmed.builders.m3d_vqa as m3d_vqa
from omnivmed.builders import BuilderOptionError, LayoutError, get_builder
from omnivmed.data.volume.encode import from_png


def build(raw: Path, out: Path, **options):
    return build_named("m3d_vqa", raw, out, **options)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return make_m3d_vqa_tree(tmp_path_factory.mktemp("m3d_vqa") / "raw")


@pytest.fixture(scope="module")
def built(tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("m3d_vqa_out")
    return build(tree, out), samples_of(out)


@pytest.fixture
def copy(tree, tmp_path) -> Path:
    return Path(shutil.copytree(tree, tmp_path / "raw"))


def by_record(samples) -> dict:
    return {s.provenance.record_id: s for s in samples}


def test_counts_per_split_and_form(built):
    result, samples = built
    manifest = result.manifest
    assert manifest.rejects == {} and manifest.duplicates_removed == 0
    # 4 test rows (test5k, a subset of test, is not read), 2 val rows, 3 train rows; two forms each.
    assert manifest.counts["split"] == {"test": 8, "validation": 4, "train": 6}
    assert manifest.counts["task"] == {"vqa": 18} and manifest.counts["modality"] == {"ct": 18}
    assert [i.path for i in manifest.inputs] == ["M3D_VQA/M3D_VQA_test.csv", "M3D_VQA/M3D_VQA_train.csv", "M3D_VQA/M3D_VQA_val.csv"]
    assert sorted(s.answer_type for s in samples) == ["closed"] * 9 + ["open"] * 9


def test_closed_and_open_forms_are_formatted_as_m3d_does(built):
    _, samples = built
    found = by_record(samples)
    closed = found["M3D_VQA/M3D_VQA_test.csv#0:closed"]
    assert closed.conversations[0].content == (
        "<image>\nIn which plane is this image scanned? Choices: A. Axial B. Coronal C. Sagittal D. Oblique"
    )
    assert closed.conversations[1].content == "A. Axial" and closed.answer_type == "closed"
    opened = found["M3D_VQA/M3D_VQA_test.csv#0:open"]
    assert opened.conversations[0].content == "<image>\nIn which plane is this image scanned?"
    assert opened.conversations[1].content == "Axial" and opened.answer_type == "open"
    abnormality = found["M3D_VQA/M3D_VQA_test.csv#3:closed"]
    assert abnormality.conversations[1].content == "A. Ground-glass opacities"
    fields = dict(abnormality.provenance.fields)
    assert (fields["question_type"], fields["question_type_name"], fields["answer_choice"], fields["m3d_split"]) == (
        "4",
        "abnormality",
        "A",
        "test",
    )
    fields = dict(found["M3D_VQA/M3D_VQA_val.csv#1:open"].provenance.fields)
    assert (fields["question_type"], fields["question_type_name"], fields["answer_choice"], fields["m3d_split"]) == (
        "5",
        "location",
        "A",
        "val",
    )
    names = {dict(s.provenance.fields)["question_type"]: dict(s.provenance.fields)["question_type_name"] for s in samples}
    assert names == {"1": "plane", "2": "phase", "3": "organ", "4": "abnormality", "5": "location"}


def test_every_row_gets_its_volume_whatever_the_path_prefix(built, tree):
    _, samples = built
    found = by_record(samples)
    volumes = {
        "M3D_VQA/M3D_VQA_test.csv#0": BONE.slice_dir,
        "M3D_VQA/M3D_VQA_test.csv#2": LUNG_NPY.npy_file,
        "M3D_VQA/M3D_VQA_val.csv#0": ARTERIAL.slice_dir,
        "M3D_VQA/M3D_VQA_train.csv#0": AXIAL.slice_dir,
        "M3D_VQA/M3D_VQA_train.csv#2": CORONAL.slice_dir,
    }
    for record, volume in volumes.items():
        for form in ("closed", "open"):
            sample = found[f"{record}:{form}"]
            assert sample.provenance.raw_paths == (volume, record.split("#")[0])
            assert len(sample.frames) == 32 and from_png(sample.frames[0]).shape == (256, 256)
    lung = found["M3D_VQA/M3D_VQA_test.csv#2:open"]
    assert np.abs(np.stack([from_png(f) for f in lung.frames]) - npy_volume()[0]).max() <= 0.5 / 255 + 1e-6
    # Both questions about a volume carry the same frames.
    assert found["M3D_VQA/M3D_VQA_test.csv#0:open"].frames == found["M3D_VQA/M3D_VQA_test.csv#1:open"].frames


def test_the_report_column_is_not_stored(built):
    _, samples = built
    for s in samples:
        text = json.dumps(s.to_row()["conversations"]) + json.dumps(s.to_row()["provenance"])
        assert "A long report" not in text and "study_findings" not in text


def test_adjacent_rows_read_their_volume_once(copy, tmp_path, monkeypatch):
    calls = []
    real = m3d_vqa.load_volume

    def counting(raw, path, settings):
        calls.append(path)
        return real(raw, path, settings)

    monkeypatch.setattr(m3d_vqa, "load_volume", counting)
    build(copy, tmp_path / "out")
    assert sorted(calls) == sorted({r["Image Path"] for stem, rows in default_vqa_rows().items() if stem != "M3D_VQA_test5k" for r in rows})


def test_test5k_is_read_only_without_the_full_test_file(copy, tmp_path):
    (copy / "M3D_VQA" / "M3D_VQA_test.csv").unlink()
    result = build(copy, tmp_path / "out")
    assert result.manifest.counts["split"] == {"test": 2, "validation": 4, "train": 6}
    assert "M3D_VQA/M3D_VQA_test5k.csv" in [i.path for i in result.manifest.inputs]
    test = [s for s in samples_of(tmp_path / "out") if s.split == "test"]
    assert {dict(s.provenance.fields)["m3d_split"] for s in test} == {"test5k"}


def test_csvs_at_the_top_of_the_raw_folder(copy, tmp_path):
    for path in (copy / "M3D_VQA").iterdir():
        path.rename(copy / path.name)
    (copy / "M3D_VQA").rmdir()
    result = build(copy, tmp_path / "out", forms="open")
    assert result.manifest.counts["split"] == {"test": 4, "validation": 2, "train": 3}
    assert result.manifest.counts["task"] == {"vqa": 9} and not result.manifest.rejects


def test_a_rerun_is_reused_and_a_changed_option_rebuilds(tree, tmp_path):
    first = build(tree, tmp_path / "out")
    again = build(tree, tmp_path / "out")
    assert not first.reused and again.reused and again.manifest == first.manifest
    changed = build(tree, tmp_path / "out", forms="closed")
    assert not changed.reused and changed.manifest.rows == 9
    assert {s.answer_type for s in samples_of(tmp_path / "out")} == {"closed"}


def test_bad_rows_are_rejected_and_the_rest_is_built(copy, tmp_path):
    rows = default_vqa_rows()["M3D_VQA_val"]
    image = ARTERIAL.index_image("M3D_Cap/")
    bad = [
        vqa_row(image, 0, "Which plane?", PLANES, "A"),  # 2: question type out of range
        vqa_row(image, "x", "Which plane?", PLANES, "A"),  # 3: not a number
        vqa_row(image, "", "Which plane?", PLANES, "A"),  # 4: empty
        vqa_row(image, 1, "", PLANES, "A"),  # 5: no question (both forms)
        vqa_row(image, 1, "Which plane?", ("Axial", "Coronal", "", "Oblique"), "A"),  # 6: a choice missing: closed only
        vqa_row(image, 1, "Which plane is it?", PLANES, "E"),  # 7: answer choice not A-D: closed only (the open answer is empty)
        vqa_row("M3D_Cap_npy/ct_case/000099/Missing.npy", 1, "Which plane?", PLANES, "B"),  # 8: no volume
        vqa_row("../../ct_case/000001/x.npy", 1, "Which plane?", PLANES, "B"),  # 9: leaves the raw folder
        vqa_row(image, "2.0", "Which phase?", PLANES, "D"),  # 10: "2.0" is type 2: built
    ]
    bad[5]["Answer"] = "Axial"
    write_vqa_csv(copy / "M3D_VQA" / "M3D_VQA_val.csv", rows + bad)
    result = build(copy, tmp_path / "out")
    rejects = [(r["file"], r["record"], r["reason"]) for r in read_rejects(tmp_path / "out")]
    val = "M3D_VQA/M3D_VQA_val.csv"
    assert rejects == [
        (val, f"{val}#2", "bad_question_type"),
        (val, f"{val}#3", "bad_question_type"),
        (val, f"{val}#4", "bad_question_type"),
        (val, f"{val}#5:closed", "missing_question"),
        (val, f"{val}#5:open", "missing_question"),
        (val, f"{val}#6:closed", "missing_choice"),
        (val, f"{val}#7:closed", "bad_answer_choice"),
        ("M3D_Cap_npy/ct_case/000099/Missing.npy", f"{val}#8", "missing_volume"),
        ("../../ct_case/000001/x.npy", f"{val}#9", "path_escapes_raw"),
    ]
    # The good rows: 2 + row 10 in both forms, rows 6 and 7 in the open form.
    assert result.manifest.counts["split"] == {"test": 8, "validation": 8, "train": 6}
    assert "M3D_VQA/M3D_VQA_val.csv#10:closed" in by_record(samples_of(tmp_path / "out"))
    for r in read_rejects(tmp_path / "out"):
        assert str(tmp_path) not in json.dumps(r)


def test_a_bad_volume_is_rejected_once_per_row(copy, tmp_path):
    np.save(copy / LUNG_NPY.npy_file, np.zeros((2, 3), dtype=np.float32))
    result = build(copy, tmp_path / "out")
    rejects = read_rejects(tmp_path / "out")
    assert [(r["file"], r["record"], r["reason"]) for r in rejects] == [
        (LUNG_NPY.npy_file, "M3D_VQA/M3D_VQA_test.csv#2", "bad_npy_shape"),
        (LUNG_NPY.npy_file, "M3D_VQA/M3D_VQA_test.csv#3", "bad_npy_shape"),
    ]
    assert result.manifest.counts["split"] == {"test": 4, "validation": 4, "train": 6}


def test_a_csv_without_the_columns_is_one_reject(copy, tmp_path):
    (copy / "M3D_VQA" / "M3D_VQA_train.csv").write_text("Image Path,Question\nct_case/1/a.npy,What?\n")
    result = build(copy, tmp_path / "out")
    assert result.manifest.rejects == {"malformed_csv": 1}
    assert result.manifest.counts["split"] == {"test": 8, "validation": 4}


def test_long_report_cells_are_read(copy, tmp_path):
    rows = default_vqa_rows()["M3D_VQA_train"]
    rows[0]["Text"] = LONG_TEXT * 200  # ~0.5 MB in one cell: above the csv module's default field limit
    write_vqa_csv(copy / "M3D_VQA" / "M3D_VQA_train.csv", rows)
    result = build(copy, tmp_path / "out")
    assert result.manifest.rejects == {} and result.manifest.counts["split"]["train"] == 6


def test_absent_or_foreign_folders_stop_with_one_line(tmp_path):
    with pytest.raises(LayoutError, match="no such folder"):
        build(tmp_path / "nowhere", tmp_path / "out")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "M3D_VQA_notes.csv").write_text("a,b\n")
    with pytest.raises(LayoutError) as err:
        build(tmp_path / "other", tmp_path / "out")
    message = str(err.value)
    assert "\n" not in message and "M3D_VQA_" in message and "download m3d_vqa --from PATH" in message


def test_options_are_checked():
    with pytest.raises(BuilderOptionError, match="forms"):
        get_builder("m3d_vqa", {"forms": "closed,multiple"})
    with pytest.raises(BuilderOptionError, match="bit depth"):
        get_builder("m3d_vqa", {"bit_depth": "12"})
    assert get_builder("m3d_vqa", {"forms": "open, closed"}).forms == ("open", "closed")
