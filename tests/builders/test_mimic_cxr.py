"""MIMIC-CXR builder on a generated copy in PhysioNet's layout: reports, VQA, and every bad input it names."""

from __future__ import annotations

import gzip
import json
from collections import Counter

import pytest
from support.mimic_trees import (
    FINDINGS,
    IMPRESSION,
    METADATA_CSV,
    SPLIT_CSV,
    STUDIES,
    VQA_DIR,
    default_vqa_rows,
    image_bytes,
    image_of,
    report,
    write_mimic_tree,
)
from support.raw_trees import read_rejects
from support.samples import build_named, samples_of

from omnivmed.builders import BuilderOptionError, LayoutError, get_builder
from omnivmed.builders.mimic_reports import report_sections, report_text
from omnivmed.data.manifest import verify_manifest


def build(raw, out, **options):
    result = build_named("mimic_cxr", raw, out, **options)
    assert verify_manifest(result.manifest_path) == []
    return result.manifest, samples_of(out), read_rejects(out)


def spec(study: str):
    return next(s for s in STUDIES if s.study == study)


def flat(text: str) -> str:
    return " ".join(text.split())


# ---------------------------------------------------------------- report generation


def test_reports_become_report_generation_samples_on_the_official_split(tmp_path):
    raw = write_mimic_tree(tmp_path / "raw")
    manifest, samples, rejects = build(raw, tmp_path / "out")
    assert manifest.options["tasks"] == "report"
    assert manifest.counts["task"] == {"report_generation": 4}
    assert manifest.counts["modality"] == {"x_ray": 4}
    by_study = {s.provenance.record_id: s for s in samples}
    assert sorted(by_study) == ["s50000001", "s50000002", "s50000007", "s50000008"]
    assert {k: s.split for k, s in by_study.items()} == {
        "s50000001": "train", "s50000002": "train", "s50000007": "test", "s50000008": "validation",
    }  # fmt: skip

    full = by_study["s50000001"]
    assert full.conversations[0].content.startswith("<image>\n") and full.conversations[0].role == "user"
    assert full.conversations[1].content == f"FINDINGS: {flat(FINDINGS)}\nIMPRESSION: {IMPRESSION}"
    pa = image_of("50000001", "pa1")[1]
    assert full.frames == (image_bytes("pa1"),) and full.frame_format == "jpeg"
    assert full.provenance.raw_paths == (f"files/p10/p10000032/s50000001/{pa.dicom}.jpg", "files/p10/p10000032/s50000001.txt")
    fields = dict(full.provenance.fields)
    assert fields == {"subject_id": "10000032", "study_id": "50000001", "dicom_id": pa.dicom, "ViewPosition": "PA", "sections": "findings,impression"}
    assert full.answer_type is None and full.visual_meta.original_shape == (40, 32)
    assert "PhysioNet" in full.provenance.license

    assert by_study["s50000002"].conversations[1].content == "IMPRESSION: Interval placement of a right PICC line, tip in the low SVC."
    assert dict(by_study["s50000002"].provenance.fields)["ViewPosition"] == "AP"
    # PA listed but absent on disk: the AP of the same study is taken and counted.
    assert by_study["s50000007"].frames == (image_bytes("ap7"),)
    assert manifest.counters == {"preferred_image_missing": 1}
    # A misspelled header (IMPRESSON) still counts as the impression.
    assert by_study["s50000008"].conversations[1].content.endswith("IMPRESSION: Small left pleural effusion.")
    assert [i.path for i in manifest.inputs] == [METADATA_CSV, SPLIT_CSV]


def test_every_bad_study_is_one_reject_naming_its_file(tmp_path):
    raw = write_mimic_tree(tmp_path / "raw")
    manifest, samples, rejects = build(raw, tmp_path / "out")
    got = sorted((r["reason"], r["record"], r["file"]) for r in rejects)
    stray, pa5, pa9 = image_of("50000001", "stray1")[1], image_of("50000005", "pa5")[1], image_of("50000009", "pa9")[1]
    assert got == sorted([
        ("not_in_split_csv", stray.dicom, f"files/p10/p10000032/s50000001/{stray.dicom}.jpg"),
        ("not_in_split_csv", pa5.dicom, f"files/p11/p11000011/s50000005/{pa5.dicom}.jpg"),
        ("not_in_split_csv", "s50000005", "files/p11/p11000011/s50000005.txt"),
        ("no_findings_impression", "s50000003", "files/p11/p11000011/s50000003.txt"),
        ("no_view", "s50000004", "files/p11/p11000011/s50000004.txt"),
        ("missing_report", "s50000006", "files/p12/p12000022/s50000006.txt"),
        ("missing_image", "s50000009", f"files/p12/p12000022/s50000009/{pa9.dicom}.jpg"),
    ])  # fmt: skip
    assert all(r["detail"] and str(tmp_path) not in r["detail"] for r in rejects)
    assert manifest.rejects == dict(sorted(Counter(r["reason"] for r in rejects).items()))
    # Every study of the split CSV is either a Sample or a reject.
    listed = {s.study for s in STUDIES if s.split is not None}
    rejected = {r["record"][1:] for r in rejects if r["record"].startswith("s5")}
    assert {s.provenance.record_id[1:] for s in samples} | (rejected & listed) == listed


def test_options_views_and_sections(tmp_path):
    raw = write_mimic_tree(tmp_path / "raw")
    manifest, samples, rejects = build(raw, tmp_path / "out", views="LATERAL", sections="findings")
    assert {s.provenance.record_id for s in samples} == {"s50000001", "s50000004"}
    lateral = next(s for s in samples if s.provenance.record_id == "s50000001")
    assert lateral.frames == (image_bytes("lat1"),)
    assert lateral.conversations[1].content == flat(FINDINGS)  # one section: no header
    assert "findings section of" in lateral.conversations[0].content
    reasons = Counter(r["reason"] for r in rejects)
    assert reasons["no_findings_impression"] == 2  # s50000002 has only an impression now
    with pytest.raises(BuilderOptionError, match="tasks"):
        get_builder("mimic_cxr", {"tasks": "report,captions"})
    with pytest.raises(BuilderOptionError, match="sections"):
        get_builder("mimic_cxr", {"sections": "history"})


def test_unpacked_tables_and_metadata_csv_name(tmp_path):
    raw = write_mimic_tree(tmp_path / "raw", gzip_tables=False)
    (raw / METADATA_CSV[:-3]).rename(raw / "metadata.csv")
    manifest, samples, _ = build(raw, tmp_path / "out")
    assert len(samples) == 4
    assert [i.path for i in manifest.inputs] == ["metadata.csv", SPLIT_CSV[:-3]]


def test_split_csv_bad_rows_and_conflicting_splits(tmp_path):
    raw = write_mimic_tree(tmp_path / "raw")
    lines = gzip.decompress((raw / SPLIT_CSV).read_bytes()).decode().splitlines()
    pa8 = image_of("50000008", "pa8")[1]
    lines += [f"{pa8.dicom}x,50000008,12000022,train", "abc,notanumber,12000022,train", "def,50000010,12000022,holdout"]
    (raw / SPLIT_CSV).write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    manifest, samples, rejects = build(raw, tmp_path / "out")
    reasons = Counter(r["reason"] for r in rejects)
    assert reasons["malformed_record"] == 2 and reasons["conflicting_split"] == 1
    assert reasons["not_in_split_csv"] == 3  # the conflicting study's files are not reported a second time
    conflict = next(r for r in rejects if r["reason"] == "conflicting_split")
    assert conflict["record"] == "s50000008" and conflict["file"] == SPLIT_CSV
    assert "s50000008" not in {s.provenance.record_id for s in samples}


def test_report_section_parser():
    text = report(("FINDINGS", "A.\n  B."), ("WET READ", "ignored"), ("CONCLUSION", "C."), ("FINDINGS", " "), ("FINDINGS/IMPRESSION", "D."))
    assert report_sections(text) == {"findings": "A. B.", "impression": "C. D."}
    assert report_text({"impression": "C."}, ("findings", "impression")) == "IMPRESSION: C."
    assert report_text({}, ("findings", "impression")) == ""
    assert report_sections(report(("COMPARISON", "None."))) == {}


# ---------------------------------------------------------------- VQA


def test_vqa_rows_with_answers_become_vqa_samples(tmp_path):
    raw = write_mimic_tree(tmp_path / "raw")
    manifest, samples, rejects = build(raw, tmp_path / "out", tasks="vqa")
    assert [i.path for i in manifest.inputs] == [METADATA_CSV, f"{VQA_DIR}/test.json", f"{VQA_DIR}/train.json", f"{VQA_DIR}/valid.json"]
    assert manifest.counts["task"] == {"vqa": 3}
    by_idx = {dict(s.provenance.fields)["idx"]: s for s in samples}
    assert {k: (s.split, s.answer_type, s.conversations[1].content) for k, s in by_idx.items()} == {
        "0": ("test", "closed", "yes"),
        "1": ("validation", "closed", "left"),
        "2": ("train", "open", "atelectasis, pleural effusion"),
    }
    first = by_idx["0"]
    row = default_vqa_rows()["test.json"][0]
    assert first.conversations[0].content == f"<image>\n{row['question']}"
    assert first.frames == (image_bytes("pa6"),) and first.modality == "x_ray"
    assert first.provenance.raw_paths == (f"files/{row['image_path']}",)
    fields = dict(first.provenance.fields)
    assert fields["ViewPosition"] == "PA" and fields["content_type"] == "presence" and fields["semantic_type"] == "verify"
    assert json.loads(fields["template_arguments"]) == row["template_arguments"]
    assert json.loads(fields["answer"]) == ["yes"]
    assert sorted((r["record"], r["reason"]) for r in rejects) == [
        (f"{VQA_DIR}/train.json:3", "empty_answer"),
        (f"{VQA_DIR}/train.json:4", "missing_answer"),
        (f"{VQA_DIR}/train.json:5", "missing_image"),
    ]


def test_report_and_vqa_together_and_malformed_vqa_json(tmp_path):
    rows = default_vqa_rows()
    rows["valid.json"] = json.dumps(rows["valid.json"])[:-20]
    raw = write_mimic_tree(tmp_path / "raw", vqa=rows)
    manifest, samples, rejects = build(raw, tmp_path / "out", tasks="report,vqa")
    assert manifest.counts["task"] == {"report_generation": 4, "vqa": 2}
    broken = [r for r in rejects if r["reason"] == "malformed_json"]
    assert [(r["file"], r["record"]) for r in broken] == [(f"{VQA_DIR}/valid.json", "#0")]


def test_layout_errors_say_what_is_expected(tmp_path):
    with pytest.raises(LayoutError, match="no such folder"):
        get_builder("mimic_cxr").check_layout(tmp_path / "absent")
    raw = write_mimic_tree(tmp_path / "raw", vqa={})
    get_builder("mimic_cxr").check_layout(raw)
    with pytest.raises(LayoutError, match="run MIMIC-CXR-VQA's build script") as err:
        get_builder("mimic_cxr", {"tasks": "vqa"}).check_layout(raw)
    assert "\n" not in str(err.value)
    (raw / SPLIT_CSV).unlink()
    with pytest.raises(LayoutError, match="split.csv"):
        get_builder("mimic_cxr").check_layout(raw)
    with pytest.raises(LayoutError, match="files/"):
        get_builder("mimic_cxr").check_layout(tmp_path)
    assert get_builder("mimic_cxr").info.gated


def test_vqa_dir_option_and_the_physionet_folder(tmp_path):
    raw = write_mimic_tree(tmp_path / "raw")
    (raw / "mimiccxrvqa").rename(raw / "elsewhere")
    with pytest.raises(LayoutError):
        get_builder("mimic_cxr", {"tasks": "vqa"}).check_layout(raw)
    manifest, samples, _ = build(raw, tmp_path / "out", tasks="vqa", vqa_dir="elsewhere/dataset")
    assert len(samples) == 3
    (raw / "elsewhere").rename(raw / "MIMIC-Ext-MIMIC-CXR-VQA")
    manifest, samples, _ = build(raw, tmp_path / "out2", tasks="vqa")
    assert len(samples) == 3


def test_a_truncated_image_and_an_unreadable_report(tmp_path):
    raw = write_mimic_tree(tmp_path / "raw")
    ap2 = image_of("50000002", "ap2")[1]
    image = raw / f"files/p10/p10000032/s50000002/{ap2.dicom}.jpg"
    image.write_bytes(image.read_bytes()[:200])
    (raw / "files/p12/p12000022/s50000008.txt").write_bytes(b"\xff\xfe FINDINGS: \x80\x81")
    manifest, samples, rejects = build(raw, tmp_path / "out")
    bad = {r["record"]: (r["reason"], r["file"]) for r in rejects if r["record"] in ("s50000002", "s50000008")}
    assert bad == {
        "s50000002": ("unreadable_image", f"files/p10/p10000032/s50000002/{ap2.dicom}.jpg"),
        "s50000008": ("unreadable_report", "files/p12/p12000022/s50000008.txt"),
    }
    assert {s.provenance.record_id for s in samples} == {"s50000001", "s50000007"}
