"""NIfTI volumes (.nii, .nii.gz) through SimpleITK, reoriented to the canonical frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from omnivmed.data.volume.core import CANONICAL_ORIENTATION, Volume, VolumeError, VolumeLimits, plane_of

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def _first_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    # ITK messages end with the useful "Description: ..." line.
    return next((line for line in reversed(lines) if "Description" in line or "ERROR" in line), lines[-1] if lines else "")


def read_nifti(path: Path, limits: VolumeLimits = VolumeLimits()) -> Volume:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.SetImageIO("NiftiImageIO")
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise VolumeError("corrupt_header", str(path), f"not a readable NIfTI header ({_first_line(err)})") from None
    size = reader.GetSize()
    if len(size) == 4 and size[3] == 1:
        size = size[:3]
    if len(size) != 3:
        raise VolumeError("not_3d", str(path), f"image has size {reader.GetSize()}; a volume needs three axes")
    voxels = int(np.prod(size))
    if voxels > limits.max_voxels:
        raise VolumeError("too_large", str(path), f"{size[2]}x{size[1]}x{size[0]} = {voxels:,} voxels exceeds the limit of {limits.max_voxels:,}")
    reader.SetOutputPixelType(sitk.sitkFloat32)  # scl_slope/scl_inter applied in float
    try:
        image = reader.Execute()
    except RuntimeError as err:
        raise VolumeError("unreadable_nifti", str(path), f"voxel data cannot be read ({_first_line(err)})") from None
    if image.GetDimension() == 4:
        image = image[:, :, :, 0]
    source_direction = image.GetDirection()
    image = sitk.DICOMOrient(image, CANONICAL_ORIENTATION)
    array = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise VolumeError("non_finite_voxels", str(path), "voxels hold NaN or infinity")
    sx, sy, sz = image.GetSpacing()
    return Volume(
        voxels=array,
        kind="nifti",
        spacing_mm=(sz, sy, sx),
        direction=tuple(image.GetDirection()),
        original_shape=tuple(int(n) for n in array.shape),
        acquisition_plane=plane_of(source_direction),
    )
