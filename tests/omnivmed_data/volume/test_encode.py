"""PNG slice storage and the metadata of an encoded volume."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from omnivmed.data.volume.core import Volume
from omnivmed.data.volume.discover import classify, read_volume
from omnivmed.data.volume.encode import encode_volume, from_png, to_png
from omnivmed.data.volume.presets import PRESETS, recipe_from_options
from support.volume_files import CT_NIFTI, MR_NIFTI, m3d_like_slices, write_slice_folder

DIRECTION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def volume(shape=(5, 6, 7), *, spacing=(2.0, 0.5, 0.25), modality="CT", header=(), dropped=0, seed=0) -> Volume:
    voxels = np.random.default_rng(seed).normal(0, 300, shape).astype(np.float32)
    return Volume(voxels, "dicom", spacing, DIRECTION, tuple(shape), modality=modality, acquisition_plane="axial",
                  header=header, dropped_slices=dropped)


@pytest.mark.parametrize("bits, dtype, top", [(8, np.uint8, 255), (16, np.uint16, 65535)])
def test_png_round_trip(bits, dtype, top):
    levels = np.arange(top + 1, dtype=np.float64)[:: max(1, (top + 1) // 4096)]
    slice01 = np.resize(levels / top, (16, len(levels) // 16 + 1)).astype(np.float32)
    data = to_png(slice01, bits)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED).dtype == dtype
    back = from_png(data)
    assert back.dtype == np.float32 and back.shape == slice01.shape
    np.testing.assert_array_equal(np.rint(back * top), np.rint(slice01 * top))  # exact on the grid
    # Off-grid values come back to the nearest level.
    noisy = np.random.default_rng(bits).random((9, 11), dtype=np.float32)
    assert np.abs(from_png(to_png(noisy, bits)) - noisy).max() <= 0.5 / top + 1e-6


def test_native_encoding_keeps_every_slice():
    vol = volume()
    encoded = encode_volume(vol, "auto")
    assert encoded.frame_format == "png" and len(encoded.frames) == 5
    assert encoded.modality == "ct"
    meta = encoded.visual_meta
    assert meta.frame_indices == (0, 1, 2, 3, 4)
    assert meta.spacing_mm == (2.0, 0.5, 0.25) and meta.original_shape == (5, 6, 7) and meta.orientation == DIRECTION
    stored = np.stack([from_png(f) for f in encoded.frames])
    window = np.clip(vol.voxels, 40 - 200, 40 + 200)
    assert np.abs(stored - (window - (40 - 200)) / 400).max() <= 0.5 / 255 + 1e-6


def test_resized_in_depth_has_no_frame_indices_and_scaled_spacing():
    vol = volume((6, 8, 10))
    encoded = encode_volume(vol, recipe_from_options("minmax", shape="3x16x5"))
    assert len(encoded.frames) == 3 and from_png(encoded.frames[0]).shape == (16, 5)
    assert encoded.visual_meta.frame_indices is None
    assert encoded.visual_meta.spacing_mm == (4.0, 0.25, 0.5)
    assert encoded.visual_meta.original_shape == (6, 8, 10)


def test_resized_in_plane_only_keeps_frame_indices():
    encoded = encode_volume(volume((4, 8, 8)), recipe_from_options("minmax", shape="4x4x4"))
    assert encoded.visual_meta.frame_indices == (0, 1, 2, 3)
    assert encoded.visual_meta.spacing_mm == (2.0, 1.0, 0.5)


def test_cropped_frames_name_their_source_slices():
    voxels = np.zeros((6, 5, 5), dtype=np.float32)
    voxels[2:5, 1:4, 1:4] = 1.0
    vol = Volume(voxels, "nifti", (3.0, 1.0, 1.0), DIRECTION, (6, 5, 5))
    recipe = recipe_from_options("m3d", shape="native")
    encoded = encode_volume(vol, recipe)
    assert len(encoded.frames) == 3 and encoded.visual_meta.frame_indices == (2, 3, 4)
    assert encoded.visual_meta.spacing_mm == (3.0, 1.0, 1.0)


def test_provenance_fields():
    header = (("Modality", "CT"), ("SeriesDescription", "CT Body 3.0"))
    encoded = encode_volume(volume(header=header), PRESETS["ct-lung"])
    fields = dict(encoded.fields)
    assert fields["volume_format"] == "dicom"
    assert fields["preset"] == "ct-lung"
    assert fields["normalisation"] == "window L-600 W1500, 8-bit PNG"
    assert fields["acquisition_plane"] == "axial"
    assert fields["dicom.SeriesDescription"] == "CT Body 3.0" and fields["dicom.Modality"] == "CT"
    assert "dropped_slices" not in fields
    m3d = dict(encode_volume(volume(), recipe_from_options("m3d", bit_depth=16)).fields)
    assert m3d["preset"] == "m3d"
    assert m3d["normalisation"] == "min-max, crop foreground, resize 32x256x256 trilinear, 16-bit PNG"


def test_sixteen_bit_frames():
    encoded = encode_volume(volume(), PRESETS["ct-hu-minmax"])
    pixels = cv2.imdecode(np.frombuffer(encoded.frames[0], np.uint8), cv2.IMREAD_UNCHANGED)
    assert pixels.dtype == np.uint16 and pixels.max() > 255


def test_slice_folder_and_nifti_fields(tmp_path):
    slices = m3d_like_slices(4, 16, 20)
    slices.append(np.zeros((3, 3), np.uint8))
    write_slice_folder(tmp_path / "v", slices)
    encoded = encode_volume(read_volume(classify(tmp_path / "v")), "auto")
    fields = dict(encoded.fields)
    assert fields["volume_format"] == "slices" and fields["preset"] == "minmax" and fields["dropped_slices"] == "1"
    assert "acquisition_plane" not in fields and encoded.modality is None
    assert encoded.visual_meta.spacing_mm is None and encoded.visual_meta.orientation is None
    mr = encode_volume(read_volume(classify(MR_NIFTI)), "auto")
    assert dict(mr.fields)["volume_format"] == "nifti" and dict(mr.fields)["acquisition_plane"] == "axial"
    assert len(mr.frames) == 20 and mr.visual_meta.frame_indices == tuple(range(20))
    assert not any(k.startswith("dicom.") for k, _ in mr.fields)


@pytest.mark.parametrize("modality, expected", [("CT", "ct"), ("MR", "mri"), ("PT", "pet"), ("OT", None), (None, None)])
def test_modality_vocabulary(modality, expected):
    assert encode_volume(volume((2, 3, 3), modality=modality), "minmax").modality == expected


def test_stored_bytes_do_not_depend_on_the_blas_thread_count():
    """Sample ids hash the PNG bytes: they must be the same on every machine, so no BLAS sums."""
    script = (
        "import hashlib, sys; from omnivmed.data.volume import *; from omnivmed.data.volume.discover import classify;"
        "v = read_volume(classify(__import__('pathlib').Path(sys.argv[1])));"
        "[print(hashlib.sha256(b''.join(encode_volume(v, recipe_from_options(p)).frames)).hexdigest()) for p in sys.argv[2:]]"
    )
    presets = ("m3d", "m3d-area")
    volume = read_volume(classify(CT_NIFTI))
    here = [hashlib.sha256(b"".join(encode_volume(volume, recipe_from_options(p)).frames)).hexdigest() for p in presets]
    assert here[0] != here[1]
    for threads in ("1", "4"):  # each in a fresh process: BLAS reads these when it loads
        env = {**os.environ, "OPENBLAS_NUM_THREADS": threads, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        run = subprocess.run([sys.executable, "-c", script, str(CT_NIFTI), *presets], env=env, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        assert run.stdout.split() == here, threads
