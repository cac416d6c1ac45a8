"""M3D-style slice folders: ``<int>.png|jpeg`` files read as M3D's preparation script reads them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from omnivmed.data.volume.core import VolumeError, VolumeLimits
from omnivmed.data.volume.discover import classify, read_volume
from omnivmed.data.volume.slice_folder import read_slice_folder, slice_files
from support.volume_files import m3d_like_slices, truncated_copy, write_slice_folder


def constant(value: int, shape=(6, 8)) -> np.ndarray:
    return np.full(shape, value, dtype=np.uint8)


def reject(folder: Path, limits: VolumeLimits = VolumeLimits()) -> VolumeError:
    with pytest.raises(VolumeError) as caught:
        read_slice_folder(folder, limits)
    return caught.value


def test_slices_are_ordered_by_their_integer(tmp_path):
    numbers = [10, 2, 1, 100, 30]
    write_slice_folder(tmp_path / "v", [constant(n) for n in numbers], numbers=numbers)
    (tmp_path / "v" / "notes.txt").write_text("ignored")
    (tmp_path / "v" / "a.png").write_bytes(b"ignored: not an <int> name")
    assert [p.name for p in slice_files(tmp_path / "v")] == ["1.png", "2.png", "10.png", "30.png", "100.png"]
    volume = read_volume(classify(tmp_path / "v"))
    assert volume.kind == "slices" and volume.spacing_mm is None and volume.direction is None
    assert volume.modality is None and volume.acquisition_plane is None
    assert volume.voxels.shape == (5, 6, 8) and volume.original_shape == (5, 6, 8)
    np.testing.assert_array_equal(volume.voxels[:, 0, 0], np.float32([1, 2, 10, 30, 100]) / np.float32(255))


def test_most_common_shape_is_kept_and_the_rest_counted(tmp_path):
    images = [constant(10 * i) for i in range(5)]
    images[1] = constant(99, (12, 8))  # a scout of another size
    images[3] = constant(98, (6, 9))
    write_slice_folder(tmp_path / "v", images)
    volume = read_slice_folder(tmp_path / "v")
    assert volume.voxels.shape == (3, 6, 8) and volume.dropped_slices == 2
    np.testing.assert_array_equal(volume.voxels[:, 0, 0] * 255, [0, 20, 40])


def test_png_values_are_grayscale_over_255(tmp_path):
    rng = np.random.default_rng(1)
    gray = [rng.integers(0, 256, (7, 9), dtype=np.uint8) for _ in range(3)]
    rgb = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    paths = write_slice_folder(tmp_path / "v", [*gray, rgb])
    volume = read_slice_folder(tmp_path / "v")
    np.testing.assert_array_equal(volume.voxels[:3], np.stack(gray).astype(np.float32) / 255)
    # An RGB slice is converted to "L" exactly as M3D does (PIL's ITU-R 601-2 luma).
    luma = np.asarray(Image.open(paths[3]).convert("L"), dtype=np.float32) / 255
    np.testing.assert_array_equal(volume.voxels[3], luma)


@pytest.mark.parametrize("suffix", [".jpeg", ".jpg", ".JPEG"])
def test_jpeg_slices(tmp_path, suffix):
    slices = m3d_like_slices(4, 16, 24, seed=2)
    paths = write_slice_folder(tmp_path / "v", slices, suffix=suffix)
    volume = read_slice_folder(tmp_path / "v")
    expected = np.stack([np.asarray(Image.open(p).convert("L"), dtype=np.float32) / 255 for p in paths])
    np.testing.assert_array_equal(volume.voxels, expected)
    assert np.abs(volume.voxels * 255 - np.stack(slices)).mean() < 8  # lossy, but the same picture


def test_mixed_png_and_jpeg(tmp_path):
    write_slice_folder(tmp_path / "v", [constant(0), constant(255)], numbers=[1, 3], suffix=".png")
    write_slice_folder(tmp_path / "v", [constant(128)], numbers=[2], suffix=".jpeg")
    volume = read_slice_folder(tmp_path / "v")
    assert np.round(volume.voxels[:, 0, 0] * 255).tolist() == [0, 128, 255]


def test_garbage_slice_is_named(tmp_path):
    paths = write_slice_folder(tmp_path / "v", [constant(i) for i in range(4)])
    paths[2].write_bytes(b"this is not a PNG at all")
    error = reject(tmp_path / "v")
    assert error.reason == "unreadable_slice" and error.file == str(paths[2])


def test_truncated_slice_is_named(tmp_path):
    rng = np.random.default_rng(0)
    paths = write_slice_folder(tmp_path / "v", [rng.integers(0, 256, (64, 64), dtype=np.uint8) for _ in range(4)])
    truncated_copy(paths[1], paths[1], keep=0.5)  # header readable, pixels cut short
    error = reject(tmp_path / "v")
    assert error.reason == "unreadable_slice" and error.file == str(paths[1])


def test_empty_folder(tmp_path):
    (tmp_path / "v").mkdir()
    with pytest.raises(VolumeError) as caught:
        classify(tmp_path / "v")
    assert caught.value.reason == "empty_folder" and caught.value.file == str(tmp_path / "v")
    (tmp_path / "v" / "cover.png").write_bytes(b"not a numbered slice")
    error = reject(tmp_path / "v")
    assert error.reason == "empty_folder" and error.file == str(tmp_path / "v")


def test_too_large(tmp_path):
    write_slice_folder(tmp_path / "v", [constant(i) for i in range(4)])
    assert read_slice_folder(tmp_path / "v", VolumeLimits(max_voxels=4 * 6 * 8)).voxels.shape == (4, 6, 8)
    error = reject(tmp_path / "v", VolumeLimits(max_voxels=4 * 6 * 8 - 1))
    assert error.reason == "too_large" and error.file == str(tmp_path / "v")
