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

Gzipped files (``.dcm.gz``) and the frames of enhanced multi-frame files
(geometry in the functional groups, see :mod:`dicom_slices`) are decoded with
pydicom instead. A series whose positions all repeat is 4D: rejected as
``four_dimensional`` with its counts, or split into one series per b-value /
temporal position when asked (``four_d="split"``).
"""

from __future__ import annotations

import os
import warnings
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.uid import UID

from omnivmed.data.volume.threads import volume_threads
from omnivmed.data.volume.core import (
    CANONICAL_ORIENTATION,
    FOUR_D_MODES,
    Volume,
    VolumeError,
    VolumeLimits,
    is_canonical,
    itk_message,
    plane_of,
)
from omnivmed.data.volume.dicom_files import dicom_files_in, is_dicom_file, is_gzipped, read_dataset, read_header
from omnivmed.data.volume.dicom_privacy import allowed_fields, identifiers_of
from omnivmed.data.volume.dicom_slices import POSITION_TOLERANCE, DicomSlice, four_d_split, is_multiframe, slices_of

__all__ = ["FOUR_D_MODES", "DicomSeries", "dicom_files_in", "is_dicom_file", "read_dicom_series", "series_in_folder"]

# Slices whose spacing differs from the median by more than this fraction mean
# a missing slice or a second acquisition in the series: not one volume.
SPACING_TOLERANCE = 0.1
_ORIENTATION_TOLERANCE = 1e-3
_DEFER_BYTES = 1024
# Files decoded at once (volume_threads()): JPEG 2000 decoding dominates a series read and GDCM runs without the GIL.
_PIXEL_DATA = 0x7FE00010
_UNDEFINED_LENGTH = 0xFFFFFFFF


@dataclass(frozen=True)
class DicomSeries:
    """Slices of one series (or of one volume of a split 4D series) as found on disk, not yet ordered or checked."""

    folder: Path
    slices: tuple[DicomSlice, ...]
    index: int  # 1-based position of this series within its folder (ordered by SeriesNumber)
    of: int  # how many series the folder holds
    label: str = ""  # which volume of a split 4D series, e.g. "b-value 1000"

    @property
    def files(self) -> tuple[Path, ...]:
        return tuple(dict.fromkeys(s.path for s in self.slices))

    @property
    def headers(self) -> tuple[pydicom.Dataset, ...]:
        """One header per file (read once, without pixel data)."""
        seen: dict[Path, pydicom.Dataset] = {}
        for s in self.slices:
            seen.setdefault(s.path, s.header)
        return tuple(seen.values())


def _read_header(path: Path) -> pydicom.Dataset:
    return read_header(path)


def series_in_folder(folder: Path, four_d: str = "reject") -> list[DicomSeries]:
    """Group a folder's DICOM files into series (by SeriesInstanceUID, or the folder when blank).

    An enhanced multi-frame file is a series of its own (its frames are its slices). With
    ``four_d="split"`` a 4D series becomes one series per b-value / temporal position.
    """
    if four_d not in FOUR_D_MODES:
        raise ValueError(f"four_d must be one of {', '.join(FOUR_D_MODES)}, not {four_d!r}")
    files = dicom_files_in(folder)
    if not files:
        raise VolumeError("empty_folder", str(folder), "no DICOM files")
    # An unreadable header rejects the folder, naming the file: a series with a hole is not a volume.
    groups: dict[tuple[str, str], list[DicomSlice]] = defaultdict(list)
    numbers: dict[tuple[str, str], float] = {}
    for path in files:
        ds = _read_header(path)
        if not _is_image(ds, path):
            continue  # a DICOMDIR, a structured report, a presentation state: no slice to read
        uid = str(ds.get("SeriesInstanceUID", "") or "").strip()
        key = (uid, path.name if is_multiframe(ds) else "")
        groups[key].extend(slices_of(path, ds))
        numbers.setdefault(key, _series_number(ds))
    # Order series by SeriesNumber, then by their first file name: never by UID, which is
    # random and must not leak into output through ordering either.
    if not groups:
        raise VolumeError("empty_folder", str(folder), "DICOM files, but no images among them")
    keys = sorted(groups, key=lambda k: (numbers[k], groups[k][0].path.name))
    parts: list[tuple[tuple[DicomSlice, ...], str]] = []
    for key in keys:
        slices = groups[key]
        split = _four_d(slices) if four_d == "split" else None
        if split is None or split.key is None:
            parts.append((tuple(slices), ""))
        else:
            parts += [(tuple(slices[i] for i in idx), f"{split.key} {value}") for value, idx in split.groups]
    return [DicomSeries(folder, s, i + 1, len(parts), label) for i, (s, label) in enumerate(parts)]


def _is_image(ds: pydicom.Dataset, path: Path) -> bool:
    """Whether a header is an image's; VolumeError ("truncated", naming the file) for an image header
    cut short before its size, which would otherwise split off as a series of its own and leave
    the rest to be read as a volume with a hole."""
    if "Rows" in ds and "Columns" in ds:
        return True
    sop = str(ds.get("SOPClassUID", "") or getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", "") or "")
    known = bool(sop) and UID(sop).name != sop
    if known and "Image Storage" not in UID(sop).name:
        return False
    raise VolumeError("truncated", str(path), "the header ends before Rows/Columns (file cut short?)")


def _four_d(slices: list[DicomSlice]):
    """The 4D reading of a group, or None (also when its geometry is broken: reading rejects it then)."""
    try:
        orientation = slices[0].orientation()
        normal = np.cross(orientation[:3], orientation[3:])
        along = np.asarray([float(np.dot(s.position(), normal)) for s in slices])
    except VolumeError:
        return None
    return four_d_split(slices, along)


def _series_number(ds: pydicom.Dataset) -> float:
    try:
        return float(ds.get("SeriesNumber"))
    except (TypeError, ValueError):
        return float("inf")


def _image_size(s: DicomSlice) -> tuple[int, int]:
    try:
        rows, cols = int(s.header.get("Rows", 0) or 0), int(s.header.get("Columns", 0) or 0)
    except (TypeError, ValueError):
        rows = cols = 0
    if rows < 1 or cols < 1:
        raise VolumeError(
            "truncated", str(s.path), "the header holds no Rows/Columns (file cut short, or not an image)"
        )
    return rows, cols


def _ordered(series: DicomSeries):
    """Check geometry and return (slices, spacing_z, direction, origin) ordered along the normal."""
    slices = list(series.slices)
    sizes = {_image_size(s) for s in slices}
    if len(sizes) > 1:
        raise VolumeError(
            "mixed_slice_sizes",
            str(series.folder),
            f"slices of different sizes in one series: {', '.join(f'{r}x{c}' for r, c in sorted(sizes))}",
        )
    orientations = [s.orientation() for s in slices]
    positions = [s.position() for s in slices]
    if not all(np.allclose(o, orientations[0], atol=_ORIENTATION_TOLERANCE) for o in orientations):
        raise VolumeError("mixed_orientation", str(series.folder), "slices with different ImageOrientationPatient")
    row, col = orientations[0][:3], orientations[0][3:]
    normal = np.cross(row, col)
    along = np.asarray([float(np.dot(p, normal)) for p in positions])
    order = np.argsort(along, kind="stable")
    if len(along) < 2:
        raise VolumeError("too_few_slices", str(slices[0].path), "a series needs at least 2 slices to be a volume")
    steps = np.diff(along[order])
    if np.any(steps < POSITION_TOLERANCE):
        four_d = four_d_split(slices, along)
        if four_d is not None:
            hint = "; build with -o four_d=split for one volume each" if four_d.key else ""
            raise VolumeError("four_dimensional", str(series.folder), four_d.describe() + hint)
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
    return [slices[i] for i in order], spacing_z, direction, positions[order[0]]


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


def _pixels_with_sitk(slices: list[DicomSlice]) -> np.ndarray:
    """(D, H, W) float32 through GDCM, which applies slope/intercept; single-frame plain files only.

    One reader per file, a few files at a time (SimpleITK releases the GIL while GDCM decodes,
    and JPEG 2000 decoding is most of a series' read), each slice copied once into the result.
    The same pixels as one ImageSeriesReader over the files (tested), which decodes one by one.
    """
    files = [s.path for s in slices]
    for s in slices:
        check_pixel_length(s.header, s.path)
    rows, cols = _image_size(slices[0])
    out = np.empty((len(files), rows, cols), dtype=np.float32)

    def decode(k: int) -> None:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(files[k]))
        reader.SetImageIO("GDCMImageIO")
        reader.SetOutputPixelType(sitk.sitkFloat32)  # GDCM applies slope/intercept into float
        try:
            image = reader.Execute()
        except RuntimeError as err:
            raise _name_broken_file(files, itk_message(err, *files)) from None
        size = image.GetSize()
        if size[:2] != (cols, rows) or (len(size) == 3 and size[2] != 1):
            raise VolumeError("unreadable_dicom", str(files[k]), f"decoded size {size} != header {(cols, rows)}")
        out[k] = sitk.GetArrayViewFromImage(image).reshape(rows, cols)  # copied while the image lives

    threads = min(volume_threads(), len(files))
    if threads <= 1:
        for k in range(len(files)):
            decode(k)
    else:
        with ThreadPoolExecutor(threads, thread_name_prefix="dicom-decode") as pool:
            list(pool.map(decode, range(len(files))))  # re-raises the first failure in file order
    return out


def _pixels_with_pydicom(slices: list[DicomSlice]) -> np.ndarray:
    """(D, H, W) float32 decoded by pydicom, rescaled per slice: gzipped files and multi-frame frames."""
    rows, cols = _image_size(slices[0])
    out = np.empty((len(slices), rows, cols), dtype=np.float32)
    decoded: dict[Path, np.ndarray] = {}
    for k, s in enumerate(slices):
        if s.path not in decoded:
            decoded.clear()  # slices of one file are adjacent only for multi-frame files; keep one
            decoded[s.path] = _decode(s.path)
        array = decoded[s.path]
        frames = int(s.header.get("NumberOfFrames", 1) or 1) if s.frame is not None else 1
        expected = (frames, rows, cols) if s.frame is not None else (rows, cols)
        if array.shape != expected:
            raise VolumeError("unreadable_dicom", str(s.path), f"decoded shape {array.shape} != header {expected}")
        frame = array[s.frame] if s.frame is not None else array
        slope, intercept = s.rescale()
        out[k] = frame.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    return out


def _decode(path: Path) -> np.ndarray:
    ds = read_dataset(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ds.pixel_array
    except Exception as err:  # noqa: BLE001 - any decoder failure names this file
        first = (str(err).splitlines() or [""])[0]
        reason = "truncated" if "length" in first.lower() or "no pixel data" in first.lower() else "unreadable_dicom"
        raise VolumeError(reason, str(path), f"pixel data cannot be decoded ({type(err).__name__}: {first})") from None


def read_dicom_series(series: DicomSeries, limits: VolumeLimits = VolumeLimits()) -> Volume:
    slices, spacing_z, direction, origin = _ordered(series)
    first = slices[0]
    rows, cols = _image_size(first)
    voxels = rows * cols * len(slices)
    if voxels > limits.max_voxels:
        raise VolumeError(
            "too_large", str(series.folder), f"{len(slices)}x{rows}x{cols} = {voxels:,} voxels exceeds the limit of {limits.max_voxels:,}"
        )
    row_spacing, col_spacing = first.pixel_spacing()
    if any(s.frame is not None or is_gzipped(s.path) for s in slices):
        array = _pixels_with_pydicom(slices)
    else:
        array = _pixels_with_sitk(slices)
    # Geometry from the checked headers, not from a reader's guess.
    source_direction = tuple(float(v) for v in direction.flatten())
    sx, sy, sz = col_spacing, row_spacing, spacing_z
    canonical_direction = source_direction
    if not is_canonical(source_direction):  # an axial LPS series (the usual case) needs no copy
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((col_spacing, row_spacing, spacing_z))
        image.SetDirection(source_direction)
        image.SetOrigin(tuple(float(v) for v in origin))
        image = sitk.DICOMOrient(image, CANONICAL_ORIENTATION)
        array = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
        sx, sy, sz = image.GetSpacing()
        canonical_direction = image.GetDirection()
    headers = list(series.headers)
    identifiers = identifiers_of(headers)
    header = allowed_fields(first.header, identifiers)
    if series.label:
        header += (("four_d_volume", series.label),)
    return Volume(
        voxels=array,
        kind="dicom",
        spacing_mm=(float(sz), float(sy), float(sx)),
        direction=tuple(canonical_direction),
        original_shape=tuple(int(n) for n in array.shape),
        modality=str(first.header.get("Modality", "") or "").strip().upper() or None,
        acquisition_plane=plane_of(source_direction),
        header=header,
    )
