"""DICOM series: find the files, group them, order them by position, read them.

Headers are read with pydicom (grouping, ordering, checks, the allow-listed
provenance); pixels with SimpleITK/GDCM, which decodes the compressed transfer
syntaxes (JPEG 2000 lossless in the TotalSegmentator sample) and applies
RescaleSlope/RescaleIntercept. When SimpleITK fails, each file is decoded
with pydicom to name the one that is broken.

Grouping is by SeriesInstanceUID when the files carry one; de-identified
exports often blank it (the sample series does), and then a folder is a
series. Slices are ordered by their position along the slice normal
(ImagePositionPatient . (row x column)), never by file name.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.errors import InvalidDicomError

from omnivmed.data.volume.core import CANONICAL_ORIENTATION, Volume, VolumeError, VolumeLimits, itk_message, plane_of
from omnivmed.data.volume.dicom_privacy import allowed_fields, identifiers_of

# Slices whose spacing differs from the median by more than this fraction mean
# a missing slice or a second acquisition in the series: not one volume.
SPACING_TOLERANCE = 0.1
_ORIENTATION_TOLERANCE = 1e-3
_DEFER_BYTES = 1024
_PIXEL_DATA = 0x7FE00010
_UNDEFINED_LENGTH = 0xFFFFFFFF


@dataclass(frozen=True)
class DicomSeries:
    """Files of one series as found on disk, not yet ordered or checked."""

    folder: Path
    files: tuple[Path, ...]
    headers: tuple[pydicom.Dataset, ...]  # read once, without pixel data
    index: int  # 1-based position of this series within its folder (ordered by SeriesNumber)
    of: int  # how many series the folder holds


def is_dicom_file(path: Path) -> bool:
    """Part 10 files carry 'DICM' at byte 128; bare '.dcm' files without a preamble are accepted too."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM" or path.suffix.lower() == ".dcm"


def dicom_files_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and is_dicom_file(p))


def _read_header(path: Path) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError) as err:
        raise VolumeError("unreadable_dicom", str(path), f"not a readable DICOM header ({err})") from None


def series_in_folder(folder: Path) -> list[DicomSeries]:
    """Group a folder's DICOM files into series (by SeriesInstanceUID, or the folder when blank)."""
    files = dicom_files_in(folder)
    if not files:
        raise VolumeError("empty_folder", str(folder), "no DICOM files")
    # An unreadable header rejects the folder, naming the file: a series with a hole is not a volume.
    groups: dict[str, list[tuple[Path, pydicom.Dataset]]] = defaultdict(list)
    numbers: dict[str, float] = {}
    for path in files:
        ds = _read_header(path)
        uid = str(ds.get("SeriesInstanceUID", "") or "").strip()
        groups[uid].append((path, ds))
        numbers.setdefault(uid, _series_number(ds))
    # Order series by SeriesNumber, then by their first file name: never by UID, which is
    # random and must not leak into output through ordering either.
    keys = sorted(groups, key=lambda k: (numbers[k], groups[k][0][0].name))
    return [
        DicomSeries(folder, tuple(p for p, _ in groups[k]), tuple(h for _, h in groups[k]), i + 1, len(keys))
        for i, k in enumerate(keys)
    ]


def _series_number(ds: pydicom.Dataset) -> float:
    try:
        return float(ds.get("SeriesNumber"))
    except (TypeError, ValueError):
        return float("inf")


def _float_list(ds: pydicom.Dataset, keyword: str, n: int, path: Path) -> np.ndarray:
    value = ds.get(keyword)
    try:
        values = np.asarray([float(v) for v in value], dtype=float)
    except (TypeError, ValueError):
        values = np.empty(0)
    if values.shape != (n,):
        raise VolumeError("missing_positions", str(path), f"{keyword} is missing or malformed")
    return values


def _ordered(series: DicomSeries, headers: list[pydicom.Dataset]):
    """Check geometry and return (files, headers, spacing_z, direction, origin) ordered along the normal."""
    first_path = series.files[0]
    sizes = {(int(h.get("Rows", 0) or 0), int(h.get("Columns", 0) or 0)) for h in headers}
    if len(sizes) > 1:
        raise VolumeError(
            "mixed_slice_sizes",
            str(series.folder),
            f"slices of different sizes in one series: {', '.join(f'{r}x{c}' for r, c in sorted(sizes))}",
        )
    orientations = [_float_list(h, "ImageOrientationPatient", 6, p) for h, p in zip(headers, series.files)]
    positions = [_float_list(h, "ImagePositionPatient", 3, p) for h, p in zip(headers, series.files)]
    if not all(np.allclose(o, orientations[0], atol=_ORIENTATION_TOLERANCE) for o in orientations):
        raise VolumeError("mixed_orientation", str(series.folder), "slices with different ImageOrientationPatient")
    row, col = orientations[0][:3], orientations[0][3:]
    normal = np.cross(row, col)
    along = np.asarray([float(np.dot(p, normal)) for p in positions])
    order = np.argsort(along, kind="stable")
    along = along[order]
    if len(along) < 2:
        raise VolumeError("too_few_slices", str(first_path), "a series needs at least 2 slices to be a volume")
    steps = np.diff(along)
    if np.any(steps < 1e-4):
        raise VolumeError("duplicate_positions", str(series.folder), "two slices share one position")
    spacing_z = float(np.median(steps))
    if np.any(np.abs(steps - spacing_z) > SPACING_TOLERANCE * spacing_z):
        raise VolumeError(
            "uneven_slice_spacing",
            str(series.folder),
            f"slice spacing varies from {steps.min():.3f} to {steps.max():.3f} mm (a slice missing?)",
        )
    # ITK convention: direction columns are the axis directions (x = row, y = column, z = normal).
    direction = np.stack([row, col, normal], axis=1)
    files = [series.files[i] for i in order]
    ordered_headers = [headers[i] for i in order]
    return files, ordered_headers, spacing_z, direction, positions[order[0]]


def _pixel_spacing(ds: pydicom.Dataset, path: Path) -> tuple[float, float]:
    value = ds.get("PixelSpacing")
    try:
        row_spacing, col_spacing = (float(v) for v in value)
    except (TypeError, ValueError):
        raise VolumeError("missing_spacing", str(path), "PixelSpacing is missing or malformed") from None
    return row_spacing, col_spacing


def check_pixel_length(ds: pydicom.Dataset, path: Path) -> None:
    """Native (uncompressed) pixel data must hold every pixel the header promises.

    GDCM reads a short PixelData without complaint and fills the rest of the
    slice with whatever memory held; encapsulated (compressed) data is checked
    by its decoder instead.
    """
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is not None and syntax.is_encapsulated:
        return
    # Read again with the pixels deferred, not skipped: the element's declared length
    # and offset become known without loading it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        deferred = pydicom.dcmread(path, defer_size=_DEFER_BYTES, force=True)
    element = deferred._dict.get(_PIXEL_DATA)
    if element is None:
        raise VolumeError("truncated", str(path), "no PixelData element (file cut short?)")
    length = getattr(element, "length", None)
    if length is None or length == _UNDEFINED_LENGTH:
        return
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    bits = int(ds.get("BitsAllocated", 16) or 16)
    expected = int(ds.Rows) * int(ds.Columns) * frames * samples * bits // 8
    available = min(length, max(0, path.stat().st_size - getattr(element, "value_tell", 0)))
    if available < expected:
        raise VolumeError(
            "truncated", str(path), f"pixel data holds {available:,} bytes; {ds.Rows}x{ds.Columns} at {bits} bits needs {expected:,}"
        )


def _name_broken_file(files: list[Path], fallback: str) -> VolumeError:
    for path in files:
        try:
            with warnings.catch_warnings():  # pydicom warns before it fails; the reject says it once
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path, force=True)
                _ = ds.pixel_array
        except Exception as err:  # noqa: BLE001 - any decoder failure names this file
            return VolumeError("unreadable_dicom", str(path), f"pixel data cannot be decoded ({type(err).__name__}: {err})")
    return VolumeError("unreadable_dicom", str(files[0].parent), f"SimpleITK could not read the series ({fallback})")


def read_dicom_series(series: DicomSeries, limits: VolumeLimits = VolumeLimits()) -> Volume:
    headers = list(series.headers)
    files, headers, spacing_z, direction, origin = _ordered(series, headers)
    first = headers[0]
    rows, cols = int(first.Rows), int(first.Columns)
    voxels = rows * cols * len(files)
    if voxels > limits.max_voxels:
        raise VolumeError(
            "too_large", str(series.folder), f"{len(files)}x{rows}x{cols} = {voxels:,} voxels exceeds the limit of {limits.max_voxels:,}"
        )
    row_spacing, col_spacing = _pixel_spacing(first, files[0])
    for ds, path in zip(headers, files):
        check_pixel_length(ds, path)

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(p) for p in files])
    reader.SetOutputPixelType(sitk.sitkFloat32)  # GDCM applies slope/intercept into float
    try:
        image = reader.Execute()
    except RuntimeError as err:
        raise _name_broken_file(files, itk_message(err, *files)) from None
    if image.GetSize() != (cols, rows, len(files)):
        raise VolumeError("unreadable_dicom", str(series.folder), f"decoded size {image.GetSize()} != headers {(cols, rows, len(files))}")
    # Geometry from the checked headers, not from SimpleITK's guess.
    image.SetSpacing((col_spacing, row_spacing, spacing_z))
    image.SetDirection(tuple(direction.flatten()))
    image.SetOrigin(tuple(float(v) for v in origin))
    source_direction = image.GetDirection()
    image = sitk.DICOMOrient(image, CANONICAL_ORIENTATION)
    array = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
    sx, sy, sz = image.GetSpacing()
    identifiers = identifiers_of(headers)
    return Volume(
        voxels=array,
        kind="dicom",
        spacing_mm=(sz, sy, sx),
        direction=tuple(image.GetDirection()),
        original_shape=tuple(int(n) for n in array.shape),
        modality=str(first.get("Modality", "") or "").strip().upper() or None,
        acquisition_plane=plane_of(source_direction),
        header=allowed_fields(first, identifiers),
    )
