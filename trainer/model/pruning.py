"""Token pruning after RLT (Run-Length Tokenization, Choudhury et al. 2024).

A patch that barely changed since the same patch of the previous slice or
frame carries little new information: we drop it before the encoder. The
test is RLT's: mean absolute difference of the *normalised* pixel values
(the encoder's own mean/std normalisation) against the previous frame,
kept when greater than the threshold (0.1 by default, the paper's value).
The first slice/frame is always kept and 2D images are never pruned.
Survivors keep their original (t, h, w) positions, so the rotary encoding
still tells the encoder where (and when) each one was.
"""

from __future__ import annotations

import torch

DEFAULT_THRESHOLD = 0.1


def static_patch_keep_mask(patches: torch.Tensor, threshold: float = DEFAULT_THRESHOLD) -> torch.Tensor:
    """patches (T, N, D) normalised pixel values -> keep (T, N) bool."""
    if patches.dim() != 3:
        raise ValueError(f"patches must be (frames, patches, values), got shape {tuple(patches.shape)}")
    keep = torch.ones(patches.shape[:2], dtype=torch.bool, device=patches.device)
    if patches.shape[0] > 1:
        change = (patches[1:].float() - patches[:-1].float()).abs().mean(dim=-1)
        keep[1:] = change > threshold
    return keep
