"""NIfTI: the two vendored volumes (RAS CT, LPS MR) and broken files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from omnivmed.data.volume.core import VolumeError, VolumeLimits
from omnivmed.data.volume.discover import classify, read_volume
from omnivmed.data.volume.nifti import read_nifti
from support.volume_files import CT_NIFTI, MR_NIFTI, corrupt_nifti_header, gunzip_copy, truncated_copy, write_nifti

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def reject(path: Path, limits: VolumeLimits = VolumeLimits()) -> VolumeError:
    with pytest.raises(VolumeError) as caught:
        read_nifti(path, limits)
    return caught.value


@pytest.mark.parametrize(
    "path, shape, source_orientation",
    [(CT_NIFTI, (30, 101, 122), "RAS"), (MR_NIFTI, (20, 91, 117), "LPS")],
    ids=["ct", "mr"],
)
def test_real_nifti(path, shape, source_orientation):
    volume = read_volume(classify(path))
    assert volume.kind == "nifti" and volume.modality is None and volume.header == ()
    assert volume.voxels.shape == shape and volume.original_shape == shape and volume.voxels.dtype == np.float32
    assert volume.spacing_mm == (3.0, 3.0, 3.0)
    assert volume.direction == IDENTITY  # reoriented to LPS
    assert volume.acquisition_plane == "axial"
    raw = sitk.ReadImage(str(path), sitk.sitkFloat32)
    assert sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(raw.GetDirection()) == source_orientation
    expected = sitk.GetArrayFromImage(sitk.DICOMOrient(raw, "LPS"))
    np.testing.assert_array_equal(volume.voxels, expected)


def test_ras_to_lps_flips_x_and_y():
    # nibabel is not installed here, so the flip is checked on SimpleITK's un-reoriented array:
    # a RAS file (ITK direction diag(-1, -1, 1)) must come out with x and y reversed, z kept.
    raw = sitk.ReadImage(str(CT_NIFTI))
    assert raw.GetDirection() == (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
    array = sitk.GetArrayFromImage(raw).astype(np.float32)  # (z, y, x) in the file's own order
    volume = read_nifti(CT_NIFTI)
    np.testing.assert_array_equal(volume.voxels, array[:, ::-1, ::-1])
    assert not np.array_equal(volume.voxels, array)
    assert (volume.voxels.min(), volume.voxels.max()) == (-1100.0, 1207.0)
    # The LPS file needs no flip.
    mr = sitk.GetArrayFromImage(sitk.ReadImage(str(MR_NIFTI))).astype(np.float32)
    np.testing.assert_array_equal(read_nifti(MR_NIFTI).voxels, mr)
    assert (mr.min(), mr.max()) == (-47.0, 833.0)


def test_uncompressed_copy_reads_the_same(tmp_path):
    plain = gunzip_copy(CT_NIFTI, tmp_path / "ct.nii")
    np.testing.assert_array_equal(read_nifti(plain).voxels, read_nifti(CT_NIFTI).voxels)


@pytest.mark.parametrize("field", ["dim0", "negative_dim", "datatype", "zeroed"])
def test_corrupt_header(tmp_path, field):
    path = corrupt_nifti_header(CT_NIFTI, tmp_path / "ct.nii", field)
    error = reject(path)
    assert error.reason == "corrupt_header" and error.file == str(path)


@pytest.mark.parametrize("field", ["sizeof_hdr", "magic"])
def test_corrupt_sizeof_hdr_or_magic(tmp_path, field):
    path = corrupt_nifti_header(CT_NIFTI, tmp_path / "ct.nii", field)
    error = reject(path)
    assert error.reason == "corrupt_header" and error.file == str(path)


def test_truncated_nii_gz(tmp_path):
    path = truncated_copy(CT_NIFTI, tmp_path / "ct.nii.gz", keep=0.5)
    error = reject(path)
    assert error.reason == "truncated" and error.file == str(path)


def test_truncated_uncompressed_nii(tmp_path):
    path = truncated_copy(gunzip_copy(CT_NIFTI, tmp_path / "full.nii"), tmp_path / "ct.nii", keep=0.5)
    error = reject(path)
    assert error.reason == "truncated" and error.file == str(path)


def test_4d_with_several_volumes_is_not_3d(tmp_path):
    path = write_nifti(tmp_path / "4d.nii.gz", np.zeros((3, 4, 5, 6), dtype=np.int16))
    error = reject(path)
    assert error.reason == "not_3d" and error.file == str(path)
    assert "(6, 5, 4, 3)" in error.detail


def test_4d_with_one_volume_is_read_as_3d(tmp_path):
    array = np.arange(4 * 5 * 6, dtype=np.int16).reshape(1, 4, 5, 6)
    volume = read_nifti(write_nifti(tmp_path / "t1.nii.gz", array))
    assert volume.voxels.shape == (4, 5, 6)


def test_too_large_before_reading_voxels(tmp_path):
    n_voxels = 30 * 101 * 122
    assert read_nifti(CT_NIFTI, VolumeLimits(max_voxels=n_voxels)).voxels.shape == (30, 101, 122)
    error = reject(CT_NIFTI, VolumeLimits(max_voxels=n_voxels - 1))
    assert error.reason == "too_large" and error.file == str(CT_NIFTI)
    # Decided from the header alone: a file whose voxels cannot be read is still just too large.
    cut = truncated_copy(CT_NIFTI, tmp_path / "cut.nii.gz", keep=0.5)
    error = reject(cut, VolumeLimits(max_voxels=n_voxels - 1))
    assert error.reason == "too_large" and error.file == str(cut)


def test_classify_rejects_other_files(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("x")
    with pytest.raises(VolumeError) as caught:
        classify(path)
    assert caught.value.reason == "unsupported_file" and caught.value.file == str(path)
    with pytest.raises(VolumeError) as caught:
        classify(tmp_path / "nowhere.nii.gz")
    assert caught.value.reason == "missing_volume"
