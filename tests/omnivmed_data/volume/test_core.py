"""to_canonical: the reorientation every reader ends with."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from omnivmed.data.volume.core import CANONICAL_ORIENTATION, to_canonical
from omnivmed.data.volume.discover import classify, read_volume
from support.volume_files import CT_DICOM_SERIES, CT_NIFTI, MR_NIFTI

ORIENTED = {
    "LPS": (1, 0, 0, 0, 1, 0, 0, 0, 1),
    "RAS": (-1, 0, 0, 0, -1, 0, 0, 0, 1),
    "coronal": (1, 0, 0, 0, 0, -1, 0, 1, 0),
    "near-LPS oblique": (0.9998, -0.02, 0, 0.02, 0.9998, 0, 0, 0, 1),
}


@pytest.mark.parametrize("name", list(ORIENTED))
def test_to_canonical_equals_dicom_orient(name):
    pixels = np.random.default_rng(1).normal(size=(4, 5, 6)).astype(np.float32)
    image = sitk.GetImageFromArray(pixels)
    image.SetDirection(tuple(float(v) for v in ORIENTED[name]))
    image.SetSpacing((0.5, 0.7, 3.0))
    image.SetOrigin((10.0, -20.0, 5.0))
    ours, reference = to_canonical(image), sitk.DICOMOrient(image, CANONICAL_ORIENTATION)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(ours), sitk.GetArrayFromImage(reference))
    assert ours.GetDirection() == reference.GetDirection()
    assert ours.GetSpacing() == reference.GetSpacing() and ours.GetOrigin() == reference.GetOrigin()


@pytest.mark.parametrize("path", [CT_DICOM_SERIES, CT_NIFTI, MR_NIFTI], ids=lambda p: p.name)
def test_readers_give_what_a_plain_dicom_orient_gives(path):
    """The real files (one already LPS, one RAS, one series) against SimpleITK's own read + DICOMOrient."""
    vol = read_volume(classify(path))
    if path.is_dir():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path)))
    else:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
    reader.SetOutputPixelType(sitk.sitkFloat32)
    reference = sitk.DICOMOrient(reader.Execute(), CANONICAL_ORIENTATION)
    np.testing.assert_array_equal(vol.voxels, sitk.GetArrayFromImage(reference))


def test_series_pixels_do_not_depend_on_the_decode_thread_count(monkeypatch):
    monkeypatch.setenv("OMNIVMED_VOLUME_THREADS", "4")
    threaded = read_volume(classify(CT_DICOM_SERIES))
    monkeypatch.setenv("OMNIVMED_VOLUME_THREADS", "1")
    serial = read_volume(classify(CT_DICOM_SERIES))
    assert threaded.voxels.tobytes() == serial.voxels.tobytes()
    assert (threaded.spacing_mm, threaded.direction) == (serial.spacing_mm, serial.direction)
