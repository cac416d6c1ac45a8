"""Small file helpers shared by every stage: atomic writes and checksums."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_CHUNK = 4 << 20


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_folder(path: Path) -> tuple[int, str]:
    """(total bytes, digest) of a folder's regular files, over their sorted relative names and contents.

    One manifest entry for a DICOM series or a slice folder instead of hundreds of files.
    """
    h = hashlib.sha256()
    total = 0
    files = sorted((p for p in Path(path).rglob("*") if p.is_file()), key=lambda p: p.relative_to(path).as_posix())
    for file in files:
        total += file.stat().st_size
        h.update(file.relative_to(path).as_posix().encode() + b"\x00" + bytes.fromhex(sha256_file(file)))
    return total, h.hexdigest()


def fsync_dir(path: Path) -> None:
    """Make a rename durable: fsync the folder that holds it (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temporary_name(path: Path) -> Path:
    """The name a file is written under before its atomic rename."""
    return path.with_name(f".{path.name}.tmp")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary name, fsync, rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_if_changed(path: Path, data: bytes) -> None:
    """Atomic write, skipped when the file already holds these bytes (keeps mtimes and re-runs cheap)."""
    if path.is_file() and path.read_bytes() == data:
        return
    atomic_write_bytes(path, data)


def is_within(root: Path, candidate: Path) -> bool:
    """True when ``candidate`` (symlinks resolved) lies inside ``root``."""
    root = Path(os.path.realpath(root))
    candidate = Path(os.path.realpath(candidate))
    return candidate == root or root in candidate.parents


def read_json_or_yaml(path: Path, error: type[Exception] = ValueError):
    """The parsed contents of a ``.json`` file (else YAML); ``error`` names the file and the reason."""
    import json

    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise error(f"{path}: cannot read ({err.strerror})") from None
    try:
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise error(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'} ({str(err).splitlines()[0]})") from None
