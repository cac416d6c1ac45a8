"""Foreground crop and resizing of (D, H, W) float32 arrays, in numpy only.

The resizes reproduce ``torch.nn.functional.interpolate`` (which MONAI's
``Resize`` calls) without needing torch on the data side:

* ``area`` is adaptive average pooling: output cell i averages input cells
  floor(i*n/m) .. ceil((i+1)*n/m) - 1 on every axis;
* ``trilinear`` uses half-pixel centres (align_corners=False) with the source
  index clamped at 0, like torch.

Both are separable and run axis by axis with element-wise numpy only:
gathers and weighted sums for trilinear, window means for area. No BLAS
matrix product on purpose: its result depends on the BLAS thread count in
the last bit, which would change PNG bytes and sample ids from one machine
to the next (and its thread pool fights SimpleITK's on small machines).
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


def _linear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every output index: the two input neighbours and the weight of the second."""
    scale = n_in / n_out
    src = np.maximum((np.arange(n_out) + 0.5) * scale - 0.5, 0.0)
    lower = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    upper = np.minimum(lower + 1, n_in - 1)
    return lower, upper, (src - lower).astype(np.float32)


def _resize_axis(array: np.ndarray, axis: int, n_out: int, mode: str) -> np.ndarray:
    n_in = array.shape[axis]
    if n_in == n_out:
        return array
    if mode == "trilinear":
        lower, upper, frac = _linear_taps(n_in, n_out)
        shape = [1, 1, 1]
        shape[axis] = n_out
        frac = frac.reshape(shape)
        # lower * (1 - frac) + upper * frac, in place: the same operations in the same order
        # (the same bits) as the plain expression, without its three full-size temporaries.
        out = np.take(array, lower, axis=axis)
        out *= np.float32(1) - frac
        high = np.take(array, upper, axis=axis)
        high *= frac
        out += high
        return out
    out_shape = list(array.shape)
    out_shape[axis] = n_out
    out = np.empty(out_shape, dtype=np.float32)
    window = [slice(None)] * 3
    target = [slice(None)] * 3
    for i in range(n_out):
        window[axis] = slice((i * n_in) // n_out, math.ceil((i + 1) * n_in / n_out))
        target[axis] = slice(i, i + 1)
        out[tuple(target)] = array[tuple(window)].mean(axis=axis, keepdims=True, dtype=np.float32)
    return out


def resize(array: np.ndarray, shape: tuple[int, int, int], mode: str = "area") -> np.ndarray:
    """Resize a (D, H, W) float32 array to ``shape``; returns the input when the shape already fits."""
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode {mode!r} is not one of {', '.join(RESIZE_MODES)}")
    if tuple(array.shape) == tuple(shape):
        return array
    out = array.astype(np.float32, copy=False)
    # Width first, then height, then depth: the order torch's separable kernels use.
    for axis in (2, 1, 0):
        out = _resize_axis(out, axis, shape[axis], mode)
    return np.ascontiguousarray(out, dtype=np.float32)
