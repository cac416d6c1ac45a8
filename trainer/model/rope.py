"""3D rotary position embeddings over (t, h, w) for the vision encoder.

The third axis ``t`` is the slice index of a volume, the frame index of a
video and 0 for a 2D image, so one encoder serves all three. Each head's
``head_dim / 2`` rotary pairs are split between the axes (``split``: pairs
for t, h, w); so400m's head_dim 72 gives 36 pairs, 12 per axis, while 64
does not split by three, hence the split is explicit. Angles are computed
in fp32 whatever the model dtype: bf16 positions lose whole integers past 256.
"""

from __future__ import annotations

import math

import torch


def default_split(head_dim: int) -> tuple[int, int, int]:
    """Pairs for (t, h, w): spatial axes get ceil(pairs / 3) each, time the rest."""
    if head_dim % 2:
        raise ValueError(f"head_dim {head_dim} is odd: rotary embeddings rotate pairs")
    pairs = head_dim // 2
    spatial = math.ceil(pairs / 3)
    return (pairs - 2 * spatial, spatial, spatial)


def check_split(split: tuple[int, int, int], head_dim: int) -> None:
    if len(split) != 3 or any(n < 0 for n in split) or sum(split) != head_dim // 2:
        raise ValueError(f"rope split {tuple(split)} must be 3 non-negative pair counts summing to head_dim/2 = {head_dim // 2}")


class Rotary3D(torch.nn.Module):
    """cos/sin tables for packed tokens with integer positions (t, h, w)."""

    def __init__(self, head_dim: int, split: tuple[int, int, int] | None = None, theta: float = 10000.0):
        super().__init__()
        split = tuple(split) if split is not None else default_split(head_dim)
        check_split(split, head_dim)
        self.head_dim = head_dim
        self.split = split
        # One frequency spectrum per axis, so each axis covers the full range of wavelengths.
        inv = [theta ** (-torch.arange(n, dtype=torch.float64) / max(n, 1)) for n in split]
        self.register_buffer("inv_freq", torch.cat(inv).float(), persistent=False)
        self.register_buffer("axis_of_pair", torch.cat([torch.full((n,), a) for a, n in enumerate(split)]), persistent=False)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions (L, 3) int -> cos, sin (L, head_dim) in fp32."""
        pos = positions.to(torch.float32)[:, self.axis_of_pair]  # (L, pairs): each pair reads its axis
        angles = pos * self.inv_freq
        angles = torch.cat([angles, angles], dim=-1)
        return angles.cos(), angles.sin()


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (L, heads, head_dim) in fp32 and return it in x's dtype."""
    xf = x.float()
    out = xf * cos[:, None, :] + _rotate_half(xf) * sin[:, None, :]
    return out.to(x.dtype)
