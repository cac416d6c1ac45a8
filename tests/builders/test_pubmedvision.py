"""PubMedVision builder: the real caption rows, both subsets, multi-image rows, zips read in place, bad input."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
from PIL import Image
from support.pubmedvision_trees import (
    ALIGNMENT_PROMPT,
    alignment_rows_from_captions,
    image_bytes,
    real_caption_rows,
    row_images,
    vqa_row,
    write_tree,
)
from support.raw_trees import read_rejects
from support.samples import build_named, samples_of

from omnivmed.builders import BuilderOptionError, LayoutError, get_builder
from omnivmed.builders.pubmedvision import ALIGNMENT_JSON, INSTRUCTION_JSON
from omnivmed.builders.pubmedvision_modalities import map_modality
from omnivmed.data.manifest import verify_manifest
from omnivmed.data.schema import MODALITIES

# The modality each real caption row's tag must map to (data/pubmedvision, in file order).
REAL_MODALITIES = ["fundus", "endoscopy", "ct", "ct", "mri", "ultrasound", "ultrasound", "mri", "endoscopy"]


def instruction_rows() -> list[dict]:
    return [
        vqa_row("iv_1", ["images/pmc_9001_0.jpg"], [("human", "<image>\nWhat organ is shown?"), ("gpt", "The liver.")], "CT Scan", "Abdomen"),
        vqa_row(
            "iv_2",
            ["images/pmc_9002_0.jpg", "images/pmc_9002_1.jpg"],
            [("human", "Compare the two panels."), ("gpt", "The right panel shows a larger lesion."), ("human", "Which modality?"), ("gpt", "MRI.")],
            "MRI",
            "Brain",
        ),
        vqa_row("iv_3", ["images/pmc_9003_0.jpg"], [("human", "What stain is used?"), ("gpt", "Hematoxylin and eosin.")], "Microscopy Images", "Skin"),
    ]


def build(raw, out, **options):
    result = build_named("pubmedvision", raw, out, **options)
    assert verify_manifest(result.manifest_path) == []
    return result.manifest, samples_of(out)


def full_tree(tmp_path, zips=0, **rows):
    alignment = rows.get("alignment", alignment_rows_from_captions())
    instruction = rows.get("instruction", instruction_rows())
    # Images of the default rows are always written, so a broken JSON file is the only fault.
    names = row_images(alignment_rows_from_captions() + instruction_rows())
    return write_tree(tmp_path / "raw", alignment=alignment, instruction=instruction, images=image_bytes(names), zips=zips)


# ---------------------------------------------------------------- real rows


def test_real_caption_rows_become_alignment_captions(tmp_path):
    raw = full_tree(tmp_path)
    manifest, samples = build(raw, tmp_path / "out", subset="alignment")
    real = real_caption_rows()
    assert len(samples) == len(real) == 9
    assert manifest.counts["task"] == {"image_caption": 9}
    assert manifest.counts["split"] == {"train": 9}
    assert [s.modality for s in samples] == REAL_MODALITIES
    assert manifest.counters == {}  # every real tag is known; placeholders were already there
    images = image_bytes(row_images(alignment_rows_from_captions()))
    for sample, row in zip(samples, real):
        assert sample.source == "pubmedvision" and sample.visual_kind == "image"
        assert sample.frames == (images[row["image"]],) and sample.frame_format == "jpeg"
        assert sample.visual_meta.original_shape == (24, 24)
        assert [(t.role, t.content) for t in sample.conversations] == [
            ("user", f"<image>\n{ALIGNMENT_PROMPT}"),
            ("assistant", row["Original_Caption"].strip()),
        ]
        assert sample.answer_type is None
        fields = dict(sample.provenance.fields)
        assert fields == {"id": row["id"], "modality": row["modality"], "body_part": row["body_part"], "subset": "alignment"}
        assert sample.provenance.raw_paths == (row["image"],)
        assert sample.provenance.record_id == f"{ALIGNMENT_JSON}:{row['id']}"
        assert sample.provenance.license == "Apache-2.0"
    assert [i.path for i in manifest.inputs] == [ALIGNMENT_JSON]


def test_default_subset_is_instruction_with_vqa_tasks_and_a_multi_image_row(tmp_path):
    raw = full_tree(tmp_path)
    manifest, samples = build(raw, tmp_path / "out")
    assert manifest.options == {"subset": "instruction"}
    assert [i.path for i in manifest.inputs] == [INSTRUCTION_JSON]
    assert manifest.counts["task"] == {"vqa": 3}
    assert manifest.counts["visual_kind"] == {"image": 2, "multi_image": 1}
    assert [s.modality for s in samples] == ["ct", "mri", "microscopy"]
    assert {s.answer_type for s in samples} == {"open"}
    multi = samples[1]
    images = image_bytes(row_images(alignment_rows_from_captions() + instruction_rows()))
    assert multi.frames == (images["images/pmc_9002_0.jpg"], images["images/pmc_9002_1.jpg"])
    # No placeholder in the row: one per image, prepended to the first human turn only.
    assert multi.conversations[0].content == "<image>\n<image>\nCompare the two panels."
    assert multi.conversations[2].content == "Which modality?"
    assert [t.role for t in multi.conversations] == ["user", "assistant", "user", "assistant"]
    assert samples[2].conversations[0].content == "<image>\nWhat stain is used?"
    assert manifest.counters == {"placeholders_added": 2}


def test_both_subsets_alignment_first(tmp_path):
    raw = full_tree(tmp_path)
    manifest, samples = build(raw, tmp_path / "out", subset="both")
    assert manifest.counts["task"] == {"image_caption": 9, "vqa": 3}
    assert [s.task for s in samples] == ["image_caption"] * 9 + ["vqa"] * 3
    assert sorted(i.path for i in manifest.inputs) == [ALIGNMENT_JSON, INSTRUCTION_JSON]


# ---------------------------------------------------------------- zips


def test_zips_are_read_in_place_without_extracting(tmp_path):
    raw = full_tree(tmp_path, zips=3)
    before = sorted(p.relative_to(raw).as_posix() for p in raw.rglob("*"))
    assert not (raw / "images").exists()
    manifest, samples = build(raw, tmp_path / "out", subset="both")
    assert len(samples) == 12 and manifest.rejects == {}
    assert sorted(p.relative_to(raw).as_posix() for p in raw.rglob("*")) == before
    images = image_bytes(row_images(alignment_rows_from_captions() + instruction_rows()))
    for sample in samples:
        assert sample.frames == tuple(images[p] for p in sample.provenance.raw_paths)
    # Same bytes as the unpacked folder gives.
    folder_raw = full_tree(tmp_path / "folder")
    _, from_folder = build(folder_raw, tmp_path / "out2", subset="both")
    assert [s.id for s in from_folder] == [s.id for s in samples]


def test_zip_members_in_nested_folders_and_the_folder_first(tmp_path):
    rows = instruction_rows()
    images = image_bytes(row_images(rows))
    raw = write_tree(tmp_path / "raw", instruction=rows, images={})
    with zipfile.ZipFile(raw / "images" / "images_0.zip", "w") as zf:  # zips inside images/, members two folders deep
        for name, data in images.items():
            zf.writestr(f"batch/deep/{name.split('/')[-1]}", data)
    other = Image.new("RGB", (8, 8), (1, 2, 3))
    buf = io.BytesIO()
    other.save(buf, format="PNG")
    (raw / "images" / "pmc_9003_0.jpg").write_bytes(buf.getvalue())  # the folder copy wins over the zip's
    manifest, samples = build(raw, tmp_path / "out")
    assert manifest.rejects == {}
    assert samples[0].frames == (images["images/pmc_9001_0.jpg"],)
    assert samples[2].frames == (buf.getvalue(),) and samples[2].frame_format == "png"


def test_a_broken_zip_is_one_reject_and_the_others_are_read(tmp_path):
    raw = full_tree(tmp_path, zips=2)
    (raw / "images_1.zip").write_bytes(b"PK\x03\x04 not really a zip")
    manifest, samples = build(raw, tmp_path / "out", subset="both")
    rejects = read_rejects(tmp_path / "out")
    assert [(r["file"], r["reason"]) for r in rejects if r["reason"] == "unreadable_zip"] == [("images_1.zip", "unreadable_zip")]
    missing = [r for r in rejects if r["reason"] == "missing_image"]
    # images_1.zip held every second image (sorted names): those rows are rejected, the rest built.
    assert len(samples) + len(missing) == 12 and len(samples) > 0 and missing


# ---------------------------------------------------------------- bad input


def test_rows_whose_images_are_missing_are_rejected(tmp_path):
    rows = instruction_rows() + [
        vqa_row("iv_4", ["images/pmc_missing_0.jpg"], [("human", "<image>\nWhat is it?"), ("gpt", "A cyst.")], "Ultrasound", "Liver"),
        vqa_row("iv_5", ["images/pmc_9001_0.jpg", "images/pmc_missing_1.jpg"], [("human", "Both?"), ("gpt", "Yes.")], "CT", "Chest"),
    ]
    raw = write_tree(tmp_path / "raw", instruction=rows, images=image_bytes(row_images(instruction_rows())))
    manifest, samples = build(raw, tmp_path / "out")
    rejects = read_rejects(tmp_path / "out")
    assert [(r["file"], r["record"], r["reason"]) for r in rejects] == [
        (INSTRUCTION_JSON, f"{INSTRUCTION_JSON}:iv_4", "missing_image"),
        (INSTRUCTION_JSON, f"{INSTRUCTION_JSON}:iv_5", "missing_image"),
    ]
    assert "images/pmc_missing_0.jpg" in rejects[0]["detail"] and "images/pmc_missing_1.jpg" in rejects[1]["detail"]
    assert manifest.rejects == {"missing_image": 2}
    assert len(samples) == 3


def test_truncated_json_keeps_the_rows_before_the_break(tmp_path):
    text = json.dumps(instruction_rows(), indent=4)
    cut = text[: text.index('"iv_3"') + 3]  # inside the third row
    raw = full_tree(tmp_path, instruction=cut)
    manifest, samples = build(raw, tmp_path / "out")
    rejects = read_rejects(tmp_path / "out")
    assert [(r["file"], r["record"], r["reason"]) for r in rejects] == [(INSTRUCTION_JSON, "#2", "malformed_json")]
    assert "element 2" in rejects[0]["detail"] and str(tmp_path) not in rejects[0]["detail"]
    assert [dict(s.provenance.fields)["id"] for s in samples] == ["iv_1", "iv_2"]


@pytest.mark.parametrize("text", ['{"id": "x"}', "", "[1, 2] trailing"])
def test_json_that_is_not_one_array_is_rejected(tmp_path, text):
    raw = full_tree(tmp_path, instruction=text)
    manifest, samples = build(raw, tmp_path / "out")
    assert [r["reason"] for r in read_rejects(tmp_path / "out")].count("malformed_json") == 1


def test_placeholder_count_roles_and_empty_turns(tmp_path):
    rows = [
        vqa_row("p1", ["images/pmc_9001_0.jpg", "images/pmc_9003_0.jpg"], [("human", "<image>\nOnly one token"), ("gpt", "ok")], "CT", "x"),
        vqa_row("p2", ["images/pmc_9001_0.jpg"], [("human", "<image>\nQ"), ("robot", "A")], "CT", "x"),
        vqa_row("p3", ["images/pmc_9001_0.jpg"], [("human", "<image>\nQ"), ("gpt", "  ")], "CT", "x"),
        vqa_row("p4", [], [("human", "Q"), ("gpt", "A")], "CT", "x"),
        vqa_row("p5", ["images/pmc_9001_0.jpg"], [("human", "<image>\nQ")], "CT", "x"),
        {"id": "p6", "image": ["images/pmc_9001_0.jpg"], "modality": "CT"},
        "not an object",
        vqa_row("p8", ["../outside.jpg"], [("human", "<image>\nQ"), ("gpt", "A")], "CT", "x"),
    ]
    raw = write_tree(tmp_path / "raw", instruction=rows, images=image_bytes(["images/pmc_9001_0.jpg", "images/pmc_9003_0.jpg"]))
    (tmp_path / "outside.jpg").write_bytes(image_bytes(["x.jpg"])["x.jpg"])
    manifest, samples = build(raw, tmp_path / "out")
    assert samples == []
    assert [(r["record"], r["reason"]) for r in read_rejects(tmp_path / "out")] == [
        (f"{INSTRUCTION_JSON}:p1", "placeholder_mismatch"),
        (f"{INSTRUCTION_JSON}:p2", "unknown_role"),
        (f"{INSTRUCTION_JSON}:p3", "empty_turn"),
        (f"{INSTRUCTION_JSON}:p4", "missing_image"),
        (f"{INSTRUCTION_JSON}:p5", "schema"),
        (f"{INSTRUCTION_JSON}:p6", "malformed_record"),
        (f"{INSTRUCTION_JSON}:#6", "malformed_record"),
        (f"{INSTRUCTION_JSON}:p8", "path_escapes_raw"),
    ]


def test_unreadable_image_and_mixed_formats(tmp_path):
    images = image_bytes(["images/a.jpg"])
    buf = io.BytesIO()
    Image.new("L", (6, 5), 77).save(buf, format="PNG")
    images["images/b.png"] = buf.getvalue()
    images["images/bad.jpg"] = images["images/a.jpg"][:40]
    rows = [
        vqa_row("m1", ["images/a.jpg", "images/b.png"], [("human", "Q"), ("gpt", "A")], "X-Ray", "Chest"),
        vqa_row("m2", ["images/bad.jpg"], [("human", "Q"), ("gpt", "A")], "X-Ray", "Chest"),
    ]
    raw = write_tree(tmp_path / "raw", instruction=rows, images=images)
    manifest, samples = build(raw, tmp_path / "out")
    assert [(r["record"], r["reason"]) for r in read_rejects(tmp_path / "out")] == [(f"{INSTRUCTION_JSON}:m2", "unreadable_image")]
    (mixed,) = samples
    assert mixed.frame_format == "png" and mixed.frames[1] == images["images/b.png"]
    with Image.open(io.BytesIO(mixed.frames[0])) as first, Image.open(io.BytesIO(images["images/a.jpg"])) as original:
        assert first.format == "PNG" and first.convert("RGB").tobytes() == original.convert("RGB").tobytes()


def test_unknown_modality_tags_are_unspecified_and_counted(tmp_path):
    rows = [
        vqa_row("u1", ["images/pmc_9001_0.jpg"], [("human", "Q1"), ("gpt", "A1")], "Thermography", "Hand"),
        vqa_row("u2", ["images/pmc_9001_0.jpg"], [("human", "Q2"), ("gpt", "A2")], "  optical   COHERENCE tomography ", "Eye"),
        vqa_row("u3", ["images/pmc_9001_0.jpg"], [("human", "Q3"), ("gpt", "A3")], None, "Eye"),
    ]
    raw = write_tree(tmp_path / "raw", instruction=rows, images=image_bytes(["images/pmc_9001_0.jpg"]))
    manifest, samples = build(raw, tmp_path / "out")
    assert [s.modality for s in samples] == ["unspecified", "oct", "unspecified"]
    assert manifest.counters == {"modality_unspecified": 2, "placeholders_added": 3}
    assert dict(samples[0].provenance.fields)["modality"] == "Thermography"
    assert "modality" not in dict(samples[2].provenance.fields)


def test_modality_table_covers_the_tags_named_for_pubmedvision():
    tags = {
        "CT Scan": "ct", "Computed Tomography": "ct", "MRI": "mri", "Magnetic Resonance Imaging": "mri",
        "Digital Photography": "digital_photography", "Microscopy Images": "microscopy", "X-Ray": "x_ray",
        "Endoscopy": "endoscopy", "Ultrasound": "ultrasound", "Dermoscopy": "dermoscopy",
        "Fundus Photography": "fundus", "Optical Coherence Tomography": "oct", "PET": "pet",
        "Angiography": "angiography", "Mammography": "mammography", "Histopathology": "pathology",
    }  # fmt: skip
    assert {tag: map_modality(tag) for tag in tags} == {tag: (m, True) for tag, m in tags.items()}
    assert set(tags.values()) == set(MODALITIES)  # every one of the schema's modalities is reachable


def test_layout_and_option_errors(tmp_path):
    builder = get_builder("pubmedvision")
    with pytest.raises(LayoutError, match="no such folder"):
        builder.check_layout(tmp_path / "absent")
    raw = write_tree(tmp_path / "raw", alignment=alignment_rows_from_captions(), images={})
    with pytest.raises(LayoutError, match=INSTRUCTION_JSON):
        builder.check_layout(raw)  # default subset needs the instruction file
    get_builder("pubmedvision", {"subset": "alignment"}).check_layout(raw)
    (raw / "images").rmdir()
    with pytest.raises(LayoutError, match="images_N.zip") as err:
        get_builder("pubmedvision", {"subset": "alignment"}).check_layout(raw)
    assert "\n" not in str(err.value)
    with pytest.raises(BuilderOptionError, match="subset"):
        get_builder("pubmedvision", {"subset": "everything"})


def test_rebuild_is_byte_identical(tmp_path):
    raw = full_tree(tmp_path)
    first, _ = build(raw, tmp_path / "a", subset="both")
    second, _ = build(raw, tmp_path / "b", subset="both")
    assert [s.sha256 for s in first.shards] == [s.sha256 for s in second.shards]
    assert (tmp_path / "a" / "manifest.json").read_bytes() == (tmp_path / "b" / "manifest.json").read_bytes()


def test_rows_split_across_read_chunks_stream_the_same(tmp_path, monkeypatch):
    """The JSON is read a chunk at a time: rows cut by every possible boundary still decode the same."""
    import omnivmed.builders.json_stream as json_stream

    raw = full_tree(tmp_path)
    _, whole = build(raw, tmp_path / "whole", subset="both")
    monkeypatch.setattr(json_stream, "CHUNK_CHARS", 7)
    _, chunked = build(raw, tmp_path / "chunked", subset="both")
    assert [s.id for s in chunked] == [s.id for s in whole] and len(whole) == 12
