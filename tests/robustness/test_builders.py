"""Bad input to the 2D, surgical, PubMedVision and MIMIC builders, through the CLI as a user meets it.

Every case: one ``error:`` line (or a rejects report) naming the file and the
reason, the exit status the rule gives, and no traceback.

- a foreign layout, an empty annotation file, a missing folder, a file where a
  folder belongs: stop before any work with one line, exit 2;
- inputs present but nothing accepted: exit 1 with the top reasons and counts,
  and no manifest (so nothing downstream takes it for a staged source);
- a whole input file unreadable while the rest built: the rest is kept, exit 1;
- record-level rejects: reported, exit 0.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from support.mimic_trees import VQA_DIR, write_mimic_tree
from support.pubmedvision_trees import alignment_rows_from_captions, image_bytes, row_images, write_tree
from support.raw_trees import DATA, VQA_RAD_JSON, make_vqa_rad_subset, read_rejects, write_vqa_rad_json
from support.surgical_trees import make_cholec80_tree, make_endovis18_tree
from typer.testing import CliRunner

from omnivmed.builders.pubmedvision import ALIGNMENT_JSON
from omnivmed.cli.data import app

runner = CliRunner()
SLAKE = DATA / "slake"


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def build(source, raw, out, *options):
    return run("build", source, "--raw", raw, "--out", out, "--no-progress", *options)


def error_line(result) -> str:
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    return errors[0]


def make_slake(raw: Path, n: int = 6) -> Path:
    """The first ``n`` English rows of each vendored SLAKE file, with their images."""
    raw.mkdir(parents=True)
    for name in ("train.json", "validate.json", "test.json"):
        rows = json.loads((SLAKE / name).read_text(encoding="utf-8"))
        rows = [r for r in rows if r.get("q_lang") == "en" and (SLAKE / "imgs" / r["img_name"]).is_file()][:n]
        (raw / name).write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
        for row in rows:
            target = raw / "imgs" / row["img_name"]
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(SLAKE / "imgs" / row["img_name"], target)
    return raw


# -- VQA-RAD ------------------------------------------------------------------------------------


def test_vqa_rad_empty_annotation_json_stops_naming_the_file(tmp_path):
    raw = make_vqa_rad_subset(tmp_path / "raw", 3)
    (raw / VQA_RAD_JSON).write_text("")
    result = build("vqa_rad", raw, tmp_path / "out")
    assert result.exit_code == 2
    line = error_line(result)
    assert VQA_RAD_JSON in line and "empty file" in line
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_vqa_rad_truncated_json_accepts_nothing_and_exits_1(tmp_path):
    raw = make_vqa_rad_subset(tmp_path / "raw", 3)
    text = (raw / VQA_RAD_JSON).read_text()
    (raw / VQA_RAD_JSON).write_text(text[: len(text) // 2])
    result = build("vqa_rad", raw, tmp_path / "out")
    assert result.exit_code == 1
    line = error_line(result)
    assert "nothing accepted" in line and "malformed_json 1" in line and VQA_RAD_JSON in line
    assert not (tmp_path / "out" / "manifest.json").exists()  # never taken for a staged source
    assert read_rejects(tmp_path / "out")[0]["reason"] == "malformed_json"


def test_vqa_rad_empty_array_accepts_nothing(tmp_path):
    raw = make_vqa_rad_subset(tmp_path / "raw", 3)
    write_vqa_rad_json(raw, [])
    result = build("vqa_rad", raw, tmp_path / "out")
    assert result.exit_code == 1 and "no vqa_rad records" in error_line(result)


def test_vqa_rad_foreign_record_layout_stops(tmp_path):
    raw = make_vqa_rad_subset(tmp_path / "raw", 3)
    write_vqa_rad_json(raw, [{"image": "synpic1.jpg", "qa": [{"q": "?", "a": "yes"}]}])
    result = build("vqa_rad", raw, tmp_path / "out")
    assert result.exit_code == 2
    line = error_line(result)
    assert "foreign layout" in line and VQA_RAD_JSON in line and "image_name" in line and "found records with keys image, qa" in line


def test_vqa_rad_every_image_missing_exits_1_with_the_top_reason(tmp_path):
    raw = make_vqa_rad_subset(tmp_path / "raw", 4)
    for image in (raw / "VQA_RAD Image Folder").iterdir():
        image.unlink()
    result = build("vqa_rad", raw, tmp_path / "out")
    assert result.exit_code == 1
    line = error_line(result)
    assert "nothing accepted" in line and "missing_image 4" in line and "no such image" in line


def test_vqa_rad_without_its_image_folder_stops(tmp_path):
    raw = make_vqa_rad_subset(tmp_path / "raw", 2)
    shutil.rmtree(raw / "VQA_RAD Image Folder")
    result = build("vqa_rad", raw, tmp_path / "out")
    assert result.exit_code == 2 and "VQA_RAD Image Folder" in error_line(result)


def test_vqa_rad_raw_folder_absent(tmp_path):
    result = build("vqa_rad", tmp_path / "nowhere", tmp_path / "out")
    assert result.exit_code == 2 and "no such folder" in error_line(result)


def test_vqa_rad_escaping_and_corrupt_images_are_rejects_the_rest_builds(tmp_path):
    raw = make_vqa_rad_subset(tmp_path / "raw", 6)
    rows = json.loads((raw / VQA_RAD_JSON).read_text())
    rows[0]["image_name"] = "../../../etc/passwd"
    (raw / "VQA_RAD Image Folder" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    rows[1]["image_name"] = "broken.jpg"
    write_vqa_rad_json(raw, rows)
    result = build("vqa_rad", raw, tmp_path / "out")
    assert result.exit_code == 0, result.output
    rejects = {r["reason"]: r for r in read_rejects(tmp_path / "out")}
    assert "etc/passwd" in rejects["path_escapes_raw"]["detail"]
    assert "broken.jpg" in rejects["unreadable_image"]["detail"]
    assert "0x" not in rejects["unreadable_image"]["detail"] and "object at" not in rejects["unreadable_image"]["detail"]


def test_vqa_rad_record_level_problems_are_reported_and_the_rest_builds(tmp_path):
    raw = make_vqa_rad_subset(tmp_path / "raw", 6)
    rows = json.loads((raw / VQA_RAD_JSON).read_text())
    rows[0]["question"] = ""
    rows[1]["answer_type"] = "MAYBE"
    rows[2] = "not an object"
    write_vqa_rad_json(raw, rows)
    result = build("vqa_rad", raw, tmp_path / "out")
    assert result.exit_code == 0 and "Traceback" not in result.output
    reasons = sorted(r["reason"] for r in read_rejects(tmp_path / "out"))
    assert reasons == ["bad_answer_type", "empty_question", "malformed_record"]


# -- SLAKE ----------------------------------------------------------------------------------------


def test_slake_per_image_grouped_object_from_another_mirror_stops(tmp_path):
    raw = make_slake(tmp_path / "raw")
    rows = json.loads((raw / "train.json").read_text())
    grouped = {}
    for r in rows:
        grouped.setdefault(r["img_name"], []).append({"question": r["question"], "answer": r["answer"]})
    (raw / "train.json").write_text(json.dumps(grouped))
    result = build("slake", raw, tmp_path / "out")
    assert result.exit_code == 2
    line = error_line(result)
    assert "train.json" in line and "foreign layout" in line and "grouped per image" in line and "q_lang" in line


def test_slake_per_image_grouped_list_stops(tmp_path):
    raw = make_slake(tmp_path / "raw")
    rows = json.loads((raw / "test.json").read_text())
    grouped = [{"img_name": r["img_name"], "qas": [{"q": r["question"], "a": r["answer"]}]} for r in rows]
    (raw / "test.json").write_text(json.dumps(grouped))
    result = build("slake", raw, tmp_path / "out")
    assert result.exit_code == 2
    line = error_line(result)
    assert "test.json" in line and "foreign layout" in line and "img_name, qas" in line


def test_slake_empty_annotation_file_stops(tmp_path):
    raw = make_slake(tmp_path / "raw")
    (raw / "validate.json").write_text("  \n")
    result = build("slake", raw, tmp_path / "out")
    assert result.exit_code == 2 and "validate.json: empty file" in error_line(result)


def test_slake_truncated_file_keeps_the_other_splits_and_exits_1(tmp_path):
    raw = make_slake(tmp_path / "raw")
    text = (raw / "test.json").read_text()
    (raw / "test.json").write_text(text[: len(text) // 3])
    result = build("slake", raw, tmp_path / "out")
    assert result.exit_code == 1
    line = error_line(result)
    assert "test.json" in line and "malformed_json" in line and "could not be read" in line
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert set(manifest["counts"]["split"]) == {"train", "validation"}  # nothing accepted is lost
    assert run("verify", tmp_path / "out").exit_code == 0


def test_slake_missing_images_folder_and_missing_split_file(tmp_path):
    raw = make_slake(tmp_path / "raw")
    shutil.rmtree(raw / "imgs")
    result = build("slake", raw, tmp_path / "out")
    assert result.exit_code == 2 and "imgs/" in error_line(result)
    raw2 = make_slake(tmp_path / "raw2")
    (raw2 / "validate.json").unlink()
    result = build("slake", raw2, tmp_path / "out2")
    assert result.exit_code == 2 and "validate.json|validation.json" in error_line(result)


def test_slake_unknown_languages_only_accepts_nothing(tmp_path):
    raw = make_slake(tmp_path / "raw", 2)
    for name in ("train.json", "validate.json", "test.json"):
        rows = json.loads((raw / name).read_text())
        for r in rows:
            r["q_lang"] = "fr"
        (raw / name).write_text(json.dumps(rows))
    result = build("slake", raw, tmp_path / "out")
    assert result.exit_code == 1
    assert "unknown_language 6" in error_line(result)


# -- PathVQA --------------------------------------------------------------------------------------


def make_pathvqa(raw: Path) -> Path:
    raw.mkdir(parents=True)
    shutil.copyfile(DATA / "pathvqa" / "pvqa_val.json", raw / "pvqa_val.json")
    (raw / "images" / "val").mkdir(parents=True)
    return raw


def test_pathvqa_foreign_record_layout_stops(tmp_path):
    raw = make_pathvqa(tmp_path / "raw")
    (raw / "pvqa_val.json").write_text(json.dumps([{"image": "val_0000", "question": "q?", "answer": "yes"}]))
    result = build("pathvqa", raw, tmp_path / "out")
    assert result.exit_code == 2
    line = error_line(result)
    assert "pvqa_val.json" in line and "foreign layout" in line and "LXMERT" in line


def test_pathvqa_empty_file_and_missing_images_stop(tmp_path):
    raw = make_pathvqa(tmp_path / "raw")
    (raw / "pvqa_val.json").write_text("")
    result = build("pathvqa", raw, tmp_path / "out")
    assert result.exit_code == 2 and "pvqa_val.json: empty file" in error_line(result)
    raw2 = make_pathvqa(tmp_path / "raw2")
    shutil.rmtree(raw2 / "images")
    result = build("pathvqa", raw2, tmp_path / "out2")
    assert result.exit_code == 2 and "images/" in error_line(result)


def test_pathvqa_without_any_image_accepts_nothing(tmp_path):
    raw = make_pathvqa(tmp_path / "raw")
    entries = json.loads((raw / "pvqa_val.json").read_text())[:3]
    (raw / "pvqa_val.json").write_text(json.dumps(entries))
    result = build("pathvqa", raw, tmp_path / "out")
    assert result.exit_code == 1
    line = error_line(result)
    assert "nothing accepted" in line and "missing_image" in line


# -- surgical -------------------------------------------------------------------------------------


def test_cholec80_frames_from_videos_without_videos_stops(tmp_path):
    raw = make_cholec80_tree(tmp_path / "raw", videos=(1,), n_frames=13)
    result = build("cholec80_vqa", raw, tmp_path / "out", "-o", "frames=videos")
    assert result.exit_code == 2
    line = error_line(result)
    assert str(raw / "videos") in line and "frames=videos" in line and "does not exist" in line


def test_cholec80_frames_from_an_empty_video_folder_stops(tmp_path):
    raw = make_cholec80_tree(tmp_path / "raw", videos=(1,), n_frames=13)
    (raw / "videos").mkdir()
    result = build("cholec80_vqa", raw, tmp_path / "out", "-o", "frames=videos")
    assert result.exit_code == 2 and "holds no video files" in error_line(result)


def test_windows_without_videos_stops_and_with_no_usable_record_exits_1(tmp_path):
    raw = make_cholec80_tree(tmp_path / "raw", videos=(1,), n_frames=13)
    result = run("windows", "cholec80_vqa", "--raw", raw, "--out", tmp_path / "w", "-o", "frames=videos", "--no-progress")
    assert result.exit_code == 2 and "videos" in error_line(result)
    for qa in (raw / "Cholec80-VQA").rglob("*.txt"):
        qa.write_text("a line without its separator\n")
    result = run("windows", "cholec80_vqa", "--raw", raw, "--out", tmp_path / "w2", "--no-progress")
    assert result.exit_code == 1
    line = error_line(result)
    assert "no windows" in line and "missing_separator" in line


def test_cholec80_qa_lines_without_separator_accept_nothing_naming_the_file(tmp_path):
    raw = make_cholec80_tree(tmp_path / "raw", videos=(1,), n_frames=13)
    for qa in (raw / "Cholec80-VQA").rglob("*.txt"):
        qa.write_text("what is the phase of image? preparation\n")
    result = build("cholec80_vqa", raw, tmp_path / "out")
    assert result.exit_code == 1
    line = error_line(result)
    assert "missing_separator" in line and "Cholec80-VQA/" in line and ".txt line 1" in line


def test_cholec80_missing_frame_folder_is_a_reject_naming_it(tmp_path):
    raw = make_cholec80_tree(tmp_path / "raw", videos=(1, 5), n_frames=13)
    shutil.rmtree(raw / "Cholec80-VQA" / "cropped_image" / "5")
    result = build("cholec80_vqa", raw, tmp_path / "out")
    assert result.exit_code == 0, result.output
    details = [r["detail"] for r in read_rejects(tmp_path / "out")]
    assert details and all("cropped_image/5" in d for d in details)


@pytest.mark.parametrize("source", ["cholec80_vqa", "endovis18_vqa", "psiava_vqa"])
def test_surgical_sources_given_another_layout_stop(tmp_path, source):
    raw = make_endovis18_tree(tmp_path / "raw") if source != "endovis18_vqa" else make_cholec80_tree(tmp_path / "raw", videos=(1,), n_frames=5)
    result = build(source, raw, tmp_path / "out")
    assert result.exit_code == 2
    assert "not a" in error_line(result) and str(raw) in result.output


def test_endovis18_unreadable_qa_file_is_a_reject(tmp_path):
    raw = make_endovis18_tree(tmp_path / "raw")
    broken = raw / "EndoVis-18-VQA" / "seq_2" / "vqa" / "Classification" / "frame005_QA.txt"
    broken.write_bytes(b"\xff\xfe\x00bad utf-8 \x81\n")
    result = build("endovis18_vqa", raw, tmp_path / "out")
    assert "Traceback" not in result.output
    details = " ".join(r["file"] + " " + r["detail"] for r in read_rejects(tmp_path / "out"))
    assert "seq_2/vqa/Classification/frame005_QA.txt" in details


# -- PubMedVision ---------------------------------------------------------------------------------


def pubmed_tree(tmp_path, alignment) -> Path:
    names = row_images(alignment_rows_from_captions())
    return write_tree(tmp_path / "raw", alignment=alignment, instruction=[], images=image_bytes(names))


def test_pubmedvision_missing_json_stops(tmp_path):
    raw = write_tree(tmp_path / "raw", alignment=None, instruction=None)
    result = build("pubmedvision", raw, tmp_path / "out", "-o", "subset=alignment")
    assert result.exit_code == 2 and ALIGNMENT_JSON in error_line(result)


def test_pubmedvision_empty_json_accepts_nothing_naming_the_file(tmp_path):
    raw = pubmed_tree(tmp_path, "")
    result = build("pubmedvision", raw, tmp_path / "out", "-o", "subset=alignment")
    assert result.exit_code == 1
    line = error_line(result)
    assert ALIGNMENT_JSON in line and "empty file" in line


def test_pubmedvision_file_breaking_off_keeps_rows_before_and_exits_1(tmp_path):
    rows = alignment_rows_from_captions()
    text = json.dumps(rows[:3], indent=4)[:-1].rstrip() + ',\n    {"id": "cut", "ima'  # breaks off in the 4th row
    raw = pubmed_tree(tmp_path, text)
    result = build("pubmedvision", raw, tmp_path / "out", "-o", "subset=alignment")
    assert result.exit_code == 1
    line = error_line(result)
    assert ALIGNMENT_JSON in line and "malformed_json" in line
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["counts"]["split"]["train"] == 3  # the rows before the break are kept


def test_pubmedvision_bad_rows_are_rejects_with_their_index(tmp_path):
    rows = alignment_rows_from_captions()
    rows[0]["conversations"] = "not a list"
    rows[1]["image"] = ["images/not_there.jpg"]
    raw = pubmed_tree(tmp_path, rows)
    result = build("pubmedvision", raw, tmp_path / "out", "-o", "subset=alignment")
    assert result.exit_code == 0, result.output
    rejects = read_rejects(tmp_path / "out")
    assert len(rejects) == 2 and all(r["file"] == ALIGNMENT_JSON for r in rejects)


# -- MIMIC-CXR ------------------------------------------------------------------------------------


def test_mimic_without_tables_stops(tmp_path):
    raw = write_mimic_tree(tmp_path / "raw")
    for table in raw.glob("mimic-cxr-2.0.0-*.csv.gz"):
        table.unlink()
    result = build("mimic_cxr", raw, tmp_path / "out")
    assert result.exit_code == 2 and "mimic-cxr-2.0.0-metadata.csv.gz" in error_line(result)


def test_mimic_vqa_task_without_vqa_files_stops(tmp_path):
    raw = write_mimic_tree(tmp_path / "raw", vqa={})
    result = build("mimic_cxr", raw, tmp_path / "out", "-o", "tasks=vqa")
    assert result.exit_code == 2 and "train.json/valid.json/test.json" in error_line(result)


def test_mimic_truncated_vqa_file_is_named_and_exits_1(tmp_path):
    raw = write_mimic_tree(tmp_path / "raw")
    vqa = next((raw / VQA_DIR).glob("test.json"))
    vqa.write_text(vqa.read_text()[:40])
    result = build("mimic_cxr", raw, tmp_path / "out", "-o", "tasks=report,vqa")
    assert "Traceback" not in result.output
    assert result.exit_code == 1
    line = error_line(result)
    assert "test.json" in line and "malformed_json" in line


def test_mimic_garbled_split_table_is_one_line(tmp_path):
    raw = write_mimic_tree(tmp_path / "raw")
    (raw / "mimic-cxr-2.0.0-split.csv.gz").write_bytes(b"\x1f\x8b\x08 truncated gzip")
    result = build("mimic_cxr", raw, tmp_path / "out")
    assert result.exit_code in (1, 2)
    assert "mimic-cxr-2.0.0-split.csv.gz" in error_line(result)


# -- progress totals --------------------------------------------------------------------------------


def test_2d_builders_know_their_record_totals_for_progress_bars(tmp_path):
    from omnivmed.builders import get_builder

    raw = make_vqa_rad_subset(tmp_path / "vqa_rad", 12)
    assert get_builder("vqa_rad").estimated_records(raw) == 12
    slake = make_slake(tmp_path / "slake", 4)
    assert get_builder("slake").estimated_records(slake) == 12
    pathvqa = make_pathvqa(tmp_path / "pathvqa")
    entries = json.loads((pathvqa / "pvqa_val.json").read_text())
    assert get_builder("pathvqa").estimated_records(pathvqa) == sum(len(e["sentf"]["pvqa"]) for e in entries)
