"""Pruning on a synthetic video with known static regions keeps exactly the changed patches."""

import cv2
import numpy as np
import torch

from omnivmed.trainer.data.visual import VisualSpec, visual_inputs
from omnivmed.trainer.model.pruning import static_patch_keep_mask

P = 8  # patch size
SPEC = VisualSpec(P, (0.5,) * 3, (0.5,) * 3, max_frames=16, max_pixels=64 * 64, max_sample_pixels=16 * 64 * 64,
                  prune=True, prune_threshold=0.1)  # fmt: skip


def synthetic_video(frames: int = 6):
    """A 32x48 static textured background (4x6 patches); a bright 8x8 block moves one patch right per frame."""
    rng = np.random.default_rng(0)
    background = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    video, changed = [], []
    for t in range(frames):
        frame = background.copy()
        frame[8:16, t * 8 : t * 8 + 8] = 255
        video.append(frame)
        if t:  # patches where the block left and where it arrived
            changed.append({(1, t - 1), (1, t)})
    return video, changed


def png(frame: np.ndarray) -> bytes:
    return cv2.imencode(".png", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))[1].tobytes()


def test_keeps_exactly_the_changed_patches_of_a_video():
    video, changed = synthetic_video()
    [clip] = visual_inputs(tuple(png(f) for f in video), "video", SPEC)
    kept = {(int(t), int(h), int(w)) for t, h, w in clip.positions}
    expected = {(0, h, w) for h in range(4) for w in range(6)}  # the first frame is always kept whole
    expected |= {(t, h, w) for t, patches in enumerate(changed, start=1) for h, w in patches}
    assert kept == expected
    assert clip.tokens_before == 6 * 24 and len(clip.positions) == 24 + 2 * 5


def test_survivors_keep_their_pixels_and_original_positions():
    video, _ = synthetic_video(3)
    [clip] = visual_inputs(tuple(png(f) for f in video), "video", SPEC)
    t, h, w = clip.positions[-1].tolist()
    assert (t, h, w) == (2, 1, 2)
    block = (video[2][h * P : (h + 1) * P, w * P : (w + 1) * P].astype(np.float32) / 255 - 0.5) / 0.5
    assert torch.allclose(clip.patches[-1], torch.from_numpy(block).permute(2, 0, 1).reshape(-1), atol=1e-6)


def test_volumes_are_pruned_but_images_never():
    video, _ = synthetic_video(3)
    [volume] = visual_inputs(tuple(png(f) for f in video), "volume", SPEC)
    assert len(volume.positions) < volume.tokens_before
    images = visual_inputs(tuple(png(video[0]) for _ in range(3)), "multi_image", SPEC)
    assert [len(i.positions) for i in images] == [24, 24, 24]
    assert all(int(i.positions[:, 0].max()) == 0 for i in images)


def test_threshold_is_on_the_mean_absolute_difference():
    patches = torch.zeros(2, 3, 4)
    patches[1, 0] = 0.1  # exactly the threshold: not greater, so dropped
    patches[1, 1] = torch.tensor([0.0, 0.0, 0.0, 0.5])  # mean 0.125: kept
    patches[1, 2] = -0.2
    assert static_patch_keep_mask(patches, 0.1).tolist() == [[True, True, True], [False, True, True]]
