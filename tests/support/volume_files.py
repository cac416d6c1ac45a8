"""Paths of the vendored real volumes, and generators of small synthetic / broken volume inputs.

Everything here writes into a folder the caller owns (a pytest ``tmp_path``)
and never touches ``data/``. The generators are deliberately explicit about
what lands in the headers, so that a privacy test can plant identifiers and
then look for them in whatever a builder writes:

* :func:`write_dicom_series` - a synthetic single-frame CT series (uncompressed,
  Explicit VR Little Endian), one file per slice, with every geometry field,
  UID and identifying element under the caller's control;
* :func:`write_slice_folder` - an M3D-style ``<int>.png|jpeg`` slice folder;
* :func:`write_nifti` - a NIfTI file from a numpy array (3-D or 4-D);
* :func:`truncated_copy`, :func:`garbage_pixel_data`, :func:`corrupt_nifti_header`
  - broken copies of good files.
"""

from __future__ import annotations

import gzip
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pydicom
import SimpleITK as sitk
from PIL import Image
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

PROJECT = Path(__file__).resolve().parents[2]
VOLUMES = PROJECT / "data" / "volumes"
CT_DICOM_SERIES = VOLUMES / "ct_dicom_series"  # 20 x 512 x 512, JPEG 2000 lossless, blank UIDs
CT_NIFTI = VOLUMES / "example_ct_sm.nii.gz"  # 122 x 101 x 30, 3 mm, RAS
MR_NIFTI = VOLUMES / "example_mr_sm.nii.gz"  # 117 x 91 x 20, 3 mm, LPS

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)  # ImageOrientationPatient: rows along +x, columns along +y

# A ready-made set of identifiers to plant (keyword -> value); every value is long
# enough (>= 4 characters per PN component) for omnivmed's identifier scrubbing.
PLANTED_IDENTIFIERS: dict[str, str] = {
    "PatientName": "Smithson^Janet^Quincy",
    "PatientID": "PID-998877",
    "PatientBirthDate": "19610417",
    "AccessionNumber": "ACC20240117",
    "InstitutionName": "Hospital Saint Wendelin",
    "ReferringPhysicianName": "Oberholzer^Ferdinand",
    "StationName": "CTSTATION77",
}


PixelFn = Callable[[int, int, int], np.ndarray]


def default_pixels(index: int, rows: int, cols: int) -> np.ndarray:
    """Stored values of slice ``index``: ``100 * index`` plus the column number (int16).

    Each slice is distinguishable (its level) and the x axis is too (the ramp),
    so ordering and flips are both visible in the read voxels.
    """
    return (100 * index + np.arange(cols, dtype=np.int16)[None, :].repeat(rows, axis=0)).astype(np.int16)


def constant_pixels(value_of: Callable[[int], int] = lambda i: 10 * (i + 1)) -> PixelFn:
    """A ``pixel_fn`` filling slice ``i`` with ``value_of(i)`` (default ``10 * (i + 1)``)."""

    def fill(index: int, rows: int, cols: int) -> np.ndarray:
        return np.full((rows, cols), value_of(index), dtype=np.int16)

    return fill


@dataclass(frozen=True)
class SyntheticSeries:
    """What :func:`write_dicom_series` wrote; ``files`` etc. are in slice order (the order of ``positions``)."""

    folder: Path
    files: tuple[Path, ...]
    positions: tuple[tuple[float, float, float] | None, ...]
    pixels: tuple[np.ndarray, ...]  # stored values, before RescaleSlope/RescaleIntercept
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str
    sop_uids: tuple[str, ...]

    def hu(self, index: int, slope: float = 1.0, intercept: float = 0.0) -> np.ndarray:
        return self.pixels[index].astype(np.float32) * slope + intercept


def _uid(value: str | None) -> str:
    """None -> a fresh random UID (2.25 root); a string (also '') is used as given."""
    return generate_uid() if value is None else value


def write_dicom_series(
    folder: Path,
    n: int = 4,
    *,
    rows: int = 16,
    cols: int = 16,
    spacing: float = 2.0,
    first_z: float = -100.0,
    positions: Sequence[Sequence[float] | None] | None = None,
    orientation: Sequence[float] | Sequence[Sequence[float]] = AXIAL,
    pixel_spacing: tuple[float, float] = (0.5, 0.5),
    pixel_fn: PixelFn = default_pixels,
    name_fn: Callable[[int], str] = lambda i: f"slice{i:03d}.dcm",
    modality: str = "CT",
    series_number: int | None = 1,
    series_description: str | None = "Synthetic series",
    slope: float = 1.0,
    intercept: float = 0.0,
    study_uid: str | None = None,
    series_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    sop_uids: Sequence[str] | None = None,
    identifiers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> SyntheticSeries:
    """Write ``n`` single-slice CT files into ``folder`` (created if needed) and describe them.

    Geometry
        ``positions[i]`` is slice i's ImagePositionPatient (default: ``(0, 0, first_z + i * spacing)``);
        ``None`` leaves that slice without ImagePositionPatient. ``orientation`` is one
        ImageOrientationPatient for all slices, or a sequence of ``n`` of them.
    Pixels
        ``pixel_fn(i, rows, cols)`` gives slice i's stored values (a 2-D int array); Rows/Columns
        are taken from the array it returns, so a function returning another shape for one
        slice makes a mixed-size series. Signed arrays are written with PixelRepresentation 1,
        others as uint16. ``slope``/``intercept`` go to RescaleSlope/RescaleIntercept.
    File names
        ``name_fn(i)`` names slice i's file (default ``slice000.dcm``...); use it to make file-name
        order differ from position order. Every file is a Part 10 file (preamble + 'DICM').
    UIDs
        ``study_uid``/``series_uid``/``frame_of_reference_uid`` default to fresh random UIDs, ``''``
        writes them blank (as the vendored real series has them); ``sop_uids`` gives one
        SOPInstanceUID per slice (default: fresh ones). InstanceNumber is ``i + 1``.
    Identifiers
        ``identifiers`` (keyword -> value, e.g. :data:`PLANTED_IDENTIFIERS`) is written into every
        slice: PatientName, PatientID, PatientBirthDate, AccessionNumber, InstitutionName... Nothing
        identifying is written unless given here (or in ``extra``).
    extra
        Any further keyword -> value set on every slice last (e.g. ``{"BodyPartExamined": "CHEST"}``);
        a value of ``None`` deletes that element.
    """
    folder.mkdir(parents=True, exist_ok=True)
    if positions is None:
        positions = [(0.0, 0.0, first_z + i * spacing) for i in range(n)]
    if len(positions) != n:
        raise ValueError(f"{len(positions)} positions for {n} slices")
    orientations = [orientation] * n if not isinstance(orientation[0], (list, tuple)) else list(orientation)
    if len(orientations) != n:
        raise ValueError(f"{len(orientations)} orientations for {n} slices")
    study_uid, series_uid, frame_uid = _uid(study_uid), _uid(series_uid), _uid(frame_of_reference_uid)
    sops = list(sop_uids) if sop_uids is not None else [generate_uid() for _ in range(n)]
    if len(sops) != n:
        raise ValueError(f"{len(sops)} SOP instance UIDs for {n} slices")

    files, pixels = [], []
    for i in range(n):
        array = np.asarray(pixel_fn(i, rows, cols))
        if array.ndim != 2:
            raise ValueError(f"pixel_fn must return a 2-D array, got shape {array.shape}")
        signed = np.issubdtype(array.dtype, np.signedinteger)
        array = array.astype(np.int16 if signed else np.uint16)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sops[i]
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / name_fn(i)
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sops[i]
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.Modality = modality
        if series_number is not None:
            ds.SeriesNumber = series_number
        if series_description is not None:
            ds.SeriesDescription = series_description
        ds.InstanceNumber = i + 1
        ds.ImageOrientationPatient = [float(v) for v in orientations[i]]
        if positions[i] is not None:
            ds.ImagePositionPatient = [float(v) for v in positions[i]]
        ds.PixelSpacing = [float(v) for v in pixel_spacing]
        ds.SliceThickness = float(spacing)
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = (int(v) for v in array.shape)
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1 if signed else 0
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept
        for keyword, value in (identifiers or {}).items():
            setattr(ds, keyword, value)
        for keyword, value in (extra or {}).items():
            if value is None:
                if keyword in ds:
                    delattr(ds, keyword)
            else:
                setattr(ds, keyword, value)
        ds.PixelData = array.tobytes()
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
        pixels.append(array)
    return SyntheticSeries(
        folder,
        tuple(files),
        tuple(None if p is None else tuple(float(v) for v in p) for p in positions),
        tuple(pixels),
        study_uid,
        series_uid,
        frame_uid,
        tuple(sops),
    )


def copy_real_series(dest: Path) -> list[Path]:
    """Copy the vendored real CT series into ``dest`` (created); returns the copies sorted by name."""
    shutil.copytree(CT_DICOM_SERIES, dest)
    return sorted(dest.iterdir())


def truncated_copy(src: Path, dest: Path, keep: float = 0.5) -> Path:
    """Copy the first ``keep`` fraction of ``src``'s bytes to ``dest`` (which may be ``src`` itself)."""
    data = Path(src).read_bytes()
    Path(dest).write_bytes(data[: int(len(data) * keep)])
    return Path(dest)


def garbage_pixel_data(path: Path, n_bytes: int = 17) -> Path:
    """Rewrite a DICOM file in place with ``n_bytes`` of junk as its PixelData (headers unchanged).

    For a compressed transfer syntax (the real series' JPEG 2000) the junk is encapsulated as
    one fragment, so the file stays well-formed and only the decoder can notice.
    """
    ds = pydicom.dcmread(path)
    junk = bytes((7 + i) % 256 for i in range(n_bytes))
    ds.PixelData = encapsulate([junk]) if ds.file_meta.TransferSyntaxUID.is_compressed else junk
    ds.save_as(path, enforce_file_format=True)
    return Path(path)


def write_slice_folder(
    folder: Path,
    images: Sequence[np.ndarray],
    *,
    numbers: Sequence[int] | None = None,
    suffix: str = ".png",
) -> list[Path]:
    """Write an M3D-style slice folder: ``images[i]`` as ``<numbers[i]><suffix>`` (default 0, 1, 2...).

    ``images`` are uint8 arrays, (H, W) grayscale or (H, W, 3) RGB; ``suffix`` is ``.png``,
    ``.jpeg`` or ``.jpg`` (the format follows it). Returns the paths in the order of ``images``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    numbers = list(range(len(images))) if numbers is None else list(numbers)
    if len(numbers) != len(images):
        raise ValueError(f"{len(numbers)} numbers for {len(images)} images")
    paths = []
    for number, image in zip(numbers, images):
        path = folder / f"{number}{suffix}"
        kwargs = {"quality": 95} if suffix.lower() in (".jpg", ".jpeg") else {}
        Image.fromarray(np.asarray(image, dtype=np.uint8)).save(path, **kwargs)
        paths.append(path)
    return paths


def m3d_like_slices(n: int = 12, rows: int = 40, cols: int = 48, *, seed: int = 0, border: int = 5) -> list[np.ndarray]:
    """uint8 slices with a black border and black first/last slices, so M3D's foreground crop matters."""
    if rows <= 2 * border + 2 or cols <= 2 * border + 3:
        raise ValueError(f"{rows}x{cols} leaves no interior inside a {border}-pixel border")
    rng = np.random.default_rng(seed)
    slices = []
    for i in range(n):
        image = np.zeros((rows, cols), dtype=np.uint8)
        if 0 < i < n - 1:
            image[border : rows - border - 2, border + 3 : cols - border] = rng.integers(
                20, 250, (rows - 2 * border - 2, cols - 2 * border - 3)
            )
        slices.append(image)
    return slices


def write_nifti(path: Path, array: np.ndarray, spacing: Sequence[float] | None = None) -> Path:
    """Write ``array`` (numpy order: (z, y, x) or (t, z, y, x)) as NIfTI with SimpleITK."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=False)
    if spacing is not None:
        image.SetSpacing(tuple(float(s) for s in spacing))
    sitk.WriteImage(image, str(path))
    return Path(path)


def gunzip_copy(src: Path, dest: Path) -> Path:
    """Decompress a ``.nii.gz`` into an uncompressed ``.nii``."""
    with gzip.open(src, "rb") as f:
        Path(dest).write_bytes(f.read())
    return Path(dest)


# Ways to break a NIfTI-1 header: field -> (byte offset, bytes written there).
NIFTI_HEADER_DAMAGE: dict[str, tuple[int, bytes]] = {
    "dim0": (40, struct.pack("<h", 9)),  # number of dimensions out of 1..7
    "negative_dim": (42, struct.pack("<h", -5)),  # dim[1] < 0
    "datatype": (70, struct.pack("<h", 9999)),  # no such datatype code
    "zeroed": (0, b"\0" * 348),  # the whole header
    "sizeof_hdr": (0, struct.pack("<i", 12345)),  # must be 348 (in either byte order)
    "magic": (344, b"XXXX"),  # must be "n+1\0" for a single-file NIfTI-1
}


def corrupt_nifti_header(src: Path, dest: Path, field: str = "dim0") -> Path:
    """An uncompressed copy of ``src`` (``.nii`` or ``.nii.gz``) with one part of its 348-byte header broken.

    ``field`` is a key of :data:`NIFTI_HEADER_DAMAGE`. Note: ITK (SimpleITK 2.5) rejects the first four
    but reads a file with a bad ``sizeof_hdr`` unchanged, and one with a bad ``magic`` as Analyze 7.5
    (ignoring the qform, so a RAS file comes out flipped in x and y).
    """
    offset, value = NIFTI_HEADER_DAMAGE[field]
    data = bytearray(gzip.decompress(Path(src).read_bytes()) if str(src).endswith(".gz") else Path(src).read_bytes())
    data[offset : offset + len(value)] = value
    Path(dest).write_bytes(bytes(data))
    return Path(dest)


# --- gzipped files, enhanced multi-frame DICOM, 4D series ----------------------------------------


def gzip_files(paths: Sequence[Path], *, keep: bool = False) -> list[Path]:
    """gzip each file to ``<name>.gz`` beside it (the original removed unless ``keep``); returns the new paths."""
    out = []
    for path in paths:
        path = Path(path)
        target = path.with_name(path.name + ".gz")
        target.write_bytes(gzip.compress(path.read_bytes(), mtime=0))
        if not keep:
            path.unlink()
        out.append(target)
    return out


ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"  # Enhanced CT Image Storage
ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"  # Enhanced MR Image Storage


@dataclass(frozen=True)
class EnhancedFile:
    """What :func:`write_enhanced_dicom` wrote; ``pixels[k]``/``positions[k]`` are those of stored frame k."""

    path: Path
    positions: tuple[tuple[float, float, float], ...]
    pixels: tuple[np.ndarray, ...]
    slope: float
    intercept: float

    def hu_in_position_order(self, normal: Sequence[float] = (0.0, 0.0, 1.0)) -> np.ndarray:
        order = sorted(range(len(self.positions)), key=lambda k: float(np.dot(self.positions[k], normal)))
        return np.stack([self.pixels[k].astype(np.float32) * self.slope + self.intercept for k in order])


def write_enhanced_dicom(
    path: Path,
    n: int = 5,
    *,
    rows: int = 12,
    cols: int = 10,
    spacing: float = 2.5,
    first_z: float = -50.0,
    pixel_spacing: tuple[float, float] = (0.5, 0.75),
    orientation: Sequence[float] = AXIAL,
    frame_order: Sequence[int] | None = None,
    pixel_fn: PixelFn = default_pixels,
    slope: float = 1.0,
    intercept: float = -1024.0,
    modality: str = "CT",
    b_values: Sequence[float] | None = None,
    identifiers: Mapping[str, str] | None = None,
    per_frame_position: bool = True,
) -> EnhancedFile:
    """One enhanced CT (or MR, ``modality="MR"``) file of ``n`` frames, geometry only in the functional groups.

    Frame k shows position index ``frame_order[k]`` (default: the order reversed, so stored order differs
    from position order): ImagePositionPatient ``(0, 0, first_z + i * spacing)`` rotated into
    ``orientation``'s normal. Orientation, PixelMeasures (PixelSpacing, SliceThickness,
    SpacingBetweenSlices) and PixelValueTransformation (slope, intercept) sit in the shared groups;
    PlanePositionSequence and FrameContentSequence per frame. There is no top-level
    ImagePositionPatient / ImageOrientationPatient / PixelSpacing, as in real enhanced files.
    ``b_values`` (one per frame) adds an MRDiffusionSequence per frame, for an enhanced 4D DWI.
    """
    order = list(frame_order) if frame_order is not None else list(range(n))[::-1]
    frames = len(order)
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    normal = np.cross(row, col)
    sop_class = ENHANCED_CT if modality == "CT" else ENHANCED_MR
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    ds.Modality = modality
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.SeriesDescription = "Synthetic enhanced series"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.ContentDate, ds.ContentTime, ds.AcquisitionDateTime = "20240101", "120000", "20240101120000"
    for keyword, value in (identifiers or {}).items():
        setattr(ds, keyword, value)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.NumberOfFrames = frames

    def item(**values) -> Dataset:
        out = Dataset()
        for keyword, value in values.items():
            setattr(out, keyword, value)
        return out

    shared = item(
        PlaneOrientationSequence=DicomSequence([item(ImageOrientationPatient=[float(v) for v in orientation])]),
        PixelMeasuresSequence=DicomSequence(
            [item(PixelSpacing=[float(v) for v in pixel_spacing], SliceThickness=float(spacing), SpacingBetweenSlices=float(spacing))]
        ),
        PixelValueTransformationSequence=DicomSequence(
            [item(RescaleSlope=slope, RescaleIntercept=intercept, RescaleType="HU" if modality == "CT" else "US")]
        ),
    )
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    positions, pixels, per_frame = [], [], []
    for k, i in enumerate(order):
        position = tuple(float(v) for v in normal * (first_z + i * spacing))
        positions.append(position)
        pixels.append(np.asarray(pixel_fn(i, rows, cols)).astype(np.int16))
        content = item(StackID="1", InStackPositionNumber=int(i) + 1, TemporalPositionIndex=1)
        groups = item(FrameContentSequence=DicomSequence([content]))
        if per_frame_position:
            groups.PlanePositionSequence = DicomSequence([item(ImagePositionPatient=list(position))])
        if b_values is not None:
            groups.MRDiffusionSequence = DicomSequence(
                [item(DiffusionBValue=float(b_values[k]), DiffusionDirectionality="ISOTROPIC")]
            )
        per_frame.append(groups)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    ds.PixelData = np.stack(pixels).tobytes()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return EnhancedFile(Path(path), tuple(positions), tuple(pixels), slope, intercept)


def _four_d_pixels(v: int) -> PixelFn:
    def fill(index: int, rows: int, cols: int) -> np.ndarray:
        array = np.full((rows, cols), 1000 * v + index, dtype=np.int16)
        array[0, -1] = 7 * v
        return array

    return fill


FOUR_D_TAGS = ("DiffusionBValue", "TemporalPositionIdentifier", "AcquisitionNumber", "siemens_b_value", "none")


def write_4d_series(
    folder: Path,
    values: Sequence[float] = (0, 500, 1000),
    slices: int = 4,
    *,
    tag: str = "DiffusionBValue",
    rows: int = 8,
    cols: int = 8,
    identifiers: Mapping[str, str] | None = None,
) -> dict[float, SyntheticSeries]:
    """A 4D series: one volume of ``slices`` positions per value in ``values``, all in one SeriesInstanceUID.

    ``tag`` says what tells the volumes apart: DiffusionBValue (0018,9087), TemporalPositionIdentifier,
    AcquisitionNumber, Siemens' private b-value (0019,100C) or nothing at all (``"none"``). Slice j of
    volume v is filled with ``1000 * v_index + j`` but for
    its last column of row 0, ``7 * v_index`` (so no two volumes are alike, even once normalised);
    file names mix the volumes.
    """
    series_uid, study_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    written = {}
    for v, value in enumerate(values):
        extra = {}
        if tag in ("DiffusionBValue", "TemporalPositionIdentifier", "AcquisitionNumber"):
            extra[tag] = float(value) if tag == "DiffusionBValue" else int(value)
        series = write_dicom_series(
            folder,
            slices,
            rows=rows,
            cols=cols,
            modality="MR",
            series_uid=series_uid,
            study_uid=study_uid,
            frame_of_reference_uid=frame_uid,
            name_fn=lambda i, v=v: f"IM{i:03d}_{v:02d}.dcm",
            pixel_fn=_four_d_pixels(v),
            identifiers=identifiers,
            extra=extra,
        )
        if tag == "siemens_b_value":
            for path in series.files:
                ds = pydicom.dcmread(path)
                ds.private_block(0x0019, "SIEMENS MR HEADER", create=True).add_new(0x0C, "IS", str(int(value)))
                ds.save_as(path, enforce_file_format=True)
        written[value] = series
    return written
