"""Which files are DICOM, and reading one (plain or gzip-compressed) with pydicom.

Exports from PACS and archives often hold ``.dcm.gz`` files: each is
decompressed into memory (never next to the original) and read like any
other. A file named ``*.dcm.gz`` that is not a gzip stream, or whose content
is not DICOM, is kept as a DICOM file so that its series is rejected naming
it, rather than left out without a word.
"""

from __future__ import annotations

import gzip
import io
import re
import warnings
import zlib
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from omnivmed.data.volume.core import VolumeError

GZIP_MAGIC = b"\x1f\x8b"
GZIP_SUFFIXES = (".dcm.gz", ".dicom.gz")
# A gzip bomb guard: no single DICOM slice or enhanced file in practice comes near this.
MAX_DECOMPRESSED_BYTES = 2 << 30
_CHUNK = 1 << 20


def is_gzip_named(path: Path) -> bool:
    return path.name.lower().endswith(GZIP_SUFFIXES)


def _head(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(132)


def is_gzipped(path: Path) -> bool:
    try:
        return _head(path)[:2] == GZIP_MAGIC
    except OSError:
        return False


def is_dicom_file(path: Path) -> bool:
    """Part 10 files ('DICM' at byte 128), bare '.dcm' files, and gzip files holding either.

    A ``.dcm.gz`` name is enough (a broken one is rejected later, naming it); another gzip
    file counts when its first decompressed bytes carry the DICOM magic.
    """
    if is_gzip_named(path):
        return True
    try:
        head = _head(path)
    except OSError:
        return False
    if head[:2] == GZIP_MAGIC and not path.name.lower().endswith((".nii.gz", ".tar.gz")):
        try:
            with gzip.open(path, "rb") as f:
                return f.read(132)[128:132] == b"DICM"
        except (OSError, EOFError, zlib.error):
            return False
    return head[128:132] == b"DICM" or path.suffix.lower() == ".dcm"


def dicom_files_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and is_dicom_file(p))


def decompressed(path: Path) -> bytes:
    """The content of a gzip file, read into memory; VolumeError naming the file when it is not one."""
    out = io.BytesIO()
    try:
        with gzip.open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                out.write(chunk)
                if out.tell() > MAX_DECOMPRESSED_BYTES:
                    raise VolumeError(
                        "too_large", str(path), f"decompresses to more than {MAX_DECOMPRESSED_BYTES:,} bytes"
                    )
    except (OSError, EOFError, zlib.error) as err:
        # gzip's messages carry no paths or addresses: the class and its text are stable.
        raise VolumeError("unreadable_dicom", str(path), f"not a readable gzip file ({type(err).__name__}: {err})") from None
    return out.getvalue()


def _source(path: Path):
    return io.BytesIO(decompressed(path)) if is_gzipped(path) or is_gzip_named(path) else path


def read_header(path: Path) -> pydicom.Dataset:
    """The header without pixel data (decompressed first when gzipped)."""
    source = _source(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(source, stop_before_pixels=True, force=True)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise VolumeError("unreadable_dicom", str(path), f"not a readable DICOM header ({_message(err)})") from None
    if is_gzipped(path) and not _looks_like_dicom(ds):
        raise VolumeError("unreadable_dicom", str(path), "a gzip file whose content is not DICOM")
    return ds


def read_dataset(path: Path) -> pydicom.Dataset:
    """The whole file, pixel data included (decompressed first when gzipped)."""
    source = _source(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(source, force=True)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise VolumeError("unreadable_dicom", str(path), f"not a readable DICOM file ({_message(err)})") from None


def _looks_like_dicom(ds: pydicom.Dataset) -> bool:
    return bool(getattr(ds, "preamble", None) is not None or "Rows" in ds or "SOPClassUID" in ds)


def _message(err: Exception) -> str:
    """An error's class and first line, without object reprs (``<_io.BytesIO object at 0x...>``)."""
    text = (str(err).splitlines() or [""])[0]
    text = re.sub(r"<[^<>]* at 0x[0-9a-fA-F]+>", "the file", text)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
