"""Intensity/geometry presets, and the acceptance point: the ``m3d`` presets reproduce M3D's preprocessing.

M3D (BAAI-DCAI/M3D, Data/process/m3d_cap_data_prepare.py) reads a slice folder as 8-bit grayscale / 255,
keeps the slices of the most common shape, min-max normalises the (1, D, H, W) float32 array and applies

    mtf.Compose([mtf.CropForeground(), mtf.Resize(spatial_size=[32, 256, 256], mode="bilinear")])   # commit b24a750
    mtf.Compose([mtf.CropForeground(), mtf.Resize(spatial_size=[32, 256, 256])])                    # commit ac364a9

(MONAI runs "bilinear" on a volume as trilinear; Resize's default mode is "area"). Our ``m3d`` preset is the
first, ``m3d-area`` the second. The reference below runs exactly those lines with MONAI (imported, never
skipped: MONAI is in the test extra).

Measured (numpy 2.4.6, torch 2.13 CPU, MONAI 1.6.1), max |omnivmed - MONAI| on the real CT DICOM series,
the CT NIfTI, the MR NIfTI and a synthetic M3D slice folder:
    float (apply_recipe):      m3d-area 1.19e-07, m3d (trilinear) 1.79e-07   (asserted <= 1e-5)
    after 8-bit PNG storage:   1.9608e-03 = 0.50002 / 255   (asserted <= 0.5 / 255 + 1e-5 = 1.9708e-03)
    after 16-bit PNG storage:  7.75e-06  = 0.508 / 65535   (asserted <= 0.5 / 65535 + 1e-5 = 1.763e-05)
i.e. the float result is MONAI's up to float32 rounding, and the stored slices are off only by PNG quantisation.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from omnivmed.data.volume.core import Volume, VolumeError
from omnivmed.data.volume.discover import classify, expand, read_volume
from omnivmed.data.volume.encode import encode_volume, from_png
from omnivmed.data.volume.presets import (
    CT_WINDOWS,
    M3D_SHAPE,
    PRESETS,
    apply_recipe,
    parse_shape,
    recipe_from_options,
    resolve,
)
from omnivmed.data.volume.slice_folder import slice_files
from support.volume_files import CT_DICOM_SERIES, CT_NIFTI, MR_NIFTI, m3d_like_slices, write_slice_folder

FLOAT_TOLERANCE = 1e-5
PNG8_TOLERANCE = 0.5 / 255 + 1e-5
PNG16_TOLERANCE = 0.5 / 65535 + 1e-5


def volume_of(voxels, modality=None, spacing=(1.0, 1.0, 1.0)) -> Volume:
    voxels = np.asarray(voxels, dtype=np.float32)
    return Volume(voxels, "nifti", spacing, None, tuple(voxels.shape), modality=modality)


@pytest.fixture(scope="module")
def real_volumes():
    return {
        "ct-dicom": read_volume(expand(classify(CT_DICOM_SERIES))[0]),
        "ct-nifti": read_volume(classify(CT_NIFTI)),
        "mr-nifti": read_volume(classify(MR_NIFTI)),
    }


# --- intensity presets -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CT_WINDOWS))
def test_ct_windows_map_the_window_onto_0_1_with_clipping(name):
    level, width = CT_WINDOWS[name]
    low, high = level - width / 2, level + width / 2
    hu = [low - 500, low, level, high, high + 500, low + width / 4]
    out = apply_recipe(PRESETS[f"ct-{name}"], volume_of(np.reshape(hu, (1, 1, 6)))).voxels.ravel()
    np.testing.assert_allclose(out, [0.0, 0.0, 0.5, 1.0, 1.0, 0.25], atol=1e-6)
    assert out.dtype == np.float32


@pytest.mark.parametrize(
    "preset, hu, expected",
    [
        # the usual clinical windows (level L, width W: L - W/2 -> 0, L + W/2 -> 1), worked out by hand
        ("ct-soft-tissue", [-160, 40, 140, 240], [0.0, 0.5, 0.75, 1.0]),  # L40 W400
        ("ct-lung", [-1350, -600, -225, 150], [0.0, 0.5, 0.75, 1.0]),  # L-600 W1500
        ("ct-bone", [-500, 400, 850, 1300], [0.0, 0.5, 0.75, 1.0]),  # L400 W1800
        ("ct-brain", [0, 40, 60, 80], [0.0, 0.5, 0.75, 1.0]),  # L40 W80
        ("ct-mediastinum", [-125, 50, 137.5, 225], [0.0, 0.5, 0.75, 1.0]),  # L50 W350
        ("ct-liver", [-45, 30, 67.5, 105], [0.0, 0.5, 0.75, 1.0]),  # L30 W150
    ],
)
def test_ct_window_values(preset, hu, expected):
    out = apply_recipe(PRESETS[preset], volume_of(np.reshape(hu, (1, 1, 4)))).voxels.ravel()
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert PRESETS["ct-soft-tissue"].describe() == "window L40 W400, 8-bit PNG"


def test_mr_percentile_clips_outliers():
    rng = np.random.default_rng(0)
    voxels = rng.normal(300, 50, (4, 30, 30)).astype(np.float32)
    voxels[0, 0, 0] = 1e6  # one very bright voxel
    voxels[0, 0, 1] = -1e4
    low, high = np.percentile(voxels, (0.5, 99.5))
    out = apply_recipe(PRESETS["mr-percentile"], volume_of(voxels)).voxels
    np.testing.assert_allclose(out, (np.clip(voxels, low, high) - low) / (high - low), atol=1e-6)
    assert out[0, 0, 0] == 1.0 and out[0, 0, 1] == 0.0
    assert out.min() == 0.0 and out.max() == 1.0
    # The outlier does not squash the rest (plain min-max would put everything near 0).
    assert 0.3 < float(np.median(out)) < 0.7


def test_minmax():
    out = apply_recipe(PRESETS["minmax"], volume_of([[[-5.0, 0.0, 15.0]]])).voxels
    np.testing.assert_allclose(out.ravel(), [0.0, 0.25, 1.0])


def test_minmax_of_a_constant_volume_is_zero_not_nan():
    for name in ("minmax", "ct-hu-minmax", "mr-percentile"):
        out = apply_recipe(PRESETS[name], volume_of(np.full((2, 3, 4), 7.0))).voxels
        assert np.isfinite(out).all() and not out.any(), name


def test_m3d_of_a_constant_volume_has_no_foreground():
    with pytest.raises(VolumeError) as caught:
        apply_recipe(PRESETS["m3d"], volume_of(np.full((2, 3, 4), 7.0)), source="const.nii.gz")
    assert caught.value.reason == "empty_volume" and caught.value.file == "const.nii.gz"


def test_auto_picks_by_modality(real_volumes):
    assert resolve("auto", volume_of(np.zeros((1, 1, 1)), modality="CT")) is PRESETS["ct-soft-tissue"]
    assert resolve("auto", volume_of(np.zeros((1, 1, 1)), modality="MR")) is PRESETS["mr-percentile"]
    assert resolve("auto", volume_of(np.zeros((1, 1, 1)), modality="PT")) is PRESETS["minmax"]
    assert resolve("auto", volume_of(np.zeros((1, 1, 1)))) is PRESETS["minmax"]
    assert resolve(PRESETS["m3d"], volume_of(np.zeros((1, 1, 1)), modality="CT")) is PRESETS["m3d"]
    # End to end: the real CT series says CT in its header; the NIfTI files say nothing.
    assert dict(encode_volume(real_volumes["ct-dicom"], "auto").fields)["preset"] == "ct-soft-tissue"
    assert dict(encode_volume(real_volumes["mr-nifti"], "auto").fields)["preset"] == "minmax"


def test_recipe_from_options():
    assert recipe_from_options("auto") == "auto"
    assert recipe_from_options("m3d") is PRESETS["m3d"]
    recipe = recipe_from_options("ct-lung", shape="16x128x128", resize_mode="trilinear", bit_depth=16)
    assert recipe == replace(PRESETS["ct-lung"], shape=(16, 128, 128), resize_mode="trilinear", bit_depth=16)
    assert recipe_from_options("m3d", shape="native").shape is None
    assert parse_shape(" 4X5x6 ") == (4, 5, 6) and parse_shape("none") is None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"preset": "ct-kidney"}, "unknown volume preset"),
        ({"preset": "minmax", "shape": "32x256"}, "not DxHxW"),
        ({"preset": "minmax", "shape": "32x0x256"}, "not DxHxW"),
        ({"preset": "minmax", "shape": "axbxc"}, "not DxHxW"),
        ({"preset": "minmax", "resize_mode": "nearest"}, "resize mode"),
        ({"preset": "minmax", "bit_depth": 12}, "bit depth"),
        ({"preset": "auto", "shape": "32x256x256"}, "takes no"),
        ({"preset": "auto", "bit_depth": 16}, "takes no"),
        ({"preset": "auto", "resize_mode": "area"}, "takes no"),
    ],
)
def test_recipe_from_options_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        recipe_from_options(**kwargs)


# --- the acceptance point: m3d == M3D's own preprocessing ---------------------------------------------


M3D_VERSIONS = ("m3d", "m3d-area")


@pytest.fixture(scope="module", params=M3D_VERSIONS)
def m3d_version(request):
    """(preset name, MONAI transform of the script version it reproduces)."""
    import monai.transforms as mtf  # the reference; a missing MONAI must fail, not skip

    resize = {"m3d": {"mode": "bilinear"}, "m3d-area": {}}[request.param]
    return request.param, mtf.Compose([mtf.CropForeground(), mtf.Resize(spatial_size=[32, 256, 256], **resize)])


def m3d_reference(transform, image_dhw: np.ndarray) -> np.ndarray:
    """The lines of m3d_cap_data_prepare.py after the slices are stacked, on a (D, H, W) array."""
    image = image_dhw.astype(np.float32)[np.newaxis, ...]
    image = image - image.min()
    image = image / np.clip(image.max(), a_min=1e-8, a_max=None)
    return np.asarray(transform(image))[0]


def m3d_read_slice_folder(folder) -> np.ndarray:
    """M3D's own reading of a slice folder (sorted by int, 'L' / 255, most common shape), as its script does."""
    names = [p.name for p in folder.iterdir() if p.name.endswith(".jpeg") or p.name.endswith(".png")]
    names.sort(key=lambda x: int(x.rsplit(".", 1)[0]))
    images = [(np.array(Image.open(folder / n).convert("L")).astype(np.float32) / 255.0)[None] for n in names]
    common = Counter(i.shape for i in images).most_common(1)[0][0]
    return np.vstack([i for i in images if i.shape == common])


def compare_m3d(volume: Volume, reference: np.ndarray, preset: str) -> dict[str, float]:
    """Max |difference| to the reference: float, after 8-bit and after 16-bit PNG storage; asserts the bounds."""
    assert reference.shape == M3D_SHAPE
    normalised = apply_recipe(PRESETS[preset], volume)
    assert normalised.voxels.shape == M3D_SHAPE and normalised.voxels.dtype == np.float32
    diffs = {"float": float(np.abs(normalised.voxels - reference).max())}
    for bits, recipe in ((8, PRESETS[preset]), (16, recipe_from_options(preset, bit_depth=16))):
        encoded = encode_volume(volume, recipe)
        assert len(encoded.frames) == 32
        stored = np.stack([from_png(f) for f in encoded.frames])
        diffs[f"png{bits}"] = float(np.abs(stored - reference).max())
    print(f"{preset} max |diff| vs MONAI: {diffs}")
    assert diffs["float"] <= FLOAT_TOLERANCE  # measured 1.19e-07
    assert diffs["png8"] <= PNG8_TOLERANCE  # measured 1.9608e-03 (0.50002 / 255)
    assert diffs["png16"] <= PNG16_TOLERANCE  # measured 7.689e-06 (0.5039 / 65535)
    return diffs


@pytest.mark.parametrize("name", ["ct-dicom", "ct-nifti", "mr-nifti"])
def test_m3d_preset_matches_monai_on_real_volumes(name, real_volumes, m3d_version):
    preset, transform = m3d_version
    volume = real_volumes[name]
    reference = m3d_reference(transform, volume.voxels)
    compare_m3d(volume, reference, preset)


def test_m3d_preset_matches_m3d_on_a_slice_folder(tmp_path, m3d_version):
    preset, m3d_transform = m3d_version
    slices = m3d_like_slices(12, 40, 48, seed=5)
    slices.insert(6, np.full((30, 30), 200, dtype=np.uint8))  # an odd-sized key image: both drop it
    write_slice_folder(tmp_path / "case" / "series", slices, numbers=[i * 3 + 1 for i in range(len(slices))])
    folder = tmp_path / "case" / "series"
    volume = read_volume(classify(folder))
    assert volume.dropped_slices == 1 and volume.voxels.shape == (12, 40, 48)
    m3d_input = m3d_read_slice_folder(folder)
    np.testing.assert_array_equal(volume.voxels, m3d_input)
    # The dark border and the black first/last slices make the crop matter.
    assert [p.name for p in slice_files(folder)][:3] == ["1.png", "4.png", "7.png"]
    reference = m3d_reference(m3d_transform, m3d_input)
    uncropped = np.asarray(m3d_transform.transforms[1](m3d_input[None]))[0]
    assert np.abs(reference - uncropped).max() > 0.1
    compare_m3d(volume, reference, preset)


def test_m3d_crop_and_indices_on_the_real_series(real_volumes):
    normalised = apply_recipe(PRESETS["m3d"], real_volumes["ct-dicom"])
    assert normalised.slice_indices is None  # 20 slices resampled to 32
    assert normalised.recipe.describe() == "min-max, crop foreground, resize 32x256x256 trilinear, 8-bit PNG"
    assert PRESETS["m3d-area"].describe() == "min-max, crop foreground, resize 32x256x256 area, 8-bit PNG"
