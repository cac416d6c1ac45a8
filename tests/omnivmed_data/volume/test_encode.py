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


# --- the PNG encoder (PNG_ENCODING): lossless, thread-count independent, the settings it names -----


def _png_rows(data: bytes) -> tuple[int, int, int, bytes]:
    """(width, height, bit depth, inflated image data) of a PNG, read with zlib only."""
    import struct
    import zlib

    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBB", body[:10])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, _ = ihdr
    return width, height, depth, zlib.decompress(idat)


@pytest.mark.parametrize("preset", ["m3d", "ct-hu-minmax"])  # 8- and 16-bit slices
def test_encoded_slices_decode_to_exactly_the_quantised_volume(preset):
    from omnivmed.data.volume.encode import quantise
    from omnivmed.data.volume.presets import apply_recipe

    vol = read_volume(classify(CT_NIFTI))
    recipe = PRESETS[preset]
    normalised = apply_recipe(recipe, vol)
    expected = quantise(normalised.voxels, recipe.bit_depth)
    encoded = encode_volume(vol, recipe)
    decoded = np.stack([cv2.imdecode(np.frombuffer(f, np.uint8), cv2.IMREAD_UNCHANGED) for f in encoded.frames])
    assert decoded.dtype == expected.dtype and decoded.shape == expected.shape
    np.testing.assert_array_equal(decoded, expected)
    # quantise is what the per-slice to_png did: the same integers for every slice.
    assert all(from_png(to_png(s, recipe.bit_depth)).tobytes() == from_png(f).tobytes() for s, f in zip(normalised.voxels[:3], encoded.frames))


def test_encoded_bytes_do_not_depend_on_the_encoding_thread_count():
    vol = read_volume(classify(CT_NIFTI))
    one = encode_volume(vol, PRESETS["m3d"], threads=1).frames
    assert len(one) == 32 and len(set(one)) > 1
    for threads in (2, 3, 8, None):  # None: the shared default pool
        assert encode_volume(vol, PRESETS["m3d"], threads=threads).frames == one, threads


def test_png_slices_use_the_recorded_encoder_settings():
    """PNG_ENCODING names the Paeth filter on every row: check the stored rows (format 2 of the frame bytes)."""
    from omnivmed.data.volume.encode import PNG_ENCODING

    encoded = encode_volume(volume((3, 40, 50)), PRESETS["minmax"])
    assert dict(encoded.fields)["frame_encoding"] == PNG_ENCODING and PNG_ENCODING.startswith("png-2")
    for frame in encoded.frames:
        width, height, depth, raw = _png_rows(frame)
        assert (width, height, depth) == (50, 40, 8)
        stride = 1 + width
        assert len(raw) == height * stride
        assert {raw[i * stride] for i in range(height)} == {4}  # 4 = Paeth


def test_a_forked_process_encodes_with_its_own_pool():
    """The shared pool's threads do not survive fork: a child must not wait on them forever."""
    import multiprocessing

    vol = volume((4, 16, 16))
    here = encode_volume(vol, PRESETS["minmax"]).frames  # makes the parent's pool
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        there = pool.apply_async(_encode_in_child, (vol,)).get(timeout=60)
    assert there == here


def _encode_in_child(vol):
    return encode_volume(vol, PRESETS["minmax"]).frames
