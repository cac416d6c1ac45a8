"""The generic `volumes` builder on the real CT/MR files and on broken copies of them."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from omnivmed.builders import BuilderOptionError, LayoutError, get_builder
from omnivmed.build import build_source
from omnivmed.data.volume.encode import from_png
from support.raw_trees import read_rejects
from support.samples import build_named, samples_of

DATA = Path(__file__).resolve().parents[2] / "data" / "volumes"
DICOM = DATA / "ct_dicom_series"


def copy_real(raw: Path, *names: str) -> Path:
    raw.mkdir(parents=True, exist_ok=True)
    for name in names:
        src = DATA / name
        if src.is_dir():
            shutil.copytree(src, raw / name)
        else:
            shutil.copyfile(src, raw / name)
    return raw


def build(raw: Path, out: Path, **options):
    return build_named("volumes", raw, out, **options)


def test_real_volumes_with_the_vendored_annotations(tmp_path):
    result = build(DATA, tmp_path / "out")
    samples = samples_of(tmp_path / "out")
    assert result.manifest.rows == 10 and not result.manifest.rejects
    by_volume = {}
    for s in samples:
        by_volume.setdefault(s.provenance.raw_paths[0], []).append(s)
        assert s.visual_kind == "volume" and s.frame_format == "png"
        assert s.conversations[0].content.startswith("<image>\n")
        assert s.provenance.raw_paths[1] == "annotations.csv"
    # Slice count and spacing are the headers' (DICOM: 20 x 2.0 mm; NIfTI: 30 / 20 slices of 3 mm).
    dicom = by_volume["ct_dicom_series"][0]
    assert len(dicom.frames) == 20 and dicom.visual_meta.spacing_mm == (2.0, 0.9765625, 0.9765625)
    assert dicom.visual_meta.frame_indices == tuple(range(20)) and dicom.modality == "ct"
    assert from_png(dicom.frames[0]).shape == (512, 512)
    ct = by_volume["example_ct_sm.nii.gz"][0]
    assert len(ct.frames) == 30 and ct.visual_meta.spacing_mm == (3.0, 3.0, 3.0)
    assert from_png(ct.frames[0]).shape == (101, 122)
    mr = by_volume["example_mr_sm.nii.gz"][0]
    assert len(mr.frames) == 20 and from_png(mr.frames[0]).shape == (91, 117) and mr.modality == "mri"
    # "auto": the CT window for CT (the annotation's modality picks it for the NIfTI), percentiles for MR.
    assert dict(ct.provenance.fields)["preset"] == "ct-soft-tissue"
    assert dict(mr.provenance.fields)["preset"] == "mr-percentile"
    fields = dict(dicom.provenance.fields)
    assert fields["dicom.SeriesDescription"] == "CT Body 3.0" and fields["acquisition_plane"] == "axial"
    tasks = sorted(s.task for s in samples)
    assert tasks.count("image_caption") == 3 and tasks.count("vqa") == 7


def test_dicom_slices_follow_position_and_the_soft_tissue_window(tmp_path):
    """Frame k is the slice at the k-th lowest z (file names play no part), windowed L40 W400."""
    build(DATA, tmp_path / "out")
    dicom = next(s for s in samples_of(tmp_path / "out") if s.provenance.raw_paths[0] == "ct_dicom_series")
    headers = [pydicom.dcmread(p) for p in sorted(DICOM.iterdir())]
    by_z = sorted(headers, key=lambda ds: float(ds.ImagePositionPatient[2]))
    for k in (0, 7, 19):
        ds = by_z[k]
        hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        expected = np.clip((hu - (40 - 200)) / 400, 0, 1)
        # Identity direction: LPS already, so rows/columns are stored as in the file.
        assert np.abs(from_png(dicom.frames[k]) - expected).max() <= 0.5 / 255 + 1e-6


def test_without_annotations_only_header_facts_are_asked(tmp_path):
    raw = copy_real(tmp_path / "raw", "ct_dicom_series", "example_mr_sm.nii.gz")
    build(raw, tmp_path / "out", modality="mri")
    qa = sorted((s.provenance.raw_paths[0], s.conversations[0].content, s.conversations[1].content) for s in samples_of(tmp_path / "out"))
    assert qa == [
        ("ct_dicom_series", "<image>\nIn which plane were the slices of this volume acquired?", "Axial"),
        ("ct_dicom_series", "<image>\nWhich imaging modality acquired this volume?", "CT"),
        ("example_mr_sm.nii.gz", "<image>\nIn which plane were the slices of this volume acquired?", "Axial"),
        ("example_mr_sm.nii.gz", "<image>\nWhich imaging modality acquired this volume?", "MRI"),
    ]


def test_jsonl_annotations_reports_and_splits(tmp_path):
    raw = copy_real(tmp_path / "raw", "example_ct_sm.nii.gz")
    rows = [
        {"volume": "example_ct_sm.nii.gz", "report": "Technical report text.", "split": "test", "modality": "ct"},
        {"volume": "example_ct_sm.nii.gz", "question": "Is this a CT?", "answer": "yes"},
    ]
    (raw / "annotations.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    result = build(raw, tmp_path / "out", preset="m3d")
    samples = samples_of(tmp_path / "out")
    assert result.manifest.counts["split"] == {"test": 1, "train": 1}
    report = next(s for s in samples if s.task == "report_generation")
    assert report.answer_type is None and report.conversations[1].content == "Technical report text."
    vqa = next(s for s in samples if s.task == "vqa")
    # The report row names the volume's modality; it holds for every row of that volume.
    assert vqa.answer_type == "closed" and vqa.modality == "ct"
    assert len(vqa.frames) == 32 and from_png(vqa.frames[0]).shape == (256, 256)
    assert vqa.visual_meta.frame_indices is None  # resampled in depth


def test_bad_rows_and_bad_volumes_are_rejected_and_the_rest_is_built(tmp_path):
    raw = copy_real(tmp_path / "raw", "example_ct_sm.nii.gz", "example_mr_sm.nii.gz")
    (raw / "empty_series").mkdir()
    corrupt = raw / "corrupt.nii"
    corrupt.write_bytes(b"\x00" * 352)  # a zeroed NIfTI-1 header: sizeof_hdr is not 348
    truncated = raw / "truncated.nii.gz"
    truncated.write_bytes((DATA / "example_ct_sm.nii.gz").read_bytes()[:20000])
    lines = [
        "volume,question,answer,answer_type",
        "example_ct_sm.nii.gz,Which modality?,CT,open",
        "example_mr_sm.nii.gz,Which plane?,Axial,",
        "missing.nii.gz,Which modality?,CT,open",
        "empty_series,Which modality?,CT,open",
        "corrupt.nii,Which modality?,CT,open",
        "truncated.nii.gz,Which modality?,CT,open",
        "../outside.nii.gz,Which modality?,CT,open",
        "example_ct_sm.nii.gz,,CT,open",
        "example_ct_sm.nii.gz,Which modality?,CT,sometimes",
        "example_ct_sm.nii.gz,<image> Which modality?,CT,open",
    ]
    (raw / "annotations.csv").write_text("\n".join(lines) + "\n")
    result = build(raw, tmp_path / "out")
    assert result.manifest.rows == 2
    rejects = {(r["file"], r["reason"]) for r in read_rejects(tmp_path / "out")}
    assert rejects == {
        ("missing.nii.gz", "missing_volume"),
        ("empty_series", "empty_folder"),
        ("corrupt.nii", "corrupt_header"),
        ("truncated.nii.gz", "truncated"),
        ("../outside.nii.gz", "path_escapes_raw"),
        ("annotations.csv", "empty_question_or_answer"),
        ("annotations.csv", "bad_answer_type"),
        ("annotations.csv", "placeholder_in_text"),
    }
    for r in read_rejects(tmp_path / "out"):
        assert r["file"] in r["detail"] and r["record"]
        assert str(tmp_path) not in r["detail"] and "0x" not in r["detail"]  # no user paths, no addresses


def test_a_volume_over_the_limit_is_rejected_before_it_is_read(tmp_path):
    raw = copy_real(tmp_path / "raw", "ct_dicom_series", "example_mr_sm.nii.gz")
    result = build(raw, tmp_path / "out", max_voxels=str(300_000), modality="mri")
    rejects = read_rejects(tmp_path / "out")
    assert [(r["file"], r["reason"]) for r in rejects] == [("ct_dicom_series", "too_large")]
    assert "5,242,880 voxels" in rejects[0]["detail"]
    assert result.manifest.rows == 2  # the MR (20x91x117 = 212,940 voxels) is built


def test_options_are_checked_and_recorded(tmp_path):
    with pytest.raises(BuilderOptionError, match="unknown volume preset"):
        get_builder("volumes", {"preset": "ct-rainbow"})
    with pytest.raises(BuilderOptionError, match="unknown option"):
        get_builder("volumes", {"colour": "red"})
    with pytest.raises(BuilderOptionError, match="DxHxW"):
        get_builder("volumes", {"preset": "minmax", "shape": "32x256"})
    with pytest.raises(LayoutError):
        build_source(get_builder("volumes"), tmp_path / "nowhere", tmp_path / "out", progress=False)

    raw = copy_real(tmp_path / "raw", "example_mr_sm.nii.gz")
    first = build(raw, tmp_path / "out", modality="mri")
    assert first.manifest.options["preset"] == "auto" and not first.reused
    assert build(raw, tmp_path / "out", modality="mri").reused
    changed = build(raw, tmp_path / "out", modality="mri", preset="minmax", bit_depth="16")
    assert not changed.reused and changed.manifest.options["bit_depth"] == "16"
    sample = samples_of(tmp_path / "out")[0]
    assert from_png(sample.frames[0]).dtype == np.float32
    # A changed volume file is a changed input: the next build redoes the work.
    data = bytearray(gzip.decompress((raw / "example_mr_sm.nii.gz").read_bytes()))
    data[-1] ^= 0xFF
    (raw / "example_mr_sm.nii.gz").write_bytes(gzip.compress(bytes(data), mtime=0))
    assert not build(raw, tmp_path / "out", modality="mri", preset="minmax", bit_depth="16").reused


PLANTED = {
    "PatientName": "Plantedname^Firstplanted",
    "PatientID": "PID-PLANTED-4711",
    "PatientBirthDate": "19230517",
    "AccessionNumber": "ACC-PLANTED-0815",
    "InstitutionName": "Planted Memorial Hospital",
    "ReferringPhysicianName": "Referrer^Planted",
    "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.10000000000000000000000000000000001",
    "SeriesInstanceUID": "1.2.826.0.1.3680043.8.498.20000000000000000000000000000000002",
    "FrameOfReferenceUID": "1.2.826.0.1.3680043.8.498.30000000000000000000000000000000003",
}
SOP_PREFIX = "1.2.826.0.1.3680043.8.498.4000000000000000000000000000000"


def plant_identifiers(raw: Path) -> Path:
    """The real series with identifiers planted in its headers, in a folder named by its
    SeriesInstanceUID and files named by their SOPInstanceUIDs (as TCIA exports are)."""
    folder = raw / PLANTED["SeriesInstanceUID"]
    folder.mkdir(parents=True)
    for k, path in enumerate(sorted(DICOM.iterdir())):
        ds = pydicom.dcmread(path)
        for keyword, value in PLANTED.items():
            setattr(ds, keyword, value)
        ds.SOPInstanceUID = f"{SOP_PREFIX}{k:02d}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        # An allowed free-text field that a technologist filled with the patient's name.
        ds.SeriesDescription = "CT Body Plantedname"
        ds.save_as(folder / f"{ds.SOPInstanceUID}.dcm")
    return folder


def planted_strings() -> list[bytes]:
    values = [v for v in PLANTED.values()] + [SOP_PREFIX, "Plantedname", "PID-PLANTED", "ACC-PLANTED", "19230517"]
    return [v.encode() for v in values]


def test_planted_identifiers_never_reach_shards_manifests_or_rejects(tmp_path):
    raw = tmp_path / "raw"
    folder = plant_identifiers(raw)
    # A second copy (four slices: enough for a series) with one file cut short: its reject must
    # not carry the UIDs either.
    broken = raw / "second" / PLANTED["StudyInstanceUID"]
    broken.mkdir(parents=True)
    for path in sorted(folder.iterdir())[:4]:
        shutil.copyfile(path, broken / path.name)
    victim = sorted(broken.iterdir())[2]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    assert pydicom.dcmread(folder / f"{SOP_PREFIX}00.dcm").PatientID == PLANTED["PatientID"]

    header_mode = build(raw, tmp_path / "out-headers")
    (raw / "annotations.csv").write_text(f"volume,question,answer\n{folder.name},Which modality?,CT\n")
    annotated = build(raw, tmp_path / "out-annotated", preset="m3d")
    assert header_mode.manifest.rows == 2 and annotated.manifest.rows == 1
    assert {r["reason"] for r in read_rejects(tmp_path / "out-headers")} == {"unreadable_dicom"}

    scanned = 0
    for out in (tmp_path / "out-headers", tmp_path / "out-annotated"):
        for path in out.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                scanned += 1
                for planted in planted_strings():
                    assert planted not in data, f"{planted!r} leaked into {path}"
    assert scanned >= 6  # manifest, rejects and shards of both builds

    sample = samples_of(tmp_path / "out-headers")[0]
    fields = dict(sample.provenance.fields)
    assert "dicom.SeriesDescription" not in fields  # held the patient's name: dropped
    assert fields["dicom.Modality"] == "CT" and fields["dicom.ManufacturerModelName"] == "Biograph40_mCT 4R"
    assert sample.provenance.raw_paths[0].startswith("redacted-")


def test_a_build_made_with_another_frame_encoding_is_rebuilt(tmp_path):
    """The manifest records the PNG encoding of the slices: a build from an older encoder is not up to date."""
    from omnivmed.data.volume.encode import PNG_ENCODING

    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(DATA / "example_ct_sm.nii.gz", raw / "ct.nii.gz")
    first = build_source(get_builder("volumes"), raw, tmp_path / "out", progress=False)
    assert first.manifest.options["frame_encoding"] == PNG_ENCODING
    assert build_source(get_builder("volumes"), raw, tmp_path / "out", progress=False).reused
    path = tmp_path / "out" / "manifest.json"
    data = json.loads(path.read_text())
    data["options"]["frame_encoding"] = "png-1 (zlib level 3)"
    path.write_text(json.dumps(data))
    again = build_source(get_builder("volumes"), raw, tmp_path / "out", progress=False)
    assert not again.reused and again.manifest.options["frame_encoding"] == PNG_ENCODING
