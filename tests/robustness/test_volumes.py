"""Volumes from awkward DICOM (gzipped, enhanced multi-frame, 4D, truncated) and M3D entries without a volume.

Each case either reads as a volume (checked against an independent reader:
pydicom for pixels, SimpleITK for enhanced geometry) or is rejected with its
reason and the file; nothing is skipped without a word, nothing identifying
reaches the output, and two builds give the same rejects.
"""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from omnivmed.builders import BuilderOptionError, get_builder
from omnivmed.data.volume.core import VolumeError
from omnivmed.data.volume.discover import VolumeInput, classify, expand, find_volume_inputs, read_volume
from support.m3d_trees import INDEX, PREFIX, TEXT_PLAIN, make_m3d_cap_tree, make_m3d_vqa_tree, vqa_row, write_vqa_csv
from support.raw_trees import read_rejects
from support.samples import build_named, samples_of
from support.volume_files import (
    CT_DICOM_SERIES,
    FOUR_D_TAGS,
    PLANTED_IDENTIFIERS,
    copy_real_series,
    gzip_files,
    truncated_copy,
    write_4d_series,
    write_dicom_series,
    write_enhanced_dicom,
)


def read_folder(folder: Path, four_d: str = "reject"):
    (item,) = expand(classify(folder), four_d)
    return read_volume(item)


def rejected(folder: Path, four_d: str = "reject") -> VolumeError:
    with pytest.raises(VolumeError) as caught:
        for item in expand(classify(folder), four_d):
            read_volume(item)
    return caught.value


@pytest.fixture(scope="module")
def real_plain():
    return read_folder(CT_DICOM_SERIES)


# --- gzipped files --------------------------------------------------------------------------------


def test_a_folder_of_gzipped_real_slices_reads_as_the_plain_series(tmp_path, real_plain):
    gz = gzip_files(copy_real_series(tmp_path / "ct"))
    assert all(p.name.endswith(".gz") for p in gz) and len(gz) == 20
    found = [i for i in find_volume_inputs(tmp_path) if isinstance(i, VolumeInput)]
    assert [(i.kind, i.path) for i in found] == [("dicom", tmp_path / "ct")]
    volume = read_folder(tmp_path / "ct")
    np.testing.assert_array_equal(volume.voxels, real_plain.voxels)
    assert (volume.spacing_mm, volume.direction, volume.header) == (real_plain.spacing_mm, real_plain.direction, real_plain.header)


def test_gzip_without_the_dcm_name_is_found_by_its_content(tmp_path):
    series = write_dicom_series(tmp_path / "s", 3)
    for path in gzip_files(series.files):
        path.rename(path.with_name(path.name.replace(".dcm.gz", ".gz")))
    assert read_folder(tmp_path / "s").voxels.shape == (3, 16, 16)


@pytest.mark.parametrize("damage", ["not_gzip", "cut_gzip", "gzip_of_text"])
def test_each_broken_gzipped_slice_is_rejected_naming_it(tmp_path, damage):
    series = write_dicom_series(tmp_path / "s", 4)
    gz = gzip_files(series.files)
    broken = gz[2]
    if damage == "not_gzip":
        broken.write_bytes(b"plain bytes, not gzip" * 10)
    elif damage == "cut_gzip":
        truncated_copy(broken, broken, keep=0.5)
    else:
        broken.write_bytes(gzip.compress(b"hello, not a DICOM file" * 20, mtime=0))
    error = rejected(tmp_path / "s")
    assert error.reason in ("unreadable_dicom", "truncated")
    assert error.file == str(broken)
    assert "0x" not in error.detail and "BytesIO" not in error.detail


# --- enhanced multi-frame -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "orientation, plane",
    [((1, 0, 0, 0, 1, 0), "axial"), ((0, 1, 0, 0, 0, -1), "sagittal"), ((1, 0, 0, 0, -1, 0), "axial")],
    ids=["axial", "sagittal", "axial_flipped"],
)
def test_enhanced_multiframe_reads_as_simpleitk_does(tmp_path, orientation, plane):
    written = write_enhanced_dicom(tmp_path / "enh" / "IM0001.dcm", 6, orientation=orientation)
    volume = read_folder(tmp_path / "enh")
    assert volume.kind == "dicom" and volume.modality == "CT" and volume.acquisition_plane == plane
    # Independent reference: SimpleITK/GDCM reads the functional groups itself; same frame, same voxels.
    reference = sitk.DICOMOrient(sitk.ReadImage(str(written.path), sitk.sitkFloat32), "LPS")
    np.testing.assert_array_equal(volume.voxels, sitk.GetArrayFromImage(reference))
    assert np.allclose(volume.spacing_mm, tuple(reversed(reference.GetSpacing())))
    assert np.allclose(volume.direction, reference.GetDirection())


@pytest.mark.parametrize("orientation", [(1, 0, 0, 0, 1, 0), (0, 1, 0, 0, 0, -1)], ids=["axial", "sagittal"])
def test_enhanced_frames_stored_out_of_order_are_ordered_by_position(tmp_path, orientation):
    written = write_enhanced_dicom(tmp_path / "enh" / "IM0001", 6, orientation=orientation, frame_order=[3, 0, 5, 1, 4, 2])
    volume = read_folder(tmp_path / "enh")
    normal = np.cross(orientation[:3], orientation[3:])
    image = sitk.GetImageFromArray(written.hu_in_position_order(normal))  # (D, rows, cols) along +normal
    image.SetDirection(tuple(np.stack([np.asarray(orientation[:3], float), np.asarray(orientation[3:], float), normal], axis=1).flatten()))
    np.testing.assert_array_equal(volume.voxels, sitk.GetArrayFromImage(sitk.DICOMOrient(image, "LPS")))


def test_enhanced_axial_frames_match_simpleitk_voxel_for_voxel(tmp_path):
    written = write_enhanced_dicom(tmp_path / "enh" / "ct.dcm", 5, intercept=-1000.0, slope=2.0)
    volume = read_folder(tmp_path / "enh")
    reference = sitk.DICOMOrient(sitk.ReadImage(str(written.path), sitk.sitkFloat32), "LPS")
    np.testing.assert_array_equal(volume.voxels, sitk.GetArrayFromImage(reference))
    assert volume.spacing_mm == (2.5, 0.5, 0.75) == tuple(reversed(reference.GetSpacing()))
    np.testing.assert_array_equal(volume.voxels, written.hu_in_position_order())


def test_enhanced_file_without_frame_positions_names_the_file(tmp_path):
    written = write_enhanced_dicom(tmp_path / "enh" / "ct.dcm", 4, per_frame_position=False)
    error = rejected(tmp_path / "enh")
    assert error.reason == "missing_positions" and error.file == str(written.path)
    assert "frame 1" in error.detail


def test_enhanced_file_gzipped_and_beside_a_series_is_its_own_volume(tmp_path):
    write_dicom_series(tmp_path / "study", 3, name_fn=lambda i: f"s{i}.dcm")
    written = write_enhanced_dicom(tmp_path / "study" / "enh.dcm", 4)
    gzip_files([written.path])
    items = expand(classify(tmp_path / "study"))
    shapes = sorted(read_volume(i).voxels.shape for i in items)
    assert shapes == [(3, 16, 16), (4, 12, 10)]


# --- 4D series ------------------------------------------------------------------------------------


def test_a_dwi_of_13_volumes_of_40_slices_is_rejected_as_four_dimensional(tmp_path):
    b_values = [0, 50, 100, 150, 200, 300, 400, 500, 600, 700, 800, 900, 1000]
    write_4d_series(tmp_path / "dwi", b_values, 40, rows=2, cols=2)
    error = rejected(tmp_path / "dwi")
    assert error.reason == "four_dimensional" and error.file == str(tmp_path / "dwi")
    assert "13 volumes of 40 slices" in error.detail and "b-value" in error.detail
    assert "four_d=split" in error.detail
    split = expand(classify(tmp_path / "dwi"), "split")
    assert [i.series.label for i in split] == [f"b-value {b}" for b in b_values]
    assert all(len(i.series.slices) == 40 for i in split)


@pytest.mark.parametrize("tag", FOUR_D_TAGS)
def test_4d_series_by_each_distinguishing_tag(tmp_path, tag):
    write_4d_series(tmp_path / "s", (2, 1, 3), 4, tag=tag)
    error = rejected(tmp_path / "s")
    assert error.reason == "four_dimensional" and "3 volumes of 4 slices" in error.detail
    if tag == "none":
        # Nothing tells the volumes apart: splitting cannot help, and says so.
        split_error = rejected(tmp_path / "s", "split")
        assert split_error.reason == "four_dimensional" and "no b-value" in split_error.detail
        return
    volumes = [read_volume(i) for i in expand(classify(tmp_path / "s"), "split")]
    # Ordered by the value (1, 2, 3), each volume holding its own slices in position order.
    assert [v.voxels[:, 0, 0].tolist() for v in volumes] == [[1000.0 * k + j for j in range(4)] for k in (1, 0, 2)]
    assert all(v.spacing_mm == (2.0, 0.5, 0.5) for v in volumes)


def test_enhanced_4d_dwi_splits_by_its_per_frame_b_values(tmp_path):
    frames = [0, 1, 2, 0, 1, 2]  # position index of each stored frame
    write_enhanced_dicom(tmp_path / "enh" / "dwi.dcm", frame_order=frames, b_values=[0, 0, 0, 800, 800, 800], modality="MR")
    assert "2 volumes of 3 slices" in rejected(tmp_path / "enh").detail
    items = expand(classify(tmp_path / "enh"), "split")
    assert [i.series.label for i in items] == ["b-value 0", "b-value 800"]
    assert [read_volume(i).voxels.shape for i in items] == [(3, 12, 10), (3, 12, 10)]


def test_duplicate_positions_that_are_not_4d_stay_duplicate_positions(tmp_path):
    write_dicom_series(tmp_path / "s", 4, positions=[(0, 0, z) for z in (0.0, 2.0, 2.0, 4.0)])
    assert rejected(tmp_path / "s", "split").reason == "duplicate_positions"


# --- truncated slices -----------------------------------------------------------------------------


@pytest.mark.parametrize("keep", [0.001, 0.01, 0.03])
def test_a_truncated_real_slice_is_named_not_a_mixed_size(tmp_path, keep):
    files = copy_real_series(tmp_path / "ct")
    broken = truncated_copy(files[5], files[5], keep=keep)
    error = rejected(tmp_path / "ct")
    assert error.file == str(broken), error
    assert error.reason in ("truncated", "unreadable_dicom")
    assert "0x0" not in error.detail


# --- builder level: options, rejects, privacy, determinism -----------------------------------------


def _bad_raw(raw: Path) -> dict[str, object]:
    """A raw folder with one of each case, identifiers planted everywhere; returns what was written."""
    gz = gzip_files(write_dicom_series(raw / "gz", 3, identifiers=PLANTED_IDENTIFIERS).files)
    enhanced = write_enhanced_dicom(raw / "enhanced" / "IM1", 4, identifiers=PLANTED_IDENTIFIERS, modality="MR")
    dwi = write_4d_series(raw / "dwi", (0, 1000), 3, identifiers=PLANTED_IDENTIFIERS)
    broken = write_dicom_series(raw / "cut", 3, identifiers=PLANTED_IDENTIFIERS)
    truncated_copy(broken.files[1], broken.files[1], keep=0.3)
    bad_gz = write_dicom_series(raw / "badgz", 3, identifiers=PLANTED_IDENTIFIERS)
    gzip_files(bad_gz.files)[0].write_bytes(b"no gzip here")
    return {"gz": gz, "enhanced": enhanced, "dwi": dwi, "cut": broken, "badgz": bad_gz}


def _secrets(written: dict) -> list[str]:
    found = list(PLANTED_IDENTIFIERS.values())
    for key in ("cut", "badgz"):
        s = written[key]
        found += [s.study_uid, s.series_uid, s.frame_of_reference_uid, *s.sop_uids]
    for series in written["dwi"].values():
        found += [series.series_uid, series.study_uid, *series.sop_uids]
    ds = pydicom.dcmread(written["enhanced"].path, stop_before_pixels=True)
    found += [str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID), str(ds.StudyInstanceUID)]
    return found


def _all_bytes(out: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file())


@pytest.mark.parametrize("four_d", ["reject", "split"])
def test_volumes_builder_reads_or_names_each_case_and_leaks_nothing(tmp_path, four_d):
    raw = tmp_path / "raw"
    written = _bad_raw(raw)
    options = {"four_d": four_d} if four_d == "split" else {}
    build_named("volumes", raw, tmp_path / "out", **options)
    rejects = {(r["file"], r["reason"]) for r in read_rejects(tmp_path / "out")}
    expected = {("badgz/slice000.dcm.gz", "unreadable_dicom"), ("cut/slice001.dcm", "truncated")}
    if four_d == "reject":
        expected.add(("dwi", "four_dimensional"))
    assert rejects == expected
    samples = samples_of(tmp_path / "out")
    volumes = {s.provenance.record_id.rsplit(":", 1)[0] for s in samples}
    assert volumes == ({"gz", "enhanced"} | ({"dwi#1", "dwi#2"} if four_d == "split" else set()))
    if four_d == "split":
        labels = {dict(s.provenance.fields).get("dicom.four_d_volume") for s in samples if s.provenance.record_id.startswith("dwi")}
        assert labels == {"b-value 0", "b-value 1000"}
    blob = _all_bytes(tmp_path / "out")
    for secret in _secrets(written):
        assert secret.encode() not in blob, secret


def test_two_builds_of_bad_dicom_give_the_same_rejects(tmp_path):
    raw = tmp_path / "raw"
    _bad_raw(raw)
    build_named("volumes", raw, tmp_path / "a")
    build_named("volumes", raw, tmp_path / "b")
    first, second = ((tmp_path / o / "rejects.jsonl").read_bytes() for o in ("a", "b"))
    assert first == second and b" at 0x" not in first and str(tmp_path).encode() not in first


def test_the_four_d_option_is_checked():
    with pytest.raises(BuilderOptionError, match="four_d"):
        get_builder("volumes", {"four_d": "maybe"})


# --- M3D: index entries whose volume is missing ---------------------------------------------------


def test_m3d_cap_entry_without_its_volume_says_missing_volume(tmp_path):
    raw = make_m3d_cap_tree(tmp_path / "raw")
    index = json.loads((raw / INDEX).read_text())
    (raw / "M3D_Cap" / "ct_case" / "000777").mkdir(parents=True)
    (raw / "M3D_Cap" / "ct_case" / "000777" / "text.txt").write_text(TEXT_PLAIN)
    index["train"].append({"image": f"{PREFIX}ct_case/000777/Gone.npy", "text": f"{PREFIX}ct_case/000777/text.txt"})
    # Neither the volume nor the text: the volume is what is reported (the text in its detail).
    index["train"].append({"image": f"{PREFIX}ct_case/000778/Gone.npy", "text": f"{PREFIX}ct_case/000778/text.txt"})
    (raw / INDEX).write_text(json.dumps(index))
    build_named("m3d_cap", raw, tmp_path / "out")
    rejects = read_rejects(tmp_path / "out")
    by_record = {r["record"]: r for r in rejects}
    for case in ("000777", "000778"):
        found = by_record[f"{PREFIX}ct_case/{case}/Gone.npy"]
        assert found["reason"] == "missing_volume"
        assert found["file"] == f"{PREFIX}ct_case/{case}/Gone.npy" and found["detail"].startswith(found["file"])
    assert "text.txt" in by_record[f"{PREFIX}ct_case/000778/Gone.npy"]["detail"]
    assert len(samples_of(tmp_path / "out")) > 0


def test_m3d_vqa_row_without_its_volume_says_missing_volume(tmp_path):
    raw = make_m3d_vqa_tree(tmp_path / "raw")
    gone = f"{PREFIX}ct_case/000999/Gone.npy"
    path = next(p for p in sorted(raw.rglob("M3D_VQA_*.csv")))
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    rows.append(vqa_row(gone, 3, "Which organ?", ("Liver", "Lung", "Heart", "Brain"), "A"))
    write_vqa_csv(path, rows)
    build_named("m3d_vqa", raw, tmp_path / "out")
    missing = [r for r in read_rejects(tmp_path / "out") if r["reason"] == "missing_volume"]
    assert missing and all(r["file"] == gone and gone in r["detail"] for r in missing)


def test_a_slice_cut_inside_its_header_rejects_the_series_naming_it(tmp_path):
    # Cut before SeriesInstanceUID: grouped by UID, it would split off and leave a 2-slice volume.
    series = write_dicom_series(tmp_path / "s", 3)
    truncated_copy(series.files[1], series.files[1], keep=0.3)
    error = rejected(tmp_path / "s")
    assert error.reason == "truncated" and error.file == str(series.files[1])


def test_a_non_image_dicom_beside_the_slices_is_no_slice(tmp_path):
    series = write_dicom_series(tmp_path / "s", 3)
    ds = pydicom.dcmread(series.files[0])
    for keyword in ("Rows", "Columns", "PixelData", "ImagePositionPatient"):
        delattr(ds, keyword)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    ds.save_as(tmp_path / "s" / "report.dcm", enforce_file_format=True)
    assert read_folder(tmp_path / "s").voxels.shape == (3, 16, 16)
