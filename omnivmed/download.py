"""Getting a source's raw files: resumable checksummed downloads, or adopting a local copy.

Three ways a raw folder comes to exist:

* direct files (``SourceInfo.downloads``): fetched over HTTP(S) with resume and
  retries, verified against size and sha256, unzipped where asked;
* a Hugging Face mirror (``SourceInfo.hf_repo``): handed to the hub client,
  which resumes and checksums on its own;
* a copy the user already has (``--from``): checked, then linked, never copied
  or written into.

Each way leaves a receipt (``omnivmed-download.json``) saying what was
obtained and how, with checksums, so a later build can be traced to its bytes.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath, PureWindowsPath

from tqdm import tqdm

from omnivmed.builders.base import Builder, DownloadFile, SourceInfo
from omnivmed.build import input_checksums
from omnivmed.data.fileio import atomic_write_bytes, fsync_dir, is_within, sha256_file

RECEIPT_NAME = "omnivmed-download.json"
BACKOFF_BASE = 1.0  # seconds before the first retry; doubles with each further one
BACKOFF_MAX = 60.0
_CHUNK = 1 << 20
_USER_AGENT = "omnivmed-downloader/0.1"
# Statuses that mean "try again later"; any other 4xx will not change on retry.
_RETRY_STATUSES = frozenset({408, 429}) | frozenset(range(500, 600))
_HF_INTERNAL = ".cache"  # the hub client's bookkeeping inside local_dir


class DownloadError(RuntimeError):
    """A source could not be obtained; the message is one line saying why."""


class _Transient(Exception):
    """A failure worth retrying (connection trouble, 408/429/5xx, a short body)."""


# --- one file over HTTP -----------------------------------------------------


def fetch_file(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    size: int | None = None,
    retries: int = 4,
    timeout: float = 60,
    progress: bool = True,
    backoff_base: float | None = None,
) -> str:
    """Download ``url`` to ``dest`` (resuming a ``.part``), verify it, return its sha256."""
    dest = Path(dest)
    if dest.is_file() and (digest := _verified_digest(dest, sha256, size)):
        return digest  # already there and intact: nothing to do
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    base = BACKOFF_BASE if backoff_base is None else backoff_base
    for attempt in range(retries + 1):
        try:
            _download_to_part(url, part, timeout=timeout, progress=progress)
            break
        except _Transient as err:
            if attempt == retries:
                raise DownloadError(f"{url}: gave up after {retries + 1} attempts: {err}") from err
            time.sleep(backoff_delay(attempt, base))
    return _finish(part, dest, sha256, size)


def part_path(dest: Path) -> Path:
    """Where an unfinished download of ``dest`` lives (kept across runs for resume)."""
    return dest.with_name(dest.name + ".part")


def backoff_delay(attempt: int, base: float) -> float:
    """Exponential backoff with jitter, so many clients do not retry in lockstep."""
    return min(BACKOFF_MAX, base * 2**attempt) * random.uniform(0.5, 1.5)


def _verified_digest(path: Path, sha256: str | None, size: int | None) -> str | None:
    """The file's sha256 when it matches what was asked for, else None."""
    if size is not None and path.stat().st_size != size:
        return None
    digest = sha256_file(path)
    if sha256 is not None and digest != sha256.lower():
        return None
    return digest


def _download_to_part(url: str, part: Path, *, timeout: float, progress: bool) -> None:
    """One attempt: append to ``part`` from where it stops; raise _Transient to retry."""
    offset = part.stat().st_size if part.exists() else 0
    response = _open(url, offset, timeout)
    if response is None:
        return  # 416 on a resume: the .part already holds everything; verification decides
    with response:
        offset = _resume_offset(response, offset, part)
        total = _expected_total(response, offset)
        _copy_body(response, part, offset, total, progress)


def _open(url: str, offset: int, timeout: float):
    headers = {"User-Agent": _USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        err.close()
        if err.code == 416 and offset:
            return None
        if err.code in _RETRY_STATUSES:
            raise _Transient(f"HTTP {err.code} {err.reason}") from err
        raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from err
    except (OSError, http.client.HTTPException) as err:  # URLError, resets, timeouts
        raise _Transient(str(err)) from err


def _resume_offset(response, offset: int, part: Path) -> int:
    """Where the body starts in the file: ``offset`` for a 206, 0 when Range was ignored."""
    if not offset:
        return 0
    if response.status != 206:
        return 0  # the server sent the whole file: start over rather than append
    start = _content_range_start(response.headers.get("Content-Range", ""))
    if start != offset:
        part.unlink(missing_ok=True)  # a range we did not ask for cannot be trusted
        raise _Transient(f"asked for bytes {offset}-, server sent {response.headers.get('Content-Range')!r}")
    return offset


def _content_range_start(value: str) -> int | None:
    """The first byte of ``Content-Range: bytes START-END/TOTAL``."""
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def _expected_total(response, offset: int) -> int | None:
    length = response.headers.get("Content-Length")
    return offset + int(length) if length and length.isdigit() else None


def _copy_body(response, part: Path, offset: int, total: int | None, progress: bool) -> None:
    written = offset
    bar = tqdm(total=total, initial=offset, desc=part.name[: -len(".part")], unit="B",
               unit_scale=True, unit_divisor=1024, disable=not progress, leave=False)
    try:
        with open(part, "ab" if offset else "wb") as f:
            while chunk := response.read(_CHUNK):
                f.write(chunk)
                written += len(chunk)
                bar.update(len(chunk))
            f.flush()
            os.fsync(f.fileno())
    except (OSError, http.client.HTTPException) as err:
        raise _Transient(f"connection lost after {written} bytes: {err}") from err
    finally:
        bar.close()
    # urllib returns a short body silently when the connection drops; the .part is kept to resume.
    if total is not None and written < total:
        raise _Transient(f"connection closed after {written} of {total} bytes")


def _finish(part: Path, dest: Path, sha256: str | None, size: int | None) -> str:
    """Check the finished .part, then move it into place in one rename."""
    got_size = part.stat().st_size
    if size is not None and got_size != size:
        part.unlink()
        raise DownloadError(f"{dest.name}: expected {size} bytes, got {got_size}")
    digest = sha256_file(part)
    if sha256 is not None and digest != sha256.lower():
        part.unlink()  # a corrupt .part would only be resumed into another corrupt file
        raise DownloadError(f"{dest.name}: expected sha256 {sha256.lower()}, got {digest}")
    os.replace(part, dest)
    fsync_dir(dest.parent)
    return digest


# --- archives ----------------------------------------------------------------


def extract_zip(archive: Path, into: Path, *, sha256: str | None = None) -> None:
    """Unzip ``archive`` into ``into`` once; refuse members that would land outside it."""
    archive, into = Path(archive), Path(into)
    digest = sha256 or sha256_file(archive)
    marker = into / f".extracted-{archive.name}-{digest[:16]}"
    if marker.exists():
        return
    into.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive) as zf:
        for name in zf.namelist():
            _check_member(name, into)
        zf.extractall(into)
    # Written last: an interrupted extraction leaves no marker and is simply redone.
    atomic_write_bytes(marker, b"")


def _check_member(name: str, into: Path) -> None:
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute() or PureWindowsPath(name).drive:
        raise DownloadError(f"refusing zip member {name!r}: absolute path")
    if not is_within(into, into / name):
        raise DownloadError(f"refusing zip member {name!r}: it would be written outside {into}")


# --- a whole source ------------------------------------------------------------


def download_source(builder: Builder, to: Path, *, progress: bool = True) -> Path:
    """Obtain ``builder``'s source into ``to``, check its layout and write a receipt."""
    info, to = builder.info, Path(to)
    if info.gated or not (info.downloads or info.hf_repo):
        raise DownloadError(manual_hint(info))
    if to.is_symlink():
        # An adopted copy: downloading here would write into the user's own folder.
        raise DownloadError(f"{to} links to an adopted copy ({os.readlink(to)}); remove the link to download afresh")
    if to.exists() and not to.is_dir():
        raise DownloadError(f"{to}: is a file, not a folder; remove it or choose another --to")
    existed = to.exists()
    try:
        if info.downloads:
            obtained, files = _fetch_direct(info.downloads, to, progress)
        else:
            obtained, files = _fetch_hf(info.hf_repo, to, progress)
    except DownloadError as err:
        if not existed:
            _remove_empty_tree(to)  # nothing fetched: leave no empty folder for the next download --from or build
        message = str(err)
        if "--from" not in message:
            message += f"; if you have a copy of {info.name} already, pass its folder with --from PATH"
        raise DownloadError(message) from None
    except BaseException:
        if not existed:
            _remove_empty_tree(to)
        raise
    builder.check_layout(to)
    write_receipt(to / RECEIPT_NAME, info.name, obtained, files)
    return to


def _remove_empty_tree(root: Path) -> None:
    """Remove ``root`` and the folders below it when none holds a file (a partial download's .part files stay)."""
    if not root.is_dir() or root.is_symlink():
        return
    for empty_part in root.rglob("*.part"):
        if empty_part.is_file() and empty_part.stat().st_size == 0:
            empty_part.unlink()
    for folder in sorted((p for p in root.rglob("*") if p.is_dir() and not p.is_symlink()), key=lambda p: -len(p.parts)):
        try:
            folder.rmdir()
        except OSError:
            pass
    try:
        root.rmdir()
    except OSError:
        pass


def manual_hint(info: SourceInfo) -> str:
    why = "is gated (its terms must be accepted)" if info.gated else "has no scriptable download"
    return (
        f"{info.name} {why}: obtain a copy{f' from {info.homepage}' if info.homepage else ''} yourself, "
        f"then pass its folder with --from PATH"
    )


def _fetch_direct(downloads: tuple[DownloadFile, ...], to: Path, progress: bool) -> tuple[dict, list[dict]]:
    files = []
    for item in downloads:
        dest = to / item.filename
        digest = fetch_file(item.url, dest, sha256=item.sha256, size=item.size, progress=progress)
        if item.extract:
            extract_zip(dest, to, sha256=digest)
        files.append(_file_entry(item.filename, dest.stat().st_size, digest))
    obtained = {"method": "http", "urls": [d.url for d in downloads]}
    return obtained, files


def _fetch_hf(repo: str, to: Path, progress: bool) -> tuple[dict, list[dict]]:
    import huggingface_hub
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    # A plain call/restore pair rather than the context manager: older hub releases lack it.
    was_disabled = are_progress_bars_disabled()
    if not progress:
        disable_progress_bars()
    try:
        huggingface_hub.snapshot_download(repo_id=repo, repo_type="dataset", local_dir=to)
    except (HfHubHTTPError, LocalEntryNotFoundError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DownloadError(f"{repo}: Hugging Face download failed ({first_line}); or pass a local copy with --from PATH") from err
    finally:
        if not progress and not was_disabled:
            enable_progress_bars()
    files = [_describe(p, to) for p in _snapshot_files(to)]
    obtained = {"method": "huggingface", "hf_repo": repo, "revision": snapshot_revision(to)}
    return obtained, files


def _snapshot_files(root: Path) -> list[Path]:
    """The data files of a snapshot: not the hub's bookkeeping, not our own receipt."""
    found = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if rel.parts[0] == _HF_INTERNAL or rel.as_posix() == RECEIPT_NAME or not path.is_file():
            continue
        found.append(path)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def snapshot_revision(local_dir: Path) -> str | None:
    """The commit a snapshot came from, when all its files agree on one.

    snapshot_download returns only the folder; the hub client records each
    file's commit as the first line of ``.cache/huggingface/download/*.metadata``.
    """
    meta_dir = Path(local_dir) / _HF_INTERNAL / "huggingface" / "download"
    commits = set()
    for meta in meta_dir.rglob("*.metadata"):
        with open(meta, encoding="utf-8") as f:
            commits.add(f.readline().strip())
    return commits.pop() if len(commits) == 1 else None


# --- a copy the user already has -------------------------------------------------


def adopt_local(builder: Builder, from_path: Path, to: Path) -> Path:
    """Point ``to`` at the user's copy (checked first); the receipt goes beside ``to``."""
    from_path, to = Path(from_path), Path(to)
    builder.check_layout(from_path)
    target = from_path.resolve()
    _link(to, target)
    # The build's own checksums: a folder input (a DICOM series) is one entry, paths UID-scrubbed.
    files = [_file_entry(i.path, i.bytes, i.sha256) for i in input_checksums(builder, from_path)]
    obtained = {"method": "local", "path": str(target)}
    write_receipt(adopted_receipt_path(to), builder.info.name, obtained, files)
    return to


def adopted_receipt_path(to: Path) -> Path:
    """Outside the adopted folder: we never write into the user's copy."""
    return to.parent / f"{to.name}.{RECEIPT_NAME}"


def _link(to: Path, target: Path) -> None:
    if to.is_symlink() or to.exists():
        if to.resolve() == target:
            return  # already pointing there (or it is the copy itself)
        what = f"a link to {os.readlink(to)}" if to.is_symlink() else "a different folder"
        raise DownloadError(f"{to} already exists as {what}, not a link to {target}; remove it or pick another target")
    to.parent.mkdir(parents=True, exist_ok=True)
    to.symlink_to(target, target_is_directory=True)


# --- receipts -------------------------------------------------------------------


def _describe(path: Path, root: Path) -> dict:
    return _file_entry(path.relative_to(root).as_posix(), path.stat().st_size, sha256_file(path))


def _file_entry(rel: str, size: int, digest: str) -> dict:
    return {"path": rel, "bytes": size, "sha256": digest}


def write_receipt(path: Path, source: str, obtained: dict, files: list[dict]) -> None:
    """Deterministic JSON (sorted keys, no timestamps): same bytes in, same receipt out."""
    receipt = {"source": source, "obtained": obtained, "files": sorted(files, key=lambda f: f["path"])}
    text = json.dumps(receipt, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))
