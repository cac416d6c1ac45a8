"""SLAKE builder: counts on the official files, the vendored images, and every bad input."""

from __future__ import annotations

import io
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from omnivmed.builders.base import LayoutError
from omnivmed.builders.slake import INFO, SlakeBuilder
from omnivmed.build import build_source
from omnivmed.data.output import REJECTS_NAME
from omnivmed.data.manifest import Manifest, verify_manifest
from omnivmed.data.shards import iter_samples

DATA = Path(__file__).resolve().parents[2] / "data" / "slake"
OFFICIAL = {"train": "train.json", "validation": "validate.json", "test": "test.json"}
# English rows per split before deduplication (SOURCES.md, checked).
ENGLISH_ROWS = {"train": 4919, "validation": 1053, "test": 1061}


def png(index: int) -> bytes:
    """A 16x16 PNG whose pixels encode ``index``: distinct bytes for distinct indices."""
    img = Image.new("RGB", (16, 16), (index % 256, (index // 256) % 256, 7))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def english(split: str) -> list[dict]:
    rows = json.loads((DATA / OFFICIAL[split]).read_text(encoding="utf-8"))
    return [r for r in rows if r["q_lang"] == "en"]


def read_rejects(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / REJECTS_NAME).read_text(encoding="utf-8").splitlines()]


def read_samples(out: Path, manifest: Manifest) -> list:
    return [s for shard in manifest.shards for s in iter_samples(out / shard.path)]


def row(qid: int, img: str = "xmlab900/source.jpg", **overrides) -> dict:
    base = {
        "img_id": 900,
        "img_name": img,
        "question": f"Question number {qid}?",
        "answer": f"Answer {qid}",
        "q_lang": "en",
        "location": "Lung",
        "modality": "CT",
        "answer_type": "OPEN",
        "base_type": "vqa",
        "content_type": "Organ",
        "triple": ["vhead", "_", "_"],
        "qid": qid,
    }
    base.update(overrides)
    return base


def make_raw(tmp_path: Path, splits: dict[str, list], images: dict[str, bytes] | None = None, val_name="validate.json"):
    """A small SLAKE folder: the three JSONs (list, or raw text) and imgs/."""
    raw = tmp_path / "raw"
    (raw / "imgs").mkdir(parents=True)
    names = {"train": "train.json", "validation": val_name, "test": "test.json"}
    for split, rows in splits.items():
        text = rows if isinstance(rows, str) else json.dumps(rows)
        (raw / names[split]).write_text(text, encoding="utf-8")
    for index, name in enumerate(sorted(images or {})):
        path = raw / "imgs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(images[name] if images[name] is not None else png(index))
    return raw


def default_splits() -> dict[str, list]:
    return {
        "test": [row(1, "xmlab901/source.jpg"), row(2, "xmlab901/source.jpg")],
        "validation": [row(3, "xmlab902/source.jpg")],
        "train": [row(4, "xmlab903/source.jpg"), row(5, "xmlab903/source.jpg")],
    }


def default_images() -> dict[str, bytes | None]:
    return {f"xmlab{n}/source.jpg": None for n in (901, 902, 903)}


def build(raw: Path, tmp_path: Path):
    out = tmp_path / "out"
    result = build_source(SlakeBuilder(), raw, out, progress=False)
    assert verify_manifest(result.manifest_path) == []
    return out, result.manifest


# ---------------------------------------------------------------- real data


def test_official_files_give_the_published_english_counts(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in OFFICIAL.values():
        shutil.copy(DATA / name, raw / name)
    every_image = set()
    for name in OFFICIAL.values():
        every_image |= {r["img_name"] for r in json.loads((raw / name).read_text(encoding="utf-8"))}
    for index, name in enumerate(sorted(every_image)):
        path = raw / "imgs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png(index))

    out, manifest = build(raw, tmp_path)
    samples = read_samples(out, manifest)
    rejects = read_rejects(out)

    accepted = Counter(s.split for s in samples)
    assert dict(accepted) == manifest.counts["split"]
    rejected = Counter()
    for r in rejects:
        split = {"train.json": "train", "validate.json": "validation", "test.json": "test"}[r["file"]]
        rejected[split] += 1
    # The one bad row of the official files: train qid 1622 has an empty answer.
    assert [(r["file"], r["record"], r["reason"]) for r in rejects] == [("train.json", "train.json:1622", "empty_answer")]
    assert manifest.rejects == {"empty_answer": 1}

    # Duplicates: identical (image, question, answer) rows. English image splits are
    # disjoint, so every duplicate is inside train (xmlab19 has 7 rows twice).
    seen, dup_by_split = set(), Counter()
    for split in ("test", "validation", "train"):
        for r in english(split):
            if not str(r["answer"]).strip():
                continue
            key = (r["img_name"], r["question"].strip(), str(r["answer"]).strip())
            if key in seen:
                dup_by_split[split] += 1
            seen.add(key)
    assert manifest.duplicates_removed == sum(dup_by_split.values()) == 7
    for split, expected in ENGLISH_ROWS.items():
        assert accepted[split] + dup_by_split[split] + rejected[split] == expected, split
    assert accepted == {"train": 4911, "validation": 1053, "test": 1061}

    assert manifest.counts["source"] == {"slake": 7025}
    assert manifest.counts["modality"] == {"ct": 3320, "mri": 1583, "x_ray": 2122}
    assert manifest.counts["task"] == {"vqa": 7025}
    assert {s.answer_type for s in samples} == {"open", "closed"}
    assert [i.path for i in manifest.inputs] == ["test.json", "train.json", "validate.json"]
    # No image is in two splits.
    images_by_split = {split: {s.provenance.raw_paths[0] for s in samples if s.split == split} for split in accepted}
    assert not images_by_split["train"] & images_by_split["test"]
    assert not images_by_split["validation"] & images_by_split["test"]


def test_vendored_folder_builds_the_nine_vendored_images_and_rejects_the_rest(tmp_path):
    vendored = {p.name for p in (DATA / "imgs").iterdir() if (p / "source.jpg").is_file()}
    assert len(vendored) == 9
    out, manifest = build(DATA, tmp_path)
    samples = read_samples(out, manifest)
    rejects = read_rejects(out)

    rows = [(split, r) for split in OFFICIAL for r in english(split)]
    have_image = [(s, r) for s, r in rows if r["img_name"].split("/")[0] in vendored]
    no_image = [(s, r) for s, r in rows if r["img_name"].split("/")[0] not in vendored]
    empty_answer = [r for _, r in no_image if not str(r["answer"]).strip()]

    assert len(samples) + manifest.duplicates_removed == len(have_image) == 76
    assert {s.provenance.raw_paths[0].split("/")[1] for s in samples} == vendored
    assert Counter(s.split for s in samples) == Counter(s for s, _ in have_image)
    reasons = Counter(r["reason"] for r in rejects)
    assert reasons == {"missing_image": len(no_image) - len(empty_answer), "empty_answer": len(empty_answer)}
    assert reasons["missing_image"] == 6956
    missing = [r for r in rejects if r["reason"] == "missing_image"]
    assert {r["file"] for r in missing} == set(OFFICIAL.values())

    # SLAKE's own labels survive in the provenance fields.
    by_record = {s.provenance.record_id: s for s in samples}
    for split, r in have_image:
        sample = by_record[f"{OFFICIAL[split]}:{r['qid']}"]
        fields = dict(sample.provenance.fields)
        assert fields["modality"] == r["modality"]
        assert fields["location"] == r["location"]
        assert fields["content_type"] == r["content_type"]
        assert fields["base_type"] == r["base_type"]
        assert fields["q_lang"] == "en"
        assert fields["img_id"] == str(r["img_id"])
        assert fields["qid"] == str(r["qid"])
        assert json.loads(fields["triple"]) == r["triple"]
        assert sample.modality == {"CT": "ct", "MRI": "mri", "X-Ray": "x_ray"}[r["modality"]]
        assert sample.split == split
        assert sample.answer_type == r["answer_type"].strip().lower()
        assert sample.conversations[0].content == f"<image>\n{r['question'].strip()}"
        assert sample.conversations[1].content == str(r["answer"]).strip()
        assert sample.provenance.raw_paths == (f"imgs/{r['img_name']}",)
        assert sample.provenance.license == "CC-BY-4.0"
        assert sample.frames[0] == (DATA / "imgs" / r["img_name"]).read_bytes()
        assert sample.frame_format == "jpeg"


# ---------------------------------------------------------------- layout


def test_folder_without_json_files_is_a_layout_error(tmp_path):
    (tmp_path / "imgs").mkdir()
    with pytest.raises(LayoutError) as err:
        SlakeBuilder().check_layout(tmp_path)
    message = str(err.value)
    assert "\n" not in message
    for name in ("train.json", "validate.json", "validation.json", "test.json", "imgs/"):
        assert name in message


def test_missing_folder_and_missing_imgs_are_layout_errors(tmp_path):
    with pytest.raises(LayoutError, match="no such folder"):
        SlakeBuilder().check_layout(tmp_path / "absent")
    raw = make_raw(tmp_path, default_splits())
    shutil.rmtree(raw / "imgs")
    with pytest.raises(LayoutError, match="imgs/"):
        build_source(SlakeBuilder(), raw, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_hugging_face_validation_json_name_is_read(tmp_path):
    raw = make_raw(tmp_path, default_splits(), default_images(), val_name="validation.json")
    out, manifest = build(raw, tmp_path)
    assert manifest.counts["split"] == {"test": 2, "train": 2, "validation": 1}
    assert [i.path for i in manifest.inputs] == ["test.json", "train.json", "validation.json"]
    val = [s for s in read_samples(out, manifest) if s.split == "validation"]
    assert val[0].provenance.record_id == "validation.json:3"


def test_good_rows_chinese_skipped_and_held_out_kept_on_duplicates(tmp_path):
    splits = default_splits()
    splits["train"].append(row(6, "xmlab903/source.jpg", q_lang="zh", question="这是什么?"))
    # The same image, question and answer in train as in test: the train copy goes.
    copy = row(1, "xmlab901/source.jpg")
    copy["qid"] = 7
    splits["train"].append(copy)
    raw = make_raw(tmp_path, splits, default_images())
    out, manifest = build(raw, tmp_path)
    assert read_rejects(out) == []
    assert manifest.duplicates_removed == 1
    samples = read_samples(out, manifest)
    assert Counter(s.split for s in samples) == {"test": 2, "validation": 1, "train": 2}
    assert {s.provenance.record_id for s in samples} == {
        "test.json:1",
        "test.json:2",
        "validate.json:3",
        "train.json:4",
        "train.json:5",
    }
    first = next(s for s in samples if s.provenance.record_id == "test.json:1")
    assert first.source == "slake" and first.task == "vqa" and first.modality == "ct"
    assert first.visual_kind == "image" and first.frame_format == "png"
    assert first.visual_meta.original_shape == (16, 16)
    assert first.answer_type == "open"
    assert first.provenance.source_url == INFO.homepage


# ---------------------------------------------------------------- bad inputs


def assert_one_reject(out: Path, file: str, record: str, reason: str) -> dict:
    rejects = read_rejects(out)
    assert [(r["file"], r["record"], r["reason"]) for r in rejects] == [(file, record, reason)]
    assert rejects[0]["detail"]
    return rejects[0]


def test_malformed_json_file_loses_only_its_split(tmp_path):
    splits = default_splits()
    splits["train"] = '[{"qid": 4, "question": "broken'
    raw = make_raw(tmp_path, splits, default_images())
    out, manifest = build(raw, tmp_path)
    assert_one_reject(out, "train.json", "-", "malformed_json")
    assert manifest.rejects == {"malformed_json": 1}
    assert manifest.counts["split"] == {"test": 2, "validation": 1}


def test_json_that_is_not_a_list_is_rejected(tmp_path):
    splits = default_splits()
    splits["test"] = '{"rows": []}'
    raw = make_raw(tmp_path, splits, default_images())
    out, manifest = build(raw, tmp_path)
    assert_one_reject(out, "test.json", "-", "malformed_json")
    assert manifest.counts["split"] == {"train": 2, "validation": 1}


def test_missing_image(tmp_path):
    splits = default_splits()
    splits["train"].append(row(8, "xmlab999/source.jpg"))
    raw = make_raw(tmp_path, splits, default_images())
    out, manifest = build(raw, tmp_path)
    assert_one_reject(out, "train.json", "train.json:8", "missing_image")
    assert manifest.counts["split"] == {"test": 2, "train": 2, "validation": 1}


def test_unreadable_image(tmp_path):
    images = default_images()
    images["xmlab904/source.jpg"] = b"\xff\xd8\xff\xe0 this is not really a jpeg"
    splits = default_splits()
    splits["validation"].append(row(9, "xmlab904/source.jpg"))
    raw = make_raw(tmp_path, splits, images)
    out, manifest = build(raw, tmp_path)
    assert_one_reject(out, "validate.json", "validate.json:9", "unreadable_image")
    assert manifest.counts["split"] == {"test": 2, "train": 2, "validation": 1}


def test_truncated_jpeg_is_unreadable(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(buf, format="JPEG")
    images = default_images()
    images["xmlab905/source.jpg"] = buf.getvalue()[: len(buf.getvalue()) // 2]
    splits = default_splits()
    splits["test"].append(row(10, "xmlab905/source.jpg"))
    raw = make_raw(tmp_path, splits, images)
    out, manifest = build(raw, tmp_path)
    assert_one_reject(out, "test.json", "test.json:10", "unreadable_image")
    assert manifest.counts["split"] == {"test": 2, "train": 2, "validation": 1}


def test_image_path_escaping_the_raw_folder(tmp_path):
    (tmp_path / "secret.jpg").write_bytes(png(5))  # exists, but outside raw/imgs
    splits = default_splits()
    splits["train"].append(row(11, "../../etc/passwd"))
    splits["train"].append(row(12, "../../secret.jpg"))
    raw = make_raw(tmp_path, splits, default_images())
    out, manifest = build(raw, tmp_path)
    rejects = read_rejects(out)
    assert [(r["file"], r["record"], r["reason"]) for r in rejects] == [
        ("train.json", "train.json:11", "path_escapes_raw"),
        ("train.json", "train.json:12", "path_escapes_raw"),
    ]
    assert manifest.counts["split"] == {"test": 2, "train": 2, "validation": 1}


@pytest.mark.parametrize("value", ["", "   ", None])
def test_empty_question(tmp_path, value):
    splits = default_splits()
    splits["test"].append(row(13, "xmlab901/source.jpg", question=value))
    raw = make_raw(tmp_path, splits, default_images())
    out, manifest = build(raw, tmp_path)
    assert_one_reject(out, "test.json", "test.json:13", "empty_question")
    assert manifest.counts["split"] == {"test": 2, "train": 2, "validation": 1}


@pytest.mark.parametrize("value", ["", " "])
def test_empty_answer(tmp_path, value):
    splits = default_splits()
    splits["validation"].append(row(14, "xmlab902/source.jpg", answer=value))
    raw = make_raw(tmp_path, splits, default_images())
    out, manifest = build(raw, tmp_path)
    assert_one_reject(out, "validate.json", "validate.json:14", "empty_answer")
    assert manifest.counts["split"] == {"test": 2, "train": 2, "validation": 1}


def test_unknown_modality(tmp_path):
    splits = default_splits()
    splits["train"].append(row(15, "xmlab903/source.jpg", modality="PET", question="Other question?"))
    raw = make_raw(tmp_path, splits, default_images())
    out, manifest = build(raw, tmp_path)
    assert_one_reject(out, "train.json", "train.json:15", "unknown_modality")
    assert manifest.counts["modality"] == {"ct": 5}


def test_bad_answer_type_and_malformed_records(tmp_path):
    splits = default_splits()
    splits["train"] += [row(16, "xmlab903/source.jpg", answer_type="MAYBE"), "not an object", row(17, q_lang="fr")]
    raw = make_raw(tmp_path, splits, default_images())
    out, manifest = build(raw, tmp_path)
    rejects = read_rejects(out)
    assert [(r["file"], r["record"], r["reason"]) for r in rejects] == [
        ("train.json", "train.json:16", "bad_answer_type"),
        ("train.json", "train.json:3", "malformed_record"),
        ("train.json", "train.json:17", "unknown_language"),
    ]
    assert manifest.counts["split"] == {"test": 2, "train": 2, "validation": 1}


def test_question_with_image_placeholder_is_a_schema_reject(tmp_path):
    splits = default_splits()
    splits["train"].append(row(18, "xmlab903/source.jpg", question="What is in <image> here?"))
    raw = make_raw(tmp_path, splits, default_images())
    out, manifest = build(raw, tmp_path)
    assert_one_reject(out, "train.json", "train.json:18", "schema")
    assert manifest.counts["split"] == {"test": 2, "train": 2, "validation": 1}
