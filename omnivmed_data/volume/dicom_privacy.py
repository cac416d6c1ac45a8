"""What of a DICOM header may leave the reader: an allow-list, never a block-list.

Only the keywords below reach provenance. Everything else (names, ids, dates,
accession numbers, institutions, addresses, UIDs, private tags) is never
copied. Two more guards cover what an allow-list cannot see:

* an allowed free-text value that contains one of the file's own identifiers
  (a technologist typing the patient's name into SeriesDescription) is dropped;
* path components that are or contain a DICOM UID or one of those identifiers
  (folders named after the SeriesInstanceUID, as TCIA exports are) are
  replaced by a pseudonym before a path is written anywhere.
"""

from __future__ import annotations

import hashlib
import re
from typing import Iterable

import pydicom

# Acquisition facts a model or a data card may use; none identifies a person.
ALLOWED_KEYWORDS: tuple[str, ...] = (
    "Modality",
    "BodyPartExamined",
    "SeriesDescription",
    "Manufacturer",
    "ManufacturerModelName",
    "ImageType",
    "PatientPosition",
    "SliceThickness",
    "PixelSpacing",
    "KVP",
    "ConvolutionKernel",
    "ContrastBolusAgent",
    "MagneticFieldStrength",
    "RepetitionTime",
    "EchoTime",
    "InversionTime",
    "FlipAngle",
    "ScanningSequence",
    "SequenceVariant",
    "MRAcquisitionType",
    "PhotometricInterpretation",
    "BitsStored",
    "RescaleType",
)

# Values of these are looked for inside allowed text and inside paths.
IDENTIFYING_KEYWORDS: tuple[str, ...] = (
    "PatientName",
    "PatientID",
    "OtherPatientIDs",
    "PatientBirthDate",
    "AccessionNumber",
    "InstitutionName",
    "InstitutionAddress",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "OperatorsName",
    "StationName",
    "DeviceSerialNumber",
    "StudyID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "FrameOfReferenceUID",
    "IrradiationEventUID",
)

# A DICOM UID: at least four dot-separated numeric components (e.g. 1.2.840.10008...).
_UID_PATTERN = re.compile(r"\d+(?:\.\d+){3,}")
_MIN_IDENTIFIER_LENGTH = 4  # shorter values ("M", "1") would redact everything


def _text(value) -> str:
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return "\\".join(_text(v) for v in value)
    return str(value).strip()


def allowed_fields(ds: pydicom.Dataset, identifiers: frozenset[str] = frozenset()) -> tuple[tuple[str, str], ...]:
    """(keyword, value) for the allow-listed elements present with a non-empty value."""
    fields = []
    for keyword in ALLOWED_KEYWORDS:
        value = ds.get(keyword)
        if value is None:
            continue
        text = _text(value)
        if not text or _contains_identifier(text, identifiers) or _UID_PATTERN.search(text):
            continue
        fields.append((keyword, text))
    return tuple(fields)


def identifiers_of(datasets: Iterable[pydicom.Dataset]) -> frozenset[str]:
    """The identifying values found in these headers (for scrubbing text and paths)."""
    found: set[str] = set()
    for ds in datasets:
        for keyword in IDENTIFYING_KEYWORDS:
            value = ds.get(keyword)
            if value is None:
                continue
            for part in re.split(r"[\\^]", _text(value)):
                part = part.strip()
                if len(part) >= _MIN_IDENTIFIER_LENGTH:
                    found.add(part)
    return frozenset(found)


def _contains_identifier(text: str, identifiers: frozenset[str]) -> bool:
    folded = text.casefold()
    return any(i.casefold() in folded for i in identifiers)


def pseudonym(text: str) -> str:
    return "redacted-" + hashlib.sha256(text.encode()).hexdigest()[:12]


def redact_path(path: str, identifiers: frozenset[str] = frozenset()) -> str:
    """``path`` with every component that holds a UID or an identifier replaced by a pseudonym."""
    parts = []
    for part in path.split("/"):
        if _UID_PATTERN.search(part) or _contains_identifier(part, identifiers):
            part = pseudonym(part)
        parts.append(part)
    return "/".join(parts)
