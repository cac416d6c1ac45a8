"""PathVQA builder: the official LXMERT files, the Hugging Face parquet layout, bad inputs."""

from __future__ import annotations

import io
import json
import shutil
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from omnivmed.builders.base import LayoutError
from omnivmed.builders.pathvqa import INFO, PathVqaBuilder, pick_answer
from omnivmed.builders.vqa2d import RecordError
from omnivmed.build import build_source
from omnivmed.data.output import REJECTS_NAME
from omnivmed.data.manifest import Manifest, verify_manifest
from omnivmed.data.shards import iter_samples

DATA = Path(__file__).resolve().parents[2] / "data" / "pathvqa"
VAL_QUESTIONS = 6279  # SOURCES.md (checked): 992 images / 6,279 questions


def jpeg(index: int, size: int = 16) -> bytes:
    """A small JPEG whose pixels spell ``index`` in black/white bits: distinct per index."""
    img = Image.new("L", (size, size), 128)
    for bit in range(12):
        value = 255 if index >> bit & 1 else 0
        for y in range(4):
            for x in range(4):
                img.putpixel(((bit % 4) * 4 + x, (bit // 4) * 4 + y), value)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def png(index: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (index % 256, 3, 9)).save(buf, format="PNG")
    return buf.getvalue()


def read_rejects(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / REJECTS_NAME).read_text(encoding="utf-8").splitlines()]


def read_samples(out: Path, manifest: Manifest) -> list:
    return [s for shard in manifest.shards for s in iter_samples(out / shard.path)]


def build(raw: Path, tmp_path: Path):
    out = tmp_path / "out"
    result = build_source(PathVqaBuilder(), raw, out, progress=False)
    assert verify_manifest(result.manifest_path) == []
    return out, result.manifest


def entry(img_id: str, qa: list[tuple[str, dict]]) -> dict:
    return {"img_id": img_id, "sentf": {"pvqa": [q for q, _ in qa]}, "labelf": {"pvqa": [lab for _, lab in qa]}}


def lxmert_raw(tmp_path: Path, files: dict[str, list | str], images: dict[str, bytes]) -> Path:
    raw = tmp_path / "raw"
    (raw / "images").mkdir(parents=True)
    for name, content in files.items():
        text = content if isinstance(content, str) else json.dumps(content)
        (raw / name).write_text(text, encoding="utf-8")
    for rel, data in images.items():
        path = raw / "images" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return raw


def small_lxmert(tmp_path: Path) -> Path:
    files = {
        "pvqa_test.json": [entry("test_0000", [("Is this a liver?", {"yes": 1}), ("What is shown?", {"fibrosis": 1})])],
        "pvqa_val.json": [entry("val_0000", [("Is there necrosis?", {"no": 1})])],
        "pvqa_train.json": [
            entry("train_0000", [("What stain is used?", {"h&e": 1}), ("Is it benign?", {"yes": 1})]),
            entry("train_0001", []),  # images with no questions exist in the official files
        ],
    }
    images = {"test/test_0000.jpg": jpeg(1), "val/val_0000.jpg": jpeg(2), "train/train_0000.jpg": jpeg(3)}
    return lxmert_raw(tmp_path, files, images)


# ---------------------------------------------------------------- LXMERT, real QA


def test_official_val_file_gives_all_questions_as_validation(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(DATA / "pvqa_val.json", raw / "pvqa_val.json")
    entries = json.loads((raw / "pvqa_val.json").read_text(encoding="utf-8"))
    blobs = [jpeg(i) for i in range(len(entries))]
    assert len(set(blobs)) == len(entries) == 992
    for index, e in enumerate(entries):
        path = raw / "images" / "val" / f"{e['img_id']}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blobs[index])

    out, manifest = build(raw, tmp_path)
    samples = read_samples(out, manifest)
    assert read_rejects(out) == []
    assert len(samples) + manifest.duplicates_removed == VAL_QUESTIONS
    assert manifest.counts["split"] == {"validation": len(samples)}
    assert manifest.counts["modality"] == {"pathology": len(samples)}
    assert manifest.counts["source"] == {"pathvqa": len(samples)}

    expected_answers = {}
    for e in entries:
        for i, labels in enumerate(e["labelf"]["pvqa"]):
            expected_answers[f"{e['img_id']}:{i}"] = next(iter(labels))
    for s in samples:
        answer = s.conversations[1].content
        assert answer == expected_answers[s.provenance.record_id].strip()
        assert s.answer_type == ("closed" if answer.lower() in ("yes", "no") else "open")
    closed = sum(s.answer_type == "closed" for s in samples)
    open_ = sum(s.answer_type == "open" for s in samples)
    all_yes_no = sum(a in ("yes", "no") for a in expected_answers.values())
    assert all_yes_no == 3135
    assert closed + open_ == len(samples)
    # After removing the 20 repeated (image, question, answer) rows, 6,259 remain:
    # exactly the validation row count of the Hugging Face copy (SOURCES.md).
    assert (len(samples), manifest.duplicates_removed) == (6259, 20)
    assert (closed, open_) == (3125, 3134)
    # Duplicates are identical (image, question, answer) rows; count them from the file.
    keys = Counter(
        (e["img_id"], q.strip(), next(iter(lab)).strip())
        for e in entries
        for q, lab in zip(e["sentf"]["pvqa"], e["labelf"]["pvqa"])
    )
    assert manifest.duplicates_removed == sum(n - 1 for n in keys.values())

    first = next(s for s in samples if s.provenance.record_id == "val_0000:0")
    assert first.conversations[0].content == "<image>\nWhat has pseudohyphae and budding yeasts?"
    assert first.conversations[1].content == "candida organism"
    assert first.answer_type == "open"
    assert dict(first.provenance.fields) == {"img_id": "val_0000", "question_index": "0"}
    assert first.provenance.raw_paths == ("images/val/val_0000.jpg",)
    assert first.frames == (blobs[0],)
    assert first.frame_format == "jpeg"
    assert first.provenance.license == INFO.license


def test_small_lxmert_copy_yields_held_out_first_and_skips_empty_images(tmp_path):
    raw = small_lxmert(tmp_path)
    out, manifest = build(raw, tmp_path)
    assert read_rejects(out) == []
    assert manifest.counts["split"] == {"test": 2, "train": 2, "validation": 1}
    assert [i.path for i in manifest.inputs] == ["pvqa_test.json", "pvqa_train.json", "pvqa_val.json"]
    samples = read_samples(out, manifest)
    by_id = {s.provenance.record_id: s for s in samples}
    assert set(by_id) == {"test_0000:0", "test_0000:1", "val_0000:0", "train_0000:0", "train_0000:1"}
    assert by_id["test_0000:0"].answer_type == "closed"
    assert by_id["test_0000:1"].answer_type == "open"
    assert by_id["val_0000:0"].split == "validation"
    # The generator itself yields test, then validation, then train.
    splits = [item.split for item in PathVqaBuilder().generate(raw)]
    assert splits == ["test", "test", "validation", "train", "train"]


def test_png_images_are_accepted(tmp_path):
    files = {"pvqa_val.json": [entry("val_0007", [("Is this a kidney?", {"yes": 1})])]}
    raw = lxmert_raw(tmp_path, files, {"val/val_0007.png": png(7)})
    out, manifest = build(raw, tmp_path)
    (sample,) = read_samples(out, manifest)
    assert sample.frame_format == "png"
    assert sample.provenance.raw_paths == ("images/val/val_0007.png",)


# ---------------------------------------------------------------- answer choice


def test_pick_answer_takes_highest_score_then_sorted_text():
    assert pick_answer({"yes": 1}) == "yes"
    assert pick_answer({"fibrosis": 0.3, "necrosis": 0.9}) == "necrosis"
    assert pick_answer({"zebra": 1, "apple": 1, "mango": 0.5}) == "apple"
    assert pick_answer({"b": 2, "a": 2}) == pick_answer({"a": 2, "b": 2}) == "a"
    with pytest.raises(RecordError) as err:
        pick_answer({})
    assert err.value.reason == "empty_answer"
    with pytest.raises(RecordError) as err:
        pick_answer({"yes": "high"})
    assert err.value.reason == "malformed_record"
    with pytest.raises(RecordError) as err:
        pick_answer(["yes"])
    assert err.value.reason == "malformed_record"


def test_several_answers_keep_their_scores_in_provenance(tmp_path):
    files = {"pvqa_val.json": [entry("val_0001", [("What is seen?", {"necrosis": 1, "fibrosis": 1})])]}
    raw = lxmert_raw(tmp_path, files, {"val/val_0001.jpg": jpeg(1)})
    out, manifest = build(raw, tmp_path)
    (sample,) = read_samples(out, manifest)
    assert sample.conversations[1].content == "fibrosis"
    fields = dict(sample.provenance.fields)
    assert json.loads(fields["answer_scores"]) == {"necrosis": 1, "fibrosis": 1}


# ---------------------------------------------------------------- LXMERT, bad inputs


def test_questions_and_labels_of_different_length_are_malformed(tmp_path):
    bad = entry("val_0002", [("Is this a liver?", {"yes": 1})])
    bad["sentf"]["pvqa"].append("A question without a label?")
    good = entry("val_0003", [("Is this a lung?", {"no": 1})])
    files = {"pvqa_val.json": [bad, good]}
    raw = lxmert_raw(tmp_path, files, {"val/val_0002.jpg": jpeg(2), "val/val_0003.jpg": jpeg(3)})
    out, manifest = build(raw, tmp_path)
    rejects = read_rejects(out)
    assert [(r["file"], r["record"], r["reason"]) for r in rejects] == [("pvqa_val.json", "val_0002", "malformed_record")]
    assert manifest.counts["split"] == {"validation": 1}


def test_malformed_entries(tmp_path):
    files = {
        "pvqa_val.json": [
            "not an object",
            {"img_id": "val_0004", "sentf": {"pvqa": ["Q?"]}},  # no labelf
            {"img_id": "", "sentf": {"pvqa": []}, "labelf": {"pvqa": []}},
            entry("val_0005", [("Is this fine?", {"yes": 1}), ("", {"no": 1}), ("What?", {})]),
        ]
    }
    raw = lxmert_raw(tmp_path, files, {"val/val_0005.jpg": jpeg(5)})
    out, manifest = build(raw, tmp_path)
    rejects = read_rejects(out)
    assert [(r["file"], r["record"], r["reason"]) for r in rejects] == [
        ("pvqa_val.json", "#0", "malformed_record"),
        ("pvqa_val.json", "val_0004", "malformed_record"),
        ("pvqa_val.json", "#2", "malformed_record"),
        ("pvqa_val.json", "val_0005:1", "empty_question"),
        ("pvqa_val.json", "val_0005:2", "empty_answer"),
    ]
    assert manifest.counts["split"] == {"validation": 1}


def test_missing_image_rejects_every_question_of_it(tmp_path):
    files = {
        "pvqa_val.json": [
            entry("val_0008", [("Is this a liver?", {"yes": 1}), ("What is seen?", {"fat": 1})]),
            entry("val_0009", [("Is this a lung?", {"no": 1})]),
        ]
    }
    raw = lxmert_raw(tmp_path, files, {"val/val_0009.jpg": jpeg(9)})
    out, manifest = build(raw, tmp_path)
    rejects = read_rejects(out)
    assert [(r["file"], r["record"], r["reason"]) for r in rejects] == [
        ("pvqa_val.json", "val_0008:0", "missing_image"),
        ("pvqa_val.json", "val_0008:1", "missing_image"),
    ]
    assert manifest.rejects == {"missing_image": 2}
    assert manifest.counts["split"] == {"validation": 1}


def test_unreadable_and_escaping_images(tmp_path):
    (tmp_path / "outside.jpg").write_bytes(jpeg(4))
    files = {
        "pvqa_val.json": [
            entry("val_0010", [("Is this a liver?", {"yes": 1})]),
            entry("../../outside", [("Is this a lung?", {"no": 1})]),
            entry("val_0011", [("Is this a heart?", {"no": 1})]),
        ]
    }
    raw = lxmert_raw(tmp_path, files, {"val/val_0010.jpg": b"garbage bytes", "val/val_0011.jpg": jpeg(11)})
    out, manifest = build(raw, tmp_path)
    rejects = read_rejects(out)
    assert [(r["file"], r["record"], r["reason"]) for r in rejects] == [
        ("pvqa_val.json", "val_0010:0", "unreadable_image"),
        ("pvqa_val.json", "../../outside:0", "path_escapes_raw"),
    ]
    assert manifest.counts["split"] == {"validation": 1}


def test_malformed_json_file_loses_only_its_split(tmp_path):
    raw = small_lxmert(tmp_path)
    (raw / "pvqa_train.json").write_text("[{broken", encoding="utf-8")
    out, manifest = build(raw, tmp_path)
    assert [(r["file"], r["record"], r["reason"]) for r in read_rejects(out)] == [
        ("pvqa_train.json", "-", "malformed_json")
    ]
    assert manifest.counts["split"] == {"test": 2, "validation": 1}


# ---------------------------------------------------------------- parquet

IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def write_parquet(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "image": pa.array([r["image"] for r in rows], type=IMAGE_STRUCT),
            "question": pa.array([r["question"] for r in rows], type=pa.string()),
            "answer": pa.array([r["answer"] for r in rows], type=pa.string()),
        }
    )
    pq.write_table(table, path, row_group_size=2)


def prow(index: int, question: str, answer: str, data: bytes | None = None) -> dict:
    return {"image": {"bytes": jpeg(index) if data is None else data, "path": None}, "question": question, "answer": answer}


def parquet_raw(tmp_path: Path) -> Path:
    raw = tmp_path / "raw"
    write_parquet(
        raw / "data" / "train-00000-of-00002-abc.parquet",
        [prow(1, "Is this a liver?", "yes"), prow(2, "What is seen?", "fibrosis"), prow(3, "Does it show fat?", "No")],
    )
    write_parquet(raw / "data" / "train-00001-of-00002-abc.parquet", [prow(4, "Is this benign?", "no")])
    write_parquet(
        raw / "data" / "validation-00000-of-00001-def.parquet",
        [prow(5, "What stain is used?", "h&e"), prow(6, "Is there necrosis?", "yes", data=b"\x89PNG\r\n\x1a\nnot really")],
    )
    test_rows = [prow(7, "Is this a lung?", "yes"), prow(8, "What organ is this?", "kidney")]
    test_rows[1]["image"]["path"] = "kidney_8.jpg"
    write_parquet(raw / "data" / "test-00000-of-00001-ghi.parquet", test_rows)
    return raw


def test_parquet_layout(tmp_path):
    raw = parquet_raw(tmp_path)
    out, manifest = build(raw, tmp_path)
    assert manifest.counts["split"] == {"test": 2, "train": 4, "validation": 1}
    assert manifest.counts["modality"] == {"pathology": 7}
    rejects = read_rejects(out)
    assert [(r["file"], r["record"], r["reason"]) for r in rejects] == [
        ("data/validation-00000-of-00001-def.parquet", "1", "unreadable_image")
    ]
    samples = read_samples(out, manifest)
    by_q = {s.conversations[0].content.split("\n", 1)[1]: s for s in samples}
    assert {q: s.answer_type for q, s in by_q.items()} == {
        "Is this a liver?": "closed",
        "What is seen?": "open",
        "Does it show fat?": "closed",
        "Is this benign?": "closed",
        "What stain is used?": "open",
        "Is this a lung?": "closed",
        "What organ is this?": "open",
    }
    kidney = by_q["What organ is this?"]
    assert kidney.split == "test"
    assert kidney.provenance.record_id == "data/test-00000-of-00001-ghi.parquet#1"
    assert kidney.provenance.raw_paths == ("data/test-00000-of-00001-ghi.parquet#1",)
    assert dict(kidney.provenance.fields) == {"image_path": "kidney_8.jpg"}
    assert kidney.frames == (jpeg(8),)
    assert kidney.frame_format == "jpeg"
    assert kidney.visual_meta.original_shape == (16, 16)
    assert by_q["Does it show fat?"].conversations[1].content == "No"
    assert [i.path for i in manifest.inputs] == sorted(
        p.relative_to(raw).as_posix() for p in (raw / "data").glob("*.parquet")
    )
    # Held-out first in the generator's own order.
    splits = [item.split for item in PathVqaBuilder().generate(raw) if hasattr(item, "split")]
    assert splits == ["test", "test", "validation", "train", "train", "train", "train"]


def test_parquet_empty_text_and_broken_file(tmp_path):
    raw = tmp_path / "raw"
    write_parquet(raw / "data" / "train-00000-of-00001.parquet", [prow(1, " ", "yes"), prow(2, "Is it?", ""), prow(3, "Ok?", "yes")])
    (raw / "data" / "test-00000-of-00001.parquet").write_bytes(b"PAR1 not a parquet file")
    out, manifest = build(raw, tmp_path)
    assert [(r["file"], r["record"], r["reason"]) for r in read_rejects(out)] == [
        ("data/test-00000-of-00001.parquet", "-", "malformed_parquet"),
        ("data/train-00000-of-00001.parquet", "0", "empty_question"),
        ("data/train-00000-of-00001.parquet", "1", "empty_answer"),
    ]
    assert manifest.counts["split"] == {"train": 1}


def test_parquet_is_preferred_when_both_layouts_are_present(tmp_path):
    raw = parquet_raw(tmp_path)
    (raw / "pvqa_val.json").write_text(json.dumps([entry("val_0000", [("Q?", {"yes": 1})])]), encoding="utf-8")
    (raw / "images" / "val").mkdir(parents=True)
    (raw / "images" / "val" / "val_0000.jpg").write_bytes(jpeg(0))
    out, manifest = build(raw, tmp_path)
    assert all(i.path.endswith(".parquet") for i in manifest.inputs)
    assert manifest.counts["split"] == {"test": 2, "train": 4, "validation": 1}


# ---------------------------------------------------------------- layout


def test_layout_error_names_both_layouts(tmp_path):
    with pytest.raises(LayoutError) as err:
        PathVqaBuilder().check_layout(tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert "parquet" in message and "pvqa_{train,val,test}.json" in message and "images/" in message
    with pytest.raises(LayoutError, match="no such folder"):
        PathVqaBuilder().check_layout(tmp_path / "absent")


def test_lxmert_files_without_images_folder_is_a_layout_error(tmp_path):
    shutil.copy(DATA / "pvqa_val.json", tmp_path / "pvqa_val.json")
    with pytest.raises(LayoutError, match="images/"):
        build_source(PathVqaBuilder(), tmp_path, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
