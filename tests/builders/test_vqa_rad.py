import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.fresh_process import run_python
from support.raw_trees import VQA_RAD, VQA_RAD_IMAGES, VQA_RAD_JSON, make_vqa_rad_subset, read_rejects, write_vqa_rad_json

from omnivmed.builders.vqa_rad import VqaRadBuilder, modality_evidence
from omnivmed.build import build_source
from omnivmed.data.manifest import Manifest, verify_manifest
from omnivmed.data.shards import iter_samples


def build(raw, out):
    return build_source(VqaRadBuilder(), raw, out, progress=False).manifest


@pytest.fixture(scope="module")
def full_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("vqa_rad_out")
    return out, build(VQA_RAD, out)


def test_the_vendored_json_is_the_published_release(tmp_path, small_vqa_rad):
    from omnivmed.build import differences_from_published, input_checksums

    assert differences_from_published(VqaRadBuilder(), input_checksums(VqaRadBuilder(), VQA_RAD)) == ()
    changed = differences_from_published(VqaRadBuilder(), input_checksums(VqaRadBuilder(), small_vqa_rad))
    assert len(changed) == 1 and changed[0].startswith(VQA_RAD_JSON)


def test_official_counts_match_the_published_ones(full_build):
    out, manifest = full_build
    assert manifest.rows + manifest.duplicates_removed + sum(manifest.rejects.values()) == 2248
    assert manifest.rejects == {}
    assert manifest.duplicates_removed == 4
    assert manifest.counts["split"] == {"test": 451, "train": 1793}  # the HF copy's counts
    assert verify_manifest(out / "manifest.json") == []


def test_the_four_duplicates_the_hf_copy_drops_are_found(full_build):
    out, _ = full_build
    kept = {s.provenance.record_id for shard in sorted(out.rglob("*.arrow")) for s in iter_samples(shard)}
    all_qids = {str(r["qid"]) for r in json.loads((VQA_RAD / VQA_RAD_JSON).read_text())}
    dropped = all_qids - kept
    # Each dropped row repeats (image, question, answer) of a kept one; the
    # pair that spans train/test keeps the test copy.
    assert dropped == {"79", "196", "422", "943"}
    assert "447" in kept


def test_answer_type_quirks_are_normalised(full_build):
    out, _ = full_build
    types = [s.answer_type for shard in sorted(out.rglob("*.arrow")) for s in iter_samples(shard)]
    assert set(types) == {"open", "closed"}


def test_samples_carry_provenance_and_modality(full_build):
    out, manifest = full_build
    sample = next(iter_samples(out / "test" / "test-00000.arrow"))
    fields = dict(sample.provenance.fields)
    assert fields["phrase_type"].startswith("test_")
    assert sample.provenance.raw_paths[0].startswith(VQA_RAD_IMAGES + "/")
    assert sample.provenance.license == "CC0-1.0"
    assert sample.frame_format == "jpeg" and sample.frames[0][:3] == b"\xff\xd8\xff"
    assert set(manifest.counts["modality"]) <= {"ct", "mri", "x_ray", "unspecified"}
    assert manifest.counts["modality"]["x_ray"] > 0 and manifest.counts["modality"]["mri"] > 0


def test_a_build_in_another_process_is_byte_identical(tmp_path, small_vqa_rad):
    a = build(small_vqa_rad, tmp_path / "a")
    # A fresh interpreter (another hash seed, another moment) builds the same copy elsewhere.
    run_python(
        "import sys; from pathlib import Path; from omnivmed.build import build_source; from omnivmed.builders.vqa_rad import VqaRadBuilder\n"
        "build_source(VqaRadBuilder(), Path(sys.argv[1]), Path(sys.argv[2]), progress=False)\n",
        str(small_vqa_rad),
        str(tmp_path / "b"),
    )
    b = Manifest.load(tmp_path / "b" / "manifest.json")
    assert a.shards == b.shards
    for shard in a.shards:
        assert (tmp_path / "a" / shard.path).read_bytes() == (tmp_path / "b" / shard.path).read_bytes()
    assert (tmp_path / "a" / "manifest.json").read_bytes() == (tmp_path / "b" / "manifest.json").read_bytes()


def test_an_up_to_date_build_is_reused_and_a_damaged_one_redone(tmp_path, small_vqa_rad):
    first = build_source(VqaRadBuilder(), small_vqa_rad, tmp_path / "o", progress=False)
    again = build_source(VqaRadBuilder(), small_vqa_rad, tmp_path / "o", progress=False)
    assert not first.reused and again.reused
    shard = tmp_path / "o" / first.manifest.shards[0].path
    shard.write_bytes(shard.read_bytes()[:-10])
    redone = build_source(VqaRadBuilder(), small_vqa_rad, tmp_path / "o", progress=False)
    assert not redone.reused and redone.manifest.shards == first.manifest.shards


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda r: r.update(question=""), "empty_question"),
        (lambda r: r.update(answer="   "), "empty_answer"),
        (lambda r: r.update(image_name="synpic_does_not_exist.jpg"), "missing_image"),
        (lambda r: r.update(image_name="../../../../etc/passwd"), "path_escapes_raw"),
        (lambda r: r.update(answer_type="MAYBE"), "bad_answer_type"),
        (lambda r: r.update(question="<image> Is this a CT?"), "schema"),
    ],
)
def test_bad_records_are_rejected_and_the_rest_is_built(tmp_path, mutate, reason):
    raw = make_vqa_rad_subset(tmp_path / "raw", 12)
    rows = json.loads((raw / VQA_RAD_JSON).read_text())
    mutate(rows[5])
    write_vqa_rad_json(raw, rows)
    manifest = build(raw, tmp_path / "out")
    rejects = read_rejects(tmp_path / "out")
    assert [(r["file"], r["record"], r["reason"]) for r in rejects] == [(VQA_RAD_JSON, str(rows[5]["qid"]), reason)]
    assert manifest.rejects == {reason: 1}
    assert manifest.rows + manifest.duplicates_removed == 11


def test_an_unreadable_image_is_rejected(tmp_path):
    raw = make_vqa_rad_subset(tmp_path / "raw", 12)
    rows = json.loads((raw / VQA_RAD_JSON).read_text())
    image = raw / VQA_RAD_IMAGES / rows[0]["image_name"]
    image.write_bytes(image.read_bytes()[: len(image.read_bytes()) // 2])  # truncated JPEG
    users = sum(r["image_name"] == rows[0]["image_name"] for r in rows)
    manifest = build(raw, tmp_path / "out")
    rejects = read_rejects(tmp_path / "out")
    assert manifest.rejects == {"unreadable_image": users}
    assert all(rows[0]["image_name"] in r["detail"] for r in rejects)
    assert manifest.rows + manifest.duplicates_removed == 12 - users


def test_malformed_json_is_rejected_with_its_file(tmp_path):
    raw = make_vqa_rad_subset(tmp_path / "raw", 5)
    (raw / VQA_RAD_JSON).write_text('[{"qid": 1, "question": ')
    manifest = build(raw, tmp_path / "out")
    assert manifest.rows == 0 and manifest.rejects == {"malformed_json": 1}
    assert read_rejects(tmp_path / "out")[0]["file"] == VQA_RAD_JSON


def test_absent_or_foreign_folders_stop_with_one_line(tmp_path):
    from omnivmed.builders import LayoutError

    with pytest.raises(LayoutError, match="no such folder"):
        build(tmp_path / "nowhere", tmp_path / "out")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("hello")
    with pytest.raises(LayoutError) as err:
        build(tmp_path / "other", tmp_path / "out")
    assert "\n" not in str(err.value) and VQA_RAD_JSON in str(err.value)


def test_hf_parquet_layout(tmp_path, vqa_rad_dir):
    rows = json.loads((vqa_rad_dir / VQA_RAD_JSON).read_text())[:30]
    raw = tmp_path / "hf"
    (raw / "data").mkdir(parents=True)
    for split, part in (("train", rows[:20]), ("test", rows[20:])):
        table = pa.table(
            {
                "image": [
                    {"bytes": (vqa_rad_dir / VQA_RAD_IMAGES / r["image_name"]).read_bytes(), "path": None} for r in part
                ],
                "question": [r["question"] for r in part],
                "answer": [str(r["answer"]) for r in part],
            }
        )
        pq.write_table(table, raw / "data" / f"{split}-00000-of-00001.parquet")
    manifest = build(raw, tmp_path / "out")
    assert manifest.counts["split"] == {"test": 10, "train": 20 - manifest.duplicates_removed}
    samples = [s for shard in sorted((tmp_path / "out").rglob("*.arrow")) for s in iter_samples(shard)]
    for s in samples:
        answer = s.conversations[1].content.lower()
        assert s.answer_type == ("closed" if answer in ("yes", "no") else "open")
        assert s.provenance.raw_paths[0].startswith("data/")


@pytest.mark.parametrize(
    "question, answer, expected",
    [
        ("What kind of scan is this?", "CT", "ct"),
        ("How was this image taken", "T2-MRI", "mri"),
        ("Is this an MRI?", "yes", "mri"),
        ("Is this an MRI?", "no", None),
        ("What type of imaging does this not represent?", "ultrasound", None),
        ("Is there a mass?", "yes", None),
    ],
)
def test_modality_evidence(question, answer, expected):
    assert modality_evidence(question, answer) == expected


def test_copy_is_untouched_by_a_build(tmp_path, small_vqa_rad):
    before = {p: p.read_bytes() for p in small_vqa_rad.rglob("*") if p.is_file()}
    build(small_vqa_rad, tmp_path / "out")
    assert before == {p: p.read_bytes() for p in small_vqa_rad.rglob("*") if p.is_file()}
