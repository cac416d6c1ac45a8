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


def _patches_as_written_first(frames: list[bytes], kind: str, s: VisualSpec):
    """The pixel path as first written (the reference): every frame to full-size float RGB, then resized, then
    ``(x - mean) / std`` broadcast per pixel; the faster path must give these tensors bit for bit."""
    from omnivmed.trainer.data.visual import patchify
    from omnivmed.trainer.model.pruning import static_patch_keep_mask

    picked = even_subsample(len(frames), s.max_frames) if kind != "image" else [0]
    decoded = [decode_frame(frames[i]) for i in picked]
    height, width = decoded[0].shape[:2]
    gh, gw = target_grid(height, width, s.patch_size, min(s.max_pixels, s.max_sample_pixels // len(decoded)))
    size = (gw * s.patch_size, gh * s.patch_size)
    area = size[0] * size[1] < height * width
    resized = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA if area else cv2.INTER_LINEAR) for f in decoded])
    patches = patchify((resized - np.float32(s.mean)) / np.float32(s.std), s.patch_size)
    if not s.prune or kind == "image":
        return patches.reshape(-1, patches.shape[-1])
    mean, std = s.prune_scale()
    keep = static_patch_keep_mask(patchify((resized - mean) / std, s.patch_size), s.prune_threshold)
    assert 0 < int(keep.sum()) < keep.numel()  # the case checks pruning's input too: some kept, some dropped
    return patches[keep]


@pytest.mark.parametrize(
    "layout", ["grey8", "grey16", "bgr8", "bgr16", "bgra8", "jpeg"],
)
@pytest.mark.parametrize("size", [(37, 53), (300, 410)])  # upscaled (linear) and shrunk (area)
def test_patches_equal_the_first_written_path_bit_for_bit(layout, size):
    rng = np.random.default_rng(len(layout) * 31 + size[0])
    shape = {"grey8": size, "grey16": size, "bgra8": (*size, 4)}.get(layout, (*size, 3))
    top = 65535 if layout.endswith("16") else 255
    frames = []
    base = rng.integers(0, top, shape)
    for _ in range(5):  # only the top-left corner changes, so pruning keeps some patches and drops others
        base[: size[0] // 3, : size[1] // 3] = rng.integers(0, top, base[: size[0] // 3, : size[1] // 3].shape)
        array = base.astype(np.uint16 if top == 65535 else np.uint8)
        frames.append(encoded(array, ".jpg" if layout == "jpeg" else ".png"))
    for kind, s in [("image", spec(mean=(0.48, 0.45, 0.40), std=(0.27, 0.26, 0.28))),
                    ("volume", spec(prune=True, max_pixels=96 * 96)), ("video", spec(prune=True, patch_size=8))]:  # fmt: skip
        frames_used = frames[:1] if kind == "image" else frames
        [visual] = visual_inputs(tuple(frames_used), kind, s)
        assert visual.patches.dtype == _patches_as_written_first(frames_used, kind, s).dtype
        assert np.array_equal(visual.patches.numpy(), _patches_as_written_first(frames_used, kind, s).numpy())
