"""DICOM series: the vendored real CT series, synthetic series, and every reject reason."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_rescale

from omnivmed.data.volume.core import VolumeError, VolumeLimits, plane_of
from omnivmed.data.volume.dicom_privacy import IDENTIFYING_KEYWORDS
from omnivmed.data.volume.dicom_series import series_in_folder
from omnivmed.data.volume.discover import VolumeInput, classify, expand, find_volume_inputs, read_volume
from support.volume_files import (
    CT_DICOM_SERIES,
    CT_NIFTI,
    constant_pixels,
    copy_real_series,
    garbage_pixel_data,
    m3d_like_slices,
    truncated_copy,
    write_dicom_series,
    write_slice_folder,
)


def read_folder(folder: Path, limits: VolumeLimits = VolumeLimits()):
    (item,) = expand(classify(folder))
    return read_volume(item, limits)


def reject(folder: Path, limits: VolumeLimits = VolumeLimits()) -> VolumeError:
    with pytest.raises(VolumeError) as caught:
        read_folder(folder, limits)
    return caught.value


# --- the real series ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real():
    return read_folder(CT_DICOM_SERIES)


@pytest.fixture(scope="module")
def real_files_by_z():
    """(z, path) of the real files, ascending z, from pydicom's own reading of the headers."""
    found = []
    for path in CT_DICOM_SERIES.iterdir():
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        found.append((float(ds.ImagePositionPatient[2]), path))
    return sorted(found)


def test_real_series_geometry(real):
    assert real.kind == "dicom"
    assert real.voxels.shape == (20, 512, 512) and real.voxels.dtype == np.float32
    assert real.original_shape == (20, 512, 512)
    assert real.spacing_mm == (2.0, 0.9765625, 0.9765625)
    assert real.direction == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    assert real.modality == "CT"
    assert real.acquisition_plane == "axial"
    assert real.dropped_slices == 0


def test_real_series_is_one_series_grouped_by_its_folder():
    (series,) = series_in_folder(CT_DICOM_SERIES)
    assert (series.index, series.of) == (1, 1) and len(series.files) == 20
    # The UIDs are blank in the vendored files: the folder is the series.
    assert all(str(h.get("SeriesInstanceUID", "")) == "" for h in series.headers)


def test_real_series_voxels_are_hu_in_position_order(real, real_files_by_z):
    zs = [z for z, _ in real_files_by_z]
    assert zs[0] == -804.5 and zs[-1] == -766.5 and np.allclose(np.diff(zs), 2.0)
    # File names run the other way (name order = z descending): order cannot come from names.
    by_name = sorted(p.name for _, p in real_files_by_z)
    assert by_name == [p.name for _, p in reversed(real_files_by_z)]
    for k, (_, path) in enumerate(real_files_by_z):
        ds = pydicom.dcmread(path)  # JPEG 2000 lossless, decoded by pylibjpeg-openjpeg
        hu = apply_rescale(ds.pixel_array, ds)
        assert float(ds.RescaleIntercept) == -1024.0
        np.testing.assert_array_equal(real.voxels[k], hu.astype(np.float32), err_msg=f"slice {k} ({path.name})")


def test_real_series_header_is_allow_listed(real):
    header = dict(real.header)
    assert header["SeriesDescription"] == "CT Body 3.0"
    assert header["Modality"] == "CT"
    assert not set(header) & set(IDENTIFYING_KEYWORDS)
    # The real files do carry one UID (FrameOfReferenceUID) and UID-shaped file names; neither leaks.
    ds = pydicom.dcmread(next(CT_DICOM_SERIES.iterdir()), stop_before_pixels=True)
    leaks = [str(ds.FrameOfReferenceUID), *(p.name for p in CT_DICOM_SERIES.iterdir())]
    assert str(ds.FrameOfReferenceUID)
    for value in header.values():
        assert not any(leak in value for leak in leaks)
        assert "1.3.12.2.1107" not in value


# --- synthetic series: ordering and the canonical frame -------------------------------------------


@pytest.mark.parametrize("naming", ["reversed", "shuffled"])
def test_voxel_order_follows_position_not_file_name(tmp_path, naming):
    n = 7
    order = list(range(n))[::-1] if naming == "reversed" else random.Random(3).sample(range(n), n)
    assert order != sorted(order)
    series = write_dicom_series(
        tmp_path / "s", n, pixel_fn=constant_pixels(lambda i: 10 * (i + 1)), name_fn=lambda i: f"{order[i]:02d}.dcm"
    )
    # Sorted file names are not in position order...
    assert [p.name for p in sorted(series.files)] != [p.name for p in series.files]
    volume = read_folder(tmp_path / "s")
    # ...but the voxels are: slice k holds the value of the k-th lowest position.
    assert volume.voxels[:, 0, 0].tolist() == [10.0 * (k + 1) for k in range(n)]
    assert np.all(volume.voxels == volume.voxels[:, :1, :1])
    assert volume.spacing_mm == (2.0, 0.5, 0.5)


def test_positions_given_out_of_order_are_sorted(tmp_path):
    zs = [4.0, -2.0, 0.0, 2.0, -4.0]
    write_dicom_series(tmp_path / "s", 5, positions=[(0, 0, z) for z in zs], pixel_fn=constant_pixels(lambda i: int(zs[i])))
    volume = read_folder(tmp_path / "s")
    assert volume.voxels[:, 3, 3].tolist() == sorted(zs)


def test_rescale_slope_and_intercept_are_applied(tmp_path):
    series = write_dicom_series(tmp_path / "s", 3, slope=2.0, intercept=-1000.0)
    volume = read_folder(tmp_path / "s")
    for k in range(3):
        np.testing.assert_array_equal(volume.voxels[k], series.hu(k, slope=2.0, intercept=-1000.0))


def test_columns_toward_anterior_are_flipped_into_the_canonical_frame(tmp_path):
    # Columns run toward -y (anterior) and the slice normal toward -z (inferior): the reader must
    # still give slice 0 = most inferior and row 0 = most anterior (LPS, direction identity).
    rows, cols, n = 6, 5, 4

    def pixels(i, r, c):
        return (100 * i + 10 * np.arange(r)[:, None] + np.arange(c)[None, :]).astype(np.int16)

    write_dicom_series(tmp_path / "s", n, rows=rows, cols=cols, orientation=(1, 0, 0, 0, -1, 0), pixel_fn=pixels)
    volume = read_folder(tmp_path / "s")
    assert volume.direction == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    assert volume.acquisition_plane == "axial"
    expected = np.stack([pixels(i, rows, cols)[::-1, :] for i in range(n)]).astype(np.float32)
    np.testing.assert_array_equal(volume.voxels, expected)


def test_acquisition_plane_from_the_source_orientation(tmp_path):
    # Sagittal: rows along +y, columns along -z; slices stacked along x.
    write_dicom_series(
        tmp_path / "sag", 3, orientation=(0, 1, 0, 0, 0, -1), positions=[(x, 0, 0) for x in (0.0, 2.0, 4.0)]
    )
    assert read_folder(tmp_path / "sag").acquisition_plane == "sagittal"
    assert plane_of((1, 0, 0, 0, 0, 1, 0, -1, 0)) == "coronal"
    tilt = np.deg2rad(45)
    assert plane_of((1, 0, 0, 0, np.cos(tilt), -np.sin(tilt), 0, np.sin(tilt), np.cos(tilt))) == "oblique"


# --- grouping and discovery ---------------------------------------------------------------------


def test_two_series_in_one_folder_expand_by_series_number(tmp_path):
    folder = tmp_path / "study"
    late = write_dicom_series(folder, 3, series_number=7, name_fn=lambda i: f"a{i}.dcm", pixel_fn=constant_pixels(lambda i: 700 + i))
    early = write_dicom_series(folder, 4, series_number=3, name_fn=lambda i: f"b{i}.dcm", pixel_fn=constant_pixels(lambda i: 300 + i))
    assert late.series_uid != early.series_uid
    items = expand(classify(folder))
    assert [len(item.series.files) for item in items] == [4, 3]  # SeriesNumber 3 first, though its files sort later
    assert [(item.series.index, item.series.of) for item in items] == [(1, 2), (2, 2)]
    assert set(items[0].series.files) == set(early.files) and set(items[1].series.files) == set(late.files)
    assert read_volume(items[0]).voxels[:, 0, 0].tolist() == [300, 301, 302, 303]
    assert read_volume(items[1]).voxels[:, 0, 0].tolist() == [700, 701, 702]
    # Unexpanded, a two-series folder is ambiguous rather than silently one of them.
    with pytest.raises(VolumeError) as caught:
        read_volume(VolumeInput("dicom", folder))
    assert caught.value.reason == "ambiguous_series" and caught.value.file == str(folder)


def test_find_volume_inputs_and_empty_folders(tmp_path):
    root = tmp_path / "raw"
    write_dicom_series(root / "ct", 3)
    write_slice_folder(root / "cap" / "001", m3d_like_slices(3))
    (root / "nifti").mkdir()
    (root / "nifti" / "x.nii.gz").write_bytes(CT_NIFTI.read_bytes())
    (root / "empty").mkdir()
    found = list(find_volume_inputs(root))
    inputs = [(f.kind, f.path.relative_to(root).as_posix()) for f in found if isinstance(f, VolumeInput)]
    assert inputs == [("slices", "cap/001"), ("dicom", "ct"), ("nifti", "nifti/x.nii.gz")]
    errors = [f for f in found if isinstance(f, VolumeError)]
    assert [(e.reason, e.file) for e in errors] == [("empty_folder", str(root / "empty"))]
    with pytest.raises(VolumeError) as caught:
        classify(root / "empty")
    assert caught.value.reason == "empty_folder" and caught.value.file == str(root / "empty")
    (root / "notes").mkdir()
    (root / "notes" / "readme.txt").write_text("no volume here")
    with pytest.raises(VolumeError) as caught:
        classify(root / "notes")
    assert caught.value.reason == "empty_folder" and caught.value.file == str(root / "notes")
    with pytest.raises(VolumeError) as caught:
        series_in_folder(root / "notes")
    assert caught.value.reason == "empty_folder"


# --- rejects: each names its reason and the culprit ---------------------------------------------


@pytest.mark.filterwarnings("ignore:End of file reached before delimiter")
def test_truncated_real_file_is_named(tmp_path):
    files = copy_real_series(tmp_path / "ct")
    broken = files[7]
    # Cut inside the JPEG 2000 stream (the header, ~4.8 kB, stays whole). Cut in half the file is
    # named just the same, but GDCM spends ~5 s failing on it; 5 % of it fails in milliseconds.
    truncated_copy(broken, broken, keep=0.05)
    assert 0 < broken.read_bytes().find(bytes.fromhex("e07f1000")) < broken.stat().st_size - 1000  # PixelData tag
    error = reject(tmp_path / "ct")
    assert error.reason == "unreadable_dicom"
    assert error.file == str(broken)


def test_mixed_slice_sizes(tmp_path):
    def pixels(i, rows, cols):
        return np.zeros((rows, cols + 4 if i == 2 else cols), dtype=np.int16)

    write_dicom_series(tmp_path / "s", 4, pixel_fn=pixels)
    error = reject(tmp_path / "s")
    assert error.reason == "mixed_slice_sizes" and error.file == str(tmp_path / "s")
    assert "16x16" in error.detail and "16x20" in error.detail


def test_missing_image_position_names_the_slice(tmp_path):
    series = write_dicom_series(tmp_path / "s", 4, positions=[(0, 0, 0), (0, 0, 2), None, (0, 0, 6)])
    error = reject(tmp_path / "s")
    assert error.reason == "missing_positions" and error.file == str(series.files[2])
    assert "ImagePositionPatient" in error.detail


def test_mixed_orientation(tmp_path):
    write_dicom_series(tmp_path / "s", 3, orientation=[(1, 0, 0, 0, 1, 0), (1, 0, 0, 0, 1, 0), (0, 1, 0, 0, 0, -1)])
    error = reject(tmp_path / "s")
    assert error.reason == "mixed_orientation" and error.file == str(tmp_path / "s")


def test_duplicate_positions(tmp_path):
    write_dicom_series(tmp_path / "s", 4, positions=[(0, 0, z) for z in (0.0, 2.0, 2.0, 4.0)])
    error = reject(tmp_path / "s")
    assert error.reason == "duplicate_positions" and error.file == str(tmp_path / "s")


def test_missing_slice_in_the_middle_is_uneven_spacing(tmp_path):
    write_dicom_series(tmp_path / "s", 5, positions=[(0, 0, z) for z in (0.0, 2.0, 4.0, 8.0, 10.0)])
    error = reject(tmp_path / "s")
    assert error.reason == "uneven_slice_spacing" and error.file == str(tmp_path / "s")
    assert "2.000" in error.detail and "4.000" in error.detail


def test_single_file_series(tmp_path):
    series = write_dicom_series(tmp_path / "s", 1)
    error = reject(tmp_path / "s")
    assert error.reason == "too_few_slices" and error.file == str(series.files[0])


def test_missing_pixel_spacing_names_the_slice(tmp_path):
    series = write_dicom_series(tmp_path / "s", 3, extra={"PixelSpacing": None})
    error = reject(tmp_path / "s")
    assert error.reason == "missing_spacing" and error.file == str(series.files[0])


def test_too_large_is_checked_from_headers_before_decoding(tmp_path):
    series = write_dicom_series(tmp_path / "s", 4, rows=16, cols=16)
    n_voxels = 4 * 16 * 16
    assert read_folder(tmp_path / "s", VolumeLimits(max_voxels=n_voxels)).voxels.shape == (4, 16, 16)
    # Make one slice undecodable: over the limit it must not matter, since nothing is decoded.
    truncated_copy(series.files[1], series.files[1], keep=0.8)
    error = reject(tmp_path / "s", VolumeLimits(max_voxels=n_voxels - 1))
    assert error.reason == "too_large" and error.file == str(tmp_path / "s")
    assert f"{n_voxels:,}" in error.detail
    # Within the limit the same folder is checked and the cut-short (uncompressed) slice is named.
    error = reject(tmp_path / "s", VolumeLimits(max_voxels=n_voxels))
    assert error.reason == "truncated" and error.file == str(series.files[1])


def test_too_large_real_series_with_garbage_pixels(tmp_path):
    files = copy_real_series(tmp_path / "ct")
    for path in files:
        garbage_pixel_data(path)
    error = reject(tmp_path / "ct", VolumeLimits(max_voxels=20 * 512 * 512 - 1))
    assert error.reason == "too_large" and error.file == str(tmp_path / "ct")


def test_short_uncompressed_pixel_data_is_rejected(tmp_path):
    series = write_dicom_series(tmp_path / "s", 4)
    garbage_pixel_data(series.files[2], n_bytes=17)
    # GDCM would read it and fill the slice with stale memory; the length check names the file.
    error = reject(tmp_path / "s")
    assert error.reason == "truncated" and error.file == str(series.files[2])
