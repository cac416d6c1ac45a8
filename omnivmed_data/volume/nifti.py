"""NIfTI volumes (.nii, .nii.gz) through SimpleITK, reoriented to the canonical frame."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from omnivmed.data.volume.core import Volume, VolumeError, VolumeLimits, itk_message, plane_of, to_canonical

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


_NIFTI1 = 348
_NIFTI2 = 540
_NIFTI1_MAGIC = (b"n+1\x00", b"ni1\x00")
_NIFTI2_MAGIC = (b"n+2\x00", b"ni2\x00")


def _expected_bytes(header: bytes) -> int | None:
    """vox_offset + voxel bytes from a NIfTI-1/2 header; None when the header is not one we can size."""
    for order in "<>":
        (size,) = struct.unpack(order + "i", header[:4])
        if size == _NIFTI1 and len(header) >= _NIFTI1:
            dims = struct.unpack(order + "8h", header[40:56])
            (bitpix,) = struct.unpack(order + "h", header[72:74])
            (offset,) = struct.unpack(order + "f", header[108:112])
        elif size == _NIFTI2 and len(header) >= _NIFTI2:
            (bitpix,) = struct.unpack(order + "h", header[14:16])
            dims = struct.unpack(order + "8q", header[16:80])
            (offset,) = struct.unpack(order + "q", header[168:176])
        else:
            continue
        n = max(1, min(int(dims[0]), 7))
        return int(offset) + int(np.prod([max(1, int(d)) for d in dims[1 : n + 1]], dtype=np.int64)) * max(bitpix, 8) // 8
    return None


def check_complete(path: Path) -> None:
    """Reject a damaged header or a truncated file, which ITK would read without complaint.

    ITK pads a short .nii.gz, accepts a wrong sizeof_hdr, and reads a file with a
    broken magic as Analyze, ignoring its orientation.

    A .gz is decompressed once as a stream (gzip checks its length and CRC); either
    way the payload must hold every voxel the header promises.
    """
    try:
        if path.name.lower().endswith(".gz"):
            with gzip.open(path, "rb") as f:
                header = f.read(_NIFTI2)
                total = len(header)
                while chunk := f.read(1 << 22):
                    total += len(chunk)
        else:
            with open(path, "rb") as f:
                header = f.read(_NIFTI2)
            total = path.stat().st_size
    except (EOFError, OSError, zlib.error) as err:
        raise VolumeError("truncated", str(path), f"compressed data is cut short or corrupt ({err})") from None
    expected = _expected_bytes(header)
    if expected is None:
        raise VolumeError("corrupt_header", str(path), "sizeof_hdr is neither 348 (NIfTI-1) nor 540 (NIfTI-2)")
    if header[344:348] not in _NIFTI1_MAGIC and header[4:8] not in _NIFTI2_MAGIC:
        # ITK would read it as old Analyze and drop the orientation (a RAS volume comes out flipped).
        raise VolumeError("corrupt_header", str(path), "NIfTI magic string is missing or damaged")
    if total < expected:
        raise VolumeError("truncated", str(path), f"holds {total:,} bytes; the header promises {expected:,}")


def read_nifti(path: Path, limits: VolumeLimits = VolumeLimits()) -> Volume:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.SetImageIO("NiftiImageIO")
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise VolumeError("corrupt_header", str(path), f"not a readable NIfTI header ({itk_message(err, path)})") from None
    size = reader.GetSize()
    if len(size) == 4 and size[3] == 1:
        size = size[:3]
    if len(size) != 3:
        raise VolumeError("not_3d", str(path), f"image has size {reader.GetSize()}; a volume needs three axes")
    voxels = int(np.prod(size))
    if voxels > limits.max_voxels:
        raise VolumeError("too_large", str(path), f"{size[2]}x{size[1]}x{size[0]} = {voxels:,} voxels exceeds the limit of {limits.max_voxels:,}")
    check_complete(path)
    reader.SetOutputPixelType(sitk.sitkFloat32)  # scl_slope/scl_inter applied in float
    try:
        image = reader.Execute()
    except RuntimeError as err:
        raise VolumeError("unreadable_nifti", str(path), f"voxel data cannot be read ({itk_message(err, path)})") from None
    if image.GetDimension() == 4:
        image = image[:, :, :, 0]
    source_direction = image.GetDirection()
    image = to_canonical(image)
    array = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
    sx, sy, sz = image.GetSpacing()
    return Volume(
        voxels=array,
        kind="nifti",
        spacing_mm=(sz, sy, sx),
        direction=tuple(image.GetDirection()),
        original_shape=tuple(int(n) for n in array.shape),
        acquisition_plane=plane_of(source_direction),
    )
