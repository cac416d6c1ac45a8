"""One 2D slice of a DICOM series, wherever it lives, and the 4D series made of such slices.

A slice is a single-frame file, or one frame of an enhanced multi-frame file
(Enhanced CT/MR: one file, geometry in the functional groups). For a frame,
each attribute is looked up in that frame's item of
PerFrameFunctionalGroupsSequence, then in SharedFunctionalGroupsSequence,
then at the top level:

* position: PlanePositionSequence > ImagePositionPatient;
* orientation: PlaneOrientationSequence > ImageOrientationPatient;
* pixel spacing: PixelMeasuresSequence > PixelSpacing (and SpacingBetweenSlices);
* rescale: PixelValueTransformationSequence > RescaleSlope / RescaleIntercept.

A 4D series (DWI b-values, dynamic contrast phases, repeated acquisitions)
has every position repeated, once per volume. :func:`four_d_split` finds the
header field that tells the volumes apart.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom

from omnivmed.data.volume.core import VolumeError

# Positions closer than this along the slice normal are one position (mm).
POSITION_TOLERANCE = 1e-4


@dataclass(frozen=True)
class DicomSlice:
    path: Path
    header: pydicom.Dataset  # the file's header, read without pixel data
    frame: int | None = None  # frame index within an enhanced multi-frame file

    def item(self, sequence: str) -> pydicom.Dataset | None:
        """The first item of a functional group macro for this frame (per-frame, then shared)."""
        if self.frame is None:
            return None
        per_frame = self.header.get("PerFrameFunctionalGroupsSequence")
        if per_frame is not None and self.frame < len(per_frame):
            found = per_frame[self.frame].get(sequence)
            if found:
                return found[0]
        shared = self.header.get("SharedFunctionalGroupsSequence")
        if shared:
            found = shared[0].get(sequence)
            if found:
                return found[0]
        return None

    def get(self, sequence: str, keyword: str):
        item = self.item(sequence)
        if item is not None and item.get(keyword) is not None:
            return item.get(keyword)
        return self.header.get(keyword)

    @property
    def where(self) -> str:
        """The file, and the frame for a multi-frame file (for reject details)."""
        return self.path.name if self.frame is None else f"{self.path.name} frame {self.frame + 1}"

    def floats(self, sequence: str, keyword: str, n: int, reason: str) -> np.ndarray:
        value = self.get(sequence, keyword)
        try:
            values = np.asarray([float(v) for v in value], dtype=float)
        except (TypeError, ValueError):
            values = np.empty(0)
        if values.shape != (n,):
            frame = "" if self.frame is None else f" (frame {self.frame + 1})"
            raise VolumeError(reason, str(self.path), f"{keyword} is missing or malformed{frame}")
        return values

    def orientation(self) -> np.ndarray:
        return self.floats("PlaneOrientationSequence", "ImageOrientationPatient", 6, "missing_positions")

    def position(self) -> np.ndarray:
        return self.floats("PlanePositionSequence", "ImagePositionPatient", 3, "missing_positions")

    def pixel_spacing(self) -> tuple[float, float]:
        row, col = self.floats("PixelMeasuresSequence", "PixelSpacing", 2, "missing_spacing")
        return float(row), float(col)

    def rescale(self) -> tuple[float, float]:
        slope = _number(self.get("PixelValueTransformationSequence", "RescaleSlope"), 1.0)
        intercept = _number(self.get("PixelValueTransformationSequence", "RescaleIntercept"), 0.0)
        return slope, intercept


def _number(value, default: float) -> float:
    try:
        return float(value) if value is not None and value != "" else default
    except (TypeError, ValueError):
        return default


def is_multiframe(ds: pydicom.Dataset) -> bool:
    try:
        return int(ds.get("NumberOfFrames", 1) or 1) > 1
    except (TypeError, ValueError):
        return False


def slices_of(path: Path, ds: pydicom.Dataset) -> list[DicomSlice]:
    if not is_multiframe(ds):
        return [DicomSlice(path, ds)]
    return [DicomSlice(path, ds, frame) for frame in range(int(ds.NumberOfFrames))]


# --- 4D series ----------------------------------------------------------------------------------

# What tells the volumes of a 4D series apart, tried in this order. Each entry is the name used in
# details and labels, and for each slice a way to read it (single-frame tag or vendor private tag,
# or the enhanced functional group).
_SIEMENS_B = (0x0019, 0x100C)
_GE_B = (0x0043, 0x1039)
_PHILIPS_B = (0x2001, 0x1003)


def _private(ds: pydicom.Dataset, tag: tuple[int, int]):
    element = ds.get(tag)
    if element is None:
        return None
    value = element.value
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii").strip("\0 ").split("\\")
        except UnicodeDecodeError:
            return None
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        value = value[0] if len(value) else None
    return value


def b_value(s: DicomSlice):
    if s.frame is not None:
        item = s.item("MRDiffusionSequence")
        if item is not None and item.get("DiffusionBValue") is not None:
            return item.get("DiffusionBValue")
    ds = s.header
    if ds.get("DiffusionBValue") is not None:
        return ds.get("DiffusionBValue")
    for tag in (_SIEMENS_B, _PHILIPS_B):
        value = _private(ds, tag)
        if value is not None:
            return value
    value = _private(ds, _GE_B)
    if value is not None:
        try:
            return float(value) % 1e9  # GE adds 10^9 to the b-value on some software
        except (TypeError, ValueError):
            return None
    return None


def gradient(s: DicomSlice):
    if s.frame is not None:
        item = s.item("MRDiffusionSequence")
        inner = item.get("DiffusionGradientDirectionSequence") if item is not None else None
        if inner:
            return inner[0].get("DiffusionGradientOrientation")
    return s.header.get("DiffusionGradientOrientation")


def temporal_position(s: DicomSlice):
    if s.frame is not None:
        item = s.item("FrameContentSequence")
        if item is not None and item.get("TemporalPositionIndex") is not None:
            return item.get("TemporalPositionIndex")
    return s.header.get("TemporalPositionIdentifier")


SPLIT_KEYS: tuple[tuple[str, tuple], ...] = (
    ("b-value", (b_value,)),
    ("b-value and gradient direction", (b_value, gradient)),
    ("temporal position", (temporal_position,)),
    ("AcquisitionNumber", (lambda s: s.header.get("AcquisitionNumber"),)),
    ("EchoNumbers", (lambda s: s.header.get("EchoNumbers"),)),
    ("TriggerTime", (lambda s: s.header.get("TriggerTime"),)),
)


def _key_text(value) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        parts = [_key_text(v) for v in value]
        return None if any(p is None for p in parts) else "/".join(parts)
    try:
        return f"{float(value):g}"
    except (TypeError, ValueError):
        return str(value).strip() or None


def _sort_key(text: str):
    try:
        return (0, float(text), text)
    except ValueError:
        return (1, 0.0, text)


@dataclass(frozen=True)
class FourD:
    """How the slices of a series with repeated positions form several volumes."""

    volumes: int
    positions: int
    key: str | None  # the field that tells them apart; None when nothing does
    groups: tuple[tuple[str, tuple[int, ...]], ...] = ()  # (value, slice indices) per volume, ordered

    def describe(self) -> str:
        text = f"a 4D series: {self.volumes} volumes of {self.positions} slices sharing positions"
        if self.key is None:
            return text + "; no b-value, temporal position or acquisition number tells them apart"
        values = ", ".join(v for v, _ in self.groups[:6]) + (", ..." if len(self.groups) > 6 else "")
        return text + f", told apart by {self.key} ({values})"


def four_d_split(slices: list[DicomSlice], along: np.ndarray) -> FourD | None:
    """A 4D reading of slices whose positions (``along`` the normal) repeat, or None when they are not one:
    every position must repeat the same number of times (at least twice, over at least 2 positions)."""
    rounded = np.round(along / POSITION_TOLERANCE).astype(np.int64)
    counts = Counter(rounded.tolist())
    multiplicity = set(counts.values())
    if len(multiplicity) != 1 or len(counts) < 2:
        return None
    (times,) = multiplicity
    if times < 2:
        return None
    for name, readers in SPLIT_KEYS:
        keys = []
        for s in slices:
            parts = [_key_text(read(s)) for read in readers]
            keys.append(None if any(p is None for p in parts) else " ".join(parts))
        if any(k is None for k in keys):
            continue
        groups: dict[str, list[int]] = defaultdict(list)
        for i, k in enumerate(keys):
            groups[k].append(i)
        if len(groups) != times:
            continue
        if all(sorted(rounded[idx].tolist()) == sorted(counts) for idx in groups.values()):
            ordered = tuple((k, tuple(groups[k])) for k in sorted(groups, key=_sort_key))
            return FourD(times, len(counts), name, ordered)
    return FourD(times, len(counts), None)
