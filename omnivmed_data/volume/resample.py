"""Foreground crop and resizing of (D, H, W) float32 arrays, in numpy only.

The resizes reproduce ``torch.nn.functional.interpolate`` (which MONAI's
``Resize`` calls) without needing torch on the data side:

* ``area`` is adaptive average pooling: output cell i averages input cells
  floor(i*n/m) .. ceil((i+1)*n/m) - 1 on every axis;
* ``trilinear`` uses half-pixel centres (align_corners=False) with the source
  index clamped at 0, like torch.

Both are separable, so each is three small matrix products; the result
differs from torch's only by float32 rounding order.
"""

from __future__ import annotations

import math

import numpy as np

RESIZE_MODES = ("area", "trilinear")


def foreground_box(array: np.ndarray) -> tuple[slice, slice, slice] | None:
    """Bounding box of voxels > 0 (MONAI CropForeground's default select_fn, margin 0)."""
    mask = array > 0
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        if hits.size == 0:
            return None
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def _area_weights(n_in: int, n_out: int) -> np.ndarray:
    weights = np.zeros((n_out, n_in), dtype=np.float32)
    for i in range(n_out):
        start = (i * n_in) // n_out
        end = math.ceil((i + 1) * n_in / n_out)
        weights[i, start:end] = 1.0 / (end - start)
    return weights


def _linear_weights(n_in: int, n_out: int) -> np.ndarray:
    weights = np.zeros((n_out, n_in), dtype=np.float32)
    scale = n_in / n_out
    for i in range(n_out):
        src = max((i + 0.5) * scale - 0.5, 0.0)
        i0 = min(int(math.floor(src)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        frac = src - i0
        weights[i, i0] += 1.0 - frac
        weights[i, i1] += frac
    return weights


def resize(array: np.ndarray, shape: tuple[int, int, int], mode: str = "area") -> np.ndarray:
    """Resize a (D, H, W) float32 array to ``shape``; returns the input when the shape already fits."""
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode {mode!r} is not one of {', '.join(RESIZE_MODES)}")
    if tuple(array.shape) == tuple(shape):
        return array
    make = _area_weights if mode == "area" else _linear_weights
    out = array
    d, h, w = shape
    if out.shape[2] != w:
        out = out @ make(out.shape[2], w).T  # (D, H, w)
    if out.shape[1] != h:
        out = make(out.shape[1], h) @ out  # (D, h, w), broadcast over D
    if out.shape[0] != d:
        out = np.tensordot(make(out.shape[0], d), out, axes=(1, 0))
    return np.ascontiguousarray(out, dtype=np.float32)
