"""numpy resizes against torch.nn.functional.interpolate (what MONAI's Resize calls), and the foreground box.

Measured max |resample.resize - F.interpolate| (float32, random input in [0, 1)), asserted <= 1e-5:
    area:      <= 1.8e-07 (down 20x50x60 -> 8x25x30, up 5x7x9 -> 11x16x20, mixed 9x30x17 -> 32x12x40,
               20x512x512 -> 32x256x256)
    trilinear: <= 5.7e-07 on the same shapes (align_corners=False)
"""

from __future__ import annotations

import numpy as np
import pytest
import torch  # the reference; a test dependency: missing, it fails, never skips

from omnivmed.data.volume.resample import foreground_box, resize

F = torch.nn.functional

SHAPES = [
    ((20, 50, 60), (8, 25, 30)),  # down on every axis
    ((5, 7, 9), (11, 16, 20)),  # up on every axis
    ((9, 30, 17), (32, 12, 40)),  # mixed, non-integer ratios
    ((6, 10, 10), (6, 4, 15)),  # one axis unchanged
    ((20, 512, 512), (32, 256, 256)),  # the M3D case on the real series' grid
]


def torch_resize(array: np.ndarray, shape, mode: str) -> np.ndarray:
    extra = {"align_corners": False} if mode == "trilinear" else {}
    return F.interpolate(torch.from_numpy(array)[None, None], size=tuple(shape), mode=mode, **extra)[0, 0].numpy()


@pytest.mark.parametrize("mode", ["area", "trilinear"])
@pytest.mark.parametrize("source, target", SHAPES, ids=["down", "up", "mixed", "one-axis", "m3d"])
def test_resize_matches_torch(source, target, mode):
    array = np.random.default_rng(sum(source)).random(source, dtype=np.float32)
    ours = resize(array, target, mode)
    assert ours.shape == target and ours.dtype == np.float32 and ours.flags.c_contiguous
    diff = float(np.abs(ours - torch_resize(array, target, mode)).max())
    print(f"resize {mode} {source}->{target}: max |diff| {diff:.3g}")
    assert diff <= 1e-5


def test_resize_same_shape_is_identity():
    array = np.random.default_rng(0).random((3, 4, 5), dtype=np.float32)
    assert resize(array, (3, 4, 5)) is array


def test_area_preserves_the_mean_on_integer_ratios():
    array = np.random.default_rng(1).random((8, 12, 16), dtype=np.float32)
    assert np.isclose(resize(array, (4, 6, 8), "area").mean(), array.mean(), atol=1e-6)


def test_unknown_mode():
    with pytest.raises(ValueError, match="resize mode"):
        resize(np.zeros((2, 2, 2), np.float32), (3, 3, 3), "nearest")


def test_foreground_box():
    array = np.zeros((5, 6, 7), dtype=np.float32)
    assert foreground_box(array) is None
    array[1, 2, 3] = 0.5
    array[3, 4, 3] = 1.0
    array[2, 2, 5] = -1.0  # not foreground: only values > 0 are
    assert foreground_box(array) == (slice(1, 4), slice(2, 5), slice(3, 4))


def test_foreground_box_matches_monai_crop():
    import monai.transforms as mtf  # imported here, not at collection: it takes seconds; missing, it fails

    rng = np.random.default_rng(2)
    array = np.zeros((9, 11, 13), dtype=np.float32)
    array[2:7, 3:5, 1:12] = rng.random((5, 2, 11), dtype=np.float32) + 0.01
    box = foreground_box(array)
    cropped = np.asarray(mtf.CropForeground()(array[None]))[0]
    np.testing.assert_array_equal(array[box], cropped)
