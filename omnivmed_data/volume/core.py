"""The in-memory volume every reader returns, and the one error they raise."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# One canonical frame for every reader: DICOM's patient frame, LPS (x toward
# the patient's left, y posterior, z superior). As a (z, y, x) array each
# slice is axial and shows the patient in the radiological convention
# (anterior up, patient's right on the image's left); slice 0 is the most
# inferior.
CANONICAL_ORIENTATION = "LPS"

# What to do with a 4D DICOM series (every position repeated once per b-value / time point):
# reject it as ``four_dimensional``, or split it into one volume per b-value / temporal position.
FOUR_D_MODES = ("reject", "split")


class VolumeError(ValueError):
    """A volume that cannot be used. ``file`` names the culprit (relative or absolute
    as the caller passed it), ``reason`` is a short category for the rejects report."""

    def __init__(self, reason: str, file: str, detail: str):
        super().__init__(f"{file}: {detail}")
        self.reason = reason
        self.file = file
        self.detail = detail


@dataclass(frozen=True)
class VolumeLimits:
    """Checked from headers before any pixel is decoded, so a huge input costs nothing."""

    # 2**28 voxels = 1 GiB as float32: far more than any CT in M3D or TotalSegmentator.
    max_voxels: int = 1 << 28


@dataclass(frozen=True)
class Volume:
    voxels: np.ndarray  # float32 (D, H, W) in the canonical frame; HU for CT, source units otherwise
    kind: str  # "dicom", "nifti", "slices"; builders may add their own (m3d: "npy")
    spacing_mm: tuple[float, float, float] | None  # (z, y, x); None when the source has no geometry
    direction: tuple[float, ...] | None  # row-major 3x3 direction cosines after reorientation
    original_shape: tuple[int, int, int]  # (D, H, W) as read, before any resizing
    modality: str | None = None  # DICOM Modality (CT, MR, PT...) when the header says
    acquisition_plane: str | None = None  # axial / coronal / sagittal / oblique, from the source direction
    header: tuple[tuple[str, str], ...] = ()  # allow-listed DICOM header fields only
    dropped_slices: int = 0  # slice-folder slices left out for not having the common shape

    def __post_init__(self):
        if self.voxels.ndim != 3 or self.voxels.dtype != np.float32:
            raise TypeError(f"voxels must be float32 (D, H, W), got {self.voxels.dtype} {self.voxels.shape}")


def plane_of(direction: tuple[float, ...]) -> str:
    """Acquisition plane from direction cosines: the patient axis the slice normal is closest to."""
    matrix = np.asarray(direction, dtype=float).reshape(3, 3)
    normal = matrix[:, 2]  # ITK stores axis directions as columns
    axis = int(np.argmax(np.abs(normal)))
    if abs(normal[axis]) < 0.8:  # more than ~37 degrees off every patient axis
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]


def is_canonical(direction: tuple[float, ...]) -> bool:
    """True when DICOMOrient to CANONICAL_ORIENTATION would change nothing (an identity permutation)."""
    import SimpleITK as sitk

    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(direction) == CANONICAL_ORIENTATION


def to_canonical(image):
    """``image`` reoriented to CANONICAL_ORIENTATION; returned as it is when already there
    (DICOMOrient would copy every voxel for an identity permutation)."""
    import SimpleITK as sitk

    if is_canonical(image.GetDirection()):
        return image
    return sitk.DICOMOrient(image, CANONICAL_ORIENTATION)


def itk_message(err: Exception, *paths: Path) -> str:
    """The useful line of an ITK exception, without object addresses or absolute paths.

    Rejects reports must be the same bytes on every run and must not carry the user's folders.
    """
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    line = next((x for x in reversed(lines) if "Description" in x or "ERROR" in x), lines[-1] if lines else "")
    line = re.sub(r"\(0x[0-9a-fA-F]+\)", "", line)
    for path in paths:
        line = line.replace(str(path), Path(path).name)
    return line.replace("ITK ERROR: ", "").strip()
