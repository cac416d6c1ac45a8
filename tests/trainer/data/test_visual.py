"""Frames of any size into patches under the caps; 8/16-bit, grey and colour frames."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from omnivmed.trainer.data.visual import VisualSpec, decode_frame, even_subsample, target_grid, visual_inputs


def spec(**changes) -> VisualSpec:
    base = dict(patch_size=14, mean=(0.5,) * 3, std=(0.5,) * 3, max_frames=4, max_pixels=384 * 384,
                max_sample_pixels=4 * 384 * 384, prune=False, prune_threshold=0.1)  # fmt: skip
    return VisualSpec(**{**base, **changes})


def encoded(array: np.ndarray, ext: str = ".png") -> bytes:
    return cv2.imencode(ext, array)[1].tobytes()


def test_grid_keeps_aspect_under_the_pixel_cap_and_never_a_fixed_224():
    assert target_grid(512, 512, 14, 384 * 384) == (27, 27)
    assert target_grid(100, 300, 14, 384 * 384) == (7, 21)  # small images are not upscaled
    gh, gw = target_grid(1000, 250, 14, 384 * 384)
    assert gh * 14 * gw * 14 <= 384 * 384 and abs(gh / gw - 4) < 0.3
    assert target_grid(5, 5, 14, 384 * 384) == (1, 1)


def test_decoding_16_bit_grey_and_colour():
    grey16 = np.full((4, 4), 65535, np.uint16)
    assert np.allclose(decode_frame(encoded(grey16)), 1.0) and decode_frame(encoded(grey16)).shape == (4, 4, 3)
    bgr = np.zeros((4, 4, 3), np.uint8)
    bgr[..., 0] = 255  # blue in OpenCV's order
    assert np.allclose(decode_frame(encoded(bgr))[0, 0], [0, 0, 1])
    with pytest.raises(ValueError, match="does not decode"):
        decode_frame(b"not an image")


def test_frame_and_sample_pixel_caps():
    frames = tuple(encoded(np.full((280, 280), i * 20, np.uint8)) for i in range(10))
    [volume] = visual_inputs(frames, "volume", spec(max_frames=4, max_sample_pixels=4 * 140 * 140))
    assert volume.frames == 4 and volume.grid == (10, 10)  # 140x140 each: 4 frames share the sample budget
    assert volume.positions[:, 0].unique().tolist() == [0, 1, 2, 3]
    assert even_subsample(10, 4) == [0, 3, 6, 9]


def test_an_image_of_any_size_becomes_patch_multiples():
    [image] = visual_inputs((encoded(np.zeros((70, 43, 3), np.uint8), ".jpg"),), "image", spec())
    assert image.grid == (5, 3) and image.patches.shape == (15, 3 * 14 * 14)
