"""Intensity and geometry recipes that turn a read volume into [0, 1] slices.

Named presets (``PRESETS``):

* CT windows, as (level, width) in HU: soft tissue (40, 400), lung
  (-600, 1500), bone (400, 1800), brain (40, 80), mediastinum (50, 350),
  liver (30, 150); values are clipped to the window and scaled to [0, 1];
* ``ct-hu-minmax``: the raw HU range of the volume scaled to [0, 1], no clip
  (stored at 16 bits so the HU resolution survives);
* ``mr-percentile``: clip to the 0.5th..99.5th percentile, then scale (MR has
  no absolute units and a few very bright voxels);
* ``minmax``: scale the volume's own range to [0, 1];
* ``m3d``: M3D's preparation (``m3d_cap_data_prepare.py``): min-max, crop to
  the voxels above the minimum, resize to 32x256x256 with MONAI
  ``Resize(mode="bilinear")``, which MONAI runs as trilinear on a volume
  (the script at BAAI-DCAI/M3D commit b24a750, as SOURCES.md describes it);
* ``m3d-area``: the same with MONAI ``Resize``'s default mode, area averaging
  (the script's other published version, commit ac364a9, which has no mode);
  use it for .npy files prepared with that version;
* ``auto``: ct-soft-tissue for CT, mr-percentile for MR, minmax otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from omnivmed.data.volume.core import Volume, VolumeError
from omnivmed.data.volume.resample import RESIZE_MODES, foreground_box, resize

CT_WINDOWS: dict[str, tuple[float, float]] = {
    "soft-tissue": (40.0, 400.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
    "mediastinum": (50.0, 350.0),
    "liver": (30.0, 150.0),
}
M3D_SHAPE = (32, 256, 256)


@dataclass(frozen=True)
class VolumeRecipe:
    name: str
    intensity: str  # "window", "minmax" or "percentile"
    window: tuple[float, float] | None = None  # (level, width) in HU
    percentiles: tuple[float, float] | None = None
    crop_foreground: bool = False
    shape: tuple[int, int, int] | None = None  # (D, H, W) after resizing; None keeps the native grid
    resize_mode: str = "area"
    bit_depth: int = 8  # of the stored PNG slices

    def describe(self) -> str:
        if self.intensity == "window":
            level, width = self.window
            what = f"window L{level:g} W{width:g}"
        elif self.intensity == "percentile":
            what = f"clip p{self.percentiles[0]:g}-p{self.percentiles[1]:g}, min-max"
        else:
            what = "min-max"
        if self.crop_foreground:
            what += ", crop foreground"
        if self.shape:
            what += f", resize {'x'.join(map(str, self.shape))} {self.resize_mode}"
        return f"{what}, {self.bit_depth}-bit PNG"


PRESETS: dict[str, VolumeRecipe] = {
    **{f"ct-{name}": VolumeRecipe(f"ct-{name}", "window", window=w) for name, w in CT_WINDOWS.items()},
    "ct-hu-minmax": VolumeRecipe("ct-hu-minmax", "minmax", bit_depth=16),
    "mr-percentile": VolumeRecipe("mr-percentile", "percentile", percentiles=(0.5, 99.5)),
    "minmax": VolumeRecipe("minmax", "minmax"),
    "m3d": VolumeRecipe("m3d", "minmax", crop_foreground=True, shape=M3D_SHAPE, resize_mode="trilinear"),
    "m3d-area": VolumeRecipe("m3d-area", "minmax", crop_foreground=True, shape=M3D_SHAPE, resize_mode="area"),
}
AUTO = "auto"


def resolve(recipe_or_auto: VolumeRecipe | str, volume: Volume) -> VolumeRecipe:
    """``auto`` picks by the DICOM modality; a recipe is returned as it is."""
    if isinstance(recipe_or_auto, VolumeRecipe):
        return recipe_or_auto
    if volume.modality == "CT":
        return PRESETS["ct-soft-tissue"]
    if volume.modality == "MR":
        return PRESETS["mr-percentile"]
    return PRESETS["minmax"]


def parse_shape(text: str) -> tuple[int, int, int] | None:
    """'32x256x256' -> (32, 256, 256); 'native' -> None."""
    if text.strip().lower() in ("", "native", "none"):
        return None
    try:
        shape = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape {text!r} is not DxHxW with three positive integers (or 'native')")
    return shape


def recipe_from_options(
    preset: str, shape: str | None = None, resize_mode: str | None = None, bit_depth: int | None = None
) -> VolumeRecipe | str:
    """A named preset with optional overrides; ``auto`` stays a string resolved per volume."""
    if preset == AUTO:
        if shape or resize_mode or bit_depth:
            raise ValueError("preset 'auto' takes no shape/resize/bit-depth overrides; name a preset")
        return AUTO
    if preset not in PRESETS:
        raise ValueError(f"unknown volume preset {preset!r}; known: {', '.join([*PRESETS, AUTO])}")
    recipe = PRESETS[preset]
    if shape is not None:
        recipe = replace(recipe, shape=parse_shape(shape))
    if resize_mode is not None:
        if resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize mode {resize_mode!r} is not one of {', '.join(RESIZE_MODES)}")
        recipe = replace(recipe, resize_mode=resize_mode)
    if bit_depth is not None:
        if bit_depth not in (8, 16):
            raise ValueError(f"bit depth {bit_depth} is not 8 or 16")
        recipe = replace(recipe, bit_depth=bit_depth)
    return recipe


def _intensity(recipe: VolumeRecipe, voxels: np.ndarray) -> np.ndarray:
    """A new float32 array (``voxels`` is never written). In-place steps: the same operations
    as the plain expressions, so the same bits, without a full-size temporary per step."""
    if recipe.intensity == "window":
        level, width = recipe.window
        low = level - width / 2
        out = np.clip(voxels, low, low + width)
        out -= low
        out /= width
        return out.astype(np.float32, copy=False)
    if recipe.intensity == "percentile":
        low, high = np.percentile(voxels, recipe.percentiles)
        if high > low:
            out = np.clip(voxels, low, high)
            out -= low
            out /= high - low
            return out.astype(np.float32, copy=False)
    # min-max exactly as M3D writes it: shift to 0, divide by max(max, 1e-8).
    shifted = voxels - voxels.min()
    shifted /= np.clip(shifted.max(), 1e-8, None)
    return shifted.astype(np.float32, copy=False)


@dataclass(frozen=True)
class Normalised:
    voxels: np.ndarray  # float32 (D, H, W) in [0, 1]
    spacing_mm: tuple[float, float, float] | None
    slice_indices: tuple[int, ...] | None  # source slice of every output slice; None when resampled in depth
    recipe: VolumeRecipe


def apply_recipe(recipe: VolumeRecipe, volume: Volume, source: str = "<volume>") -> Normalised:
    voxels = _intensity(recipe, volume.voxels)
    box = (slice(0, voxels.shape[0]), slice(0, voxels.shape[1]), slice(0, voxels.shape[2]))
    if recipe.crop_foreground:
        found = foreground_box(voxels)
        if found is None:
            raise VolumeError("empty_volume", source, "no voxel above the minimum: a constant volume has no foreground")
        box = found
        voxels = voxels[box]
    extent = voxels.shape
    indices = tuple(range(box[0].start, box[0].stop))
    if recipe.shape is not None:
        voxels = resize(np.ascontiguousarray(voxels), recipe.shape, recipe.resize_mode)
        if recipe.shape[0] != extent[0]:
            indices = None
    spacing = None
    if volume.spacing_mm is not None:
        spacing = tuple(float(s) * n_in / n_out for s, n_in, n_out in zip(volume.spacing_mm, extent, voxels.shape))
    # Every step above made a new array (never volume.voxels), so this clip may work in place.
    return Normalised(np.clip(voxels, 0.0, 1.0, out=voxels), spacing, indices, recipe)
