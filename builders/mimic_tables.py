"""MIMIC-CXR-JPG's tables: the official split and the per-image metadata.

PhysioNet ships them gzipped (``mimic-cxr-2.0.0-split.csv.gz``,
``mimic-cxr-2.0.0-metadata.csv.gz``); copies that were unpacked
(``.csv``, or the metadata as ``metadata.csv``) are read the same way.
Columns are found by name from the header, so the column order does not
matter; a table without the columns it needs is a layout error, a bad row is
a reject.
"""

from __future__ import annotations

import csv
import gzip
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from omnivmed.builders.base import LayoutError, Reject
from omnivmed.data.media import stable_error_text

SPLIT_NAMES = ("mimic-cxr-2.0.0-split.csv.gz", "mimic-cxr-2.0.0-split.csv")
METADATA_NAMES = ("mimic-cxr-2.0.0-metadata.csv.gz", "mimic-cxr-2.0.0-metadata.csv", "metadata.csv")
SPLIT_COLUMNS = ("dicom_id", "study_id", "subject_id", "split")
METADATA_COLUMNS = ("dicom_id", "ViewPosition")
# The split CSV's values -> the schema's splits.
SPLITS = {"train": "train", "validate": "validation", "test": "test"}


def find_table(raw: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        if (raw / name).is_file():
            return raw / name
    return None


def _rows(path: Path, raw: Path, needed: tuple[str, ...]):
    rel = path.relative_to(raw).as_posix()
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        handle = opener(path, "rt", encoding="utf-8", newline="")
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
    except (OSError, UnicodeDecodeError, EOFError, zlib.error, csv.Error) as err:
        raise LayoutError(f"{rel}: cannot read as CSV ({getattr(err, 'strerror', None) or stable_error_text(err)})") from None
    missing = [c for c in needed if c not in header]
    if missing:
        handle.close()
        raise LayoutError(f"{rel}: missing column(s) {', '.join(missing)} (header: {','.join(header)})")
    return rel, handle, reader


@dataclass
class Study:
    subject_id: str
    split: str
    dicoms: list[str] = field(default_factory=list)


@dataclass
class SplitTable:
    """The official split: images (dicom -> study) and studies (study -> subject, split, images)."""

    studies: dict[str, Study]
    image_study: dict[str, str]
    rejects: list[Reject]
    # Studies listed with two splits: rejected once here, not again as unlisted files.
    conflicting: set[str] = field(default_factory=set)


def read_split(path: Path, raw: Path) -> SplitTable:
    rel, handle, reader = _rows(path, raw, SPLIT_COLUMNS)
    studies: dict[str, Study] = {}
    image_study: dict[str, str] = {}
    rejects: list[Reject] = []
    conflicting: set[str] = set()
    with handle:
        try:
            for line, row in enumerate(reader, start=2):
                dicom, study, subject = (str(row.get(k) or "").strip() for k in ("dicom_id", "study_id", "subject_id"))
                split = SPLITS.get(str(row.get("split") or "").strip())
                if not (dicom and study.isdigit() and subject.isdigit()) or split is None:
                    rejects.append(Reject(rel, f"line {line}", "malformed_record", f"{rel} line {line}: {dict(row)}"))
                    continue
                entry = studies.setdefault(study, Study(subject, split))
                if entry.split != split or entry.subject_id != subject:
                    conflicting.add(study)
                entry.dicoms.append(dicom)
                image_study[dicom] = study
        except (csv.Error, OSError, EOFError, UnicodeDecodeError, zlib.error) as err:
            rejects.append(Reject(rel, "-", "malformed_csv", f"{rel}: cannot read on ({stable_error_text(err)})"))
    for study in sorted(conflicting):
        rejects.append(Reject(rel, f"s{study}", "conflicting_split", f"study s{study} is listed with different splits or subjects"))
        del studies[study]
    return SplitTable(studies, image_study, rejects, conflicting)


def read_view_positions(path: Path, raw: Path) -> dict[str, str]:
    """dicom_id -> ViewPosition ('' where the header left it blank)."""
    _, handle, reader = _rows(path, raw, METADATA_COLUMNS)
    with handle:
        return {str(row["dicom_id"]).strip(): str(row.get("ViewPosition") or "").strip() for row in reader if row.get("dicom_id")}

