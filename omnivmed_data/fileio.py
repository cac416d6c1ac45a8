"""Small file helpers shared by every stage: atomic writes, checksums and the output-folder lock."""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

_CHUNK = 4 << 20


def sha256_file(path: Path) -> str:
    """Bare hex sha256 of a file: the checksum of raw inputs, comparable with published releases."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


# Shard digests are written as "<algorithm>:<hex>". BLAKE3 is what new shards get: about
# 2.5x sha256's speed on one core here, so hashing keeps up with the write; sha256 stays
# readable and verifiable for manifests written before it.
SHARD_HASH = "blake3"
HASH_ALGORITHMS = ("blake3", "sha256")


def split_digest(digest: str) -> tuple[str, str]:
    """``"blake3:ab12..."`` -> ``("blake3", "ab12...")``; ValueError naming what is wrong otherwise."""
    algorithm, sep, hexdigest = digest.partition(":")
    if not sep or algorithm not in HASH_ALGORITHMS:
        raise ValueError(f"digest {digest[:20]!r} does not start with one of {', '.join(a + ':' for a in HASH_ALGORITHMS)}")
    if len(hexdigest) != 64 or any(c not in "0123456789abcdef" for c in hexdigest):
        raise ValueError(f"digest {digest[:20]!r} is not 64 lower-case hex digits after {algorithm}:")
    return algorithm, hexdigest


def file_digest(path: Path, algorithm: str = SHARD_HASH, *, all_cores: bool = True) -> str:
    """``"<algorithm>:<hex>"`` of a file's bytes (how manifests record shards).

    ``all_cores``: BLAKE3 on every core (verification); the digest does not depend on it.
    The shard writer passes False: its hash runs beside an fsync on a busy machine, where
    BLAKE3's worker threads measured no faster and now and then stalled for a few hundred ms.
    """
    if algorithm == "blake3":
        from blake3 import blake3

        # Memory-mapped: nothing is copied.
        h = blake3(max_threads=blake3.AUTO if all_cores else 1)
        h.update_mmap(str(path))
        return f"blake3:{h.hexdigest()}"
    if algorithm == "sha256":
        return f"sha256:{sha256_file(path)}"
    raise ValueError(f"hash algorithm {algorithm!r} is not one of {', '.join(HASH_ALGORITHMS)}")


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
    """The name a file is written under before its atomic rename: unique to this process and call.

    ``.<name>.<pid>-<random>.tmp``, so two writers never share a temporary
    (the final name stays the deterministic one); :func:`is_temporary_of`
    recognises what a crashed run left.
    """
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


# What temporary_name gives: ".<name>.<pid>-<8 hex>.tmp".
_TEMPORARY = re.compile(r"\..+\.[0-9]+-[0-9a-f]{8}\.tmp")


def remove_temporaries(folder: Path) -> None:
    """Delete the :func:`temporary_name` files directly in ``folder``: what killed runs left (no other name
    is touched). Only while holding the folder's lock: a live writer's temporaries look the same."""
    folder = Path(folder)
    if folder.is_dir():
        for tmp in folder.glob(".*.tmp"):
            if _TEMPORARY.fullmatch(tmp.name):
                tmp.unlink(missing_ok=True)


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


LOCK_NAME = ".omnivmed.lock"


class FolderBusy(RuntimeError):
    """Another live process holds the folder's lock; the message is one line naming its PID and command."""

    def __init__(self, folder: Path, pid: int | None, command: str):
        who = f"PID {pid}" if pid else "another process"
        what = f" ({command})" if command else ""
        super().__init__(f"{folder} is being written by {who}{what}; wait or choose another --out")
        self.folder = folder
        self.pid = pid
        self.command = command


_held: dict[str, list] = {}  # realpath -> [fd, depth]; a process re-enters its own lock
_held_guard = threading.Lock()


def _holder(lock_path: Path) -> tuple[int | None, str]:
    try:
        data = json.loads(lock_path.read_text(encoding="utf-8") or "{}")
        return int(data.get("pid") or 0) or None, str(data.get("command") or "")
    except (OSError, ValueError, TypeError, AttributeError):
        return None, ""


def _command_line() -> str:
    argv = [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv and sys.argv[0] else []
    return " ".join(argv)[:200]


@contextmanager
def folder_lock(folder: Path, command: str | None = None) -> Iterator[Path]:
    """Hold ``<folder>/.omnivmed.lock`` for the block: one writer per output folder.

    An advisory ``fcntl.flock`` on the file, so a holder killed by any signal
    releases it with its last descriptor (a stale lock from a dead PID is
    simply taken). The file holds the holder's PID and command, for the
    one-line :class:`FolderBusy` a second writer gets. Re-entrant within a
    process (build holds it, then its OutputWriter takes it again). The file
    is removed on release, so a finished folder holds only its outputs.
    """
    import fcntl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(folder)
    lock_path = folder / LOCK_NAME
    with _held_guard:
        if key in _held:
            _held[key][1] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield lock_path
        finally:
            with _held_guard:
                _held[key][1] -= 1
        return
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            pid, cmd = _holder(lock_path)
            raise FolderBusy(folder, pid, cmd) from None
        # The holder before us may have removed the file between our open and our flock: retry on the new one.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock_path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "command": command or _command_line()}).encode())
    with _held_guard:
        _held[key] = [fd, 1]
    try:
        yield lock_path
    finally:
        with _held_guard:
            _held[key][1] -= 1
            last = _held[key][1] == 0
            if last:
                del _held[key]
        if last:
            try:
                os.unlink(lock_path)
            except OSError:
                pass
            os.close(fd)
