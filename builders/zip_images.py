"""Images from a folder or from zip archives read in place, never extracted.

PubMedVision ships its images as twenty ``images_N.zip`` files of about
2.85 GB each; unpacking them doubles the disk it needs. An annotation path
like ``images/pmc_1_0.jpg`` is looked up in the folder first, then by its
file name among the members of every zip (the published advice is
``unzip -j``, so member folders do not matter). When two zips hold the same
name, the one that sorts first wins, so every build reads the same bytes.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path, PurePosixPath

from omnivmed.builders.base import Reject
from omnivmed.data.media import EncodedImage, MediaError, encode_image_bytes, read_image, resolve_inside, stable_error_text

_NUMBER = re.compile(r"(\d+)")


def _natural_key(path: Path) -> tuple:
    """images_2.zip before images_10.zip."""
    return tuple(int(part) if part.isdigit() else part for part in _NUMBER.split(path.name))


class ZipImageStore:
    """Reads ``relative`` image paths from ``raw``'s folder, else from ``archives``.

    Use as a context manager: the zip files stay open for the build and are
    closed at the end. :attr:`rejects` names archives that could not be opened.
    """

    def __init__(self, raw: Path, archives: list[Path]):
        self.raw = raw
        self.archives = sorted(archives, key=_natural_key)
        self.rejects: list[Reject] = []
        self._zips: list[zipfile.ZipFile] = []
        self._index: dict[str, tuple[int, str]] | None = None

    def __enter__(self) -> "ZipImageStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for zf in self._zips:
            zf.close()
        self._zips.clear()

    def _build_index(self) -> dict[str, tuple[int, str]]:
        index: dict[str, tuple[int, str]] = {}
        for path in self.archives:
            rel = path.relative_to(self.raw).as_posix()
            try:
                zf = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError) as err:
                why = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
                self.rejects.append(Reject(rel, "-", "unreadable_zip", f"{rel}: cannot open as zip ({why})"))
                continue
            self._zips.append(zf)
            number = len(self._zips) - 1
            for member in zf.namelist():
                if member.endswith("/"):
                    continue
                index.setdefault(PurePosixPath(member).name, (number, member))
        return index

    def open_archives(self) -> list[Reject]:
        """Index every archive now; returns the archives that could not be opened."""
        if self._index is None:
            self._index = self._build_index()
        return list(self.rejects)

    def get(self, relative: str) -> EncodedImage:
        path = resolve_inside(self.raw, relative)  # refuses paths that leave the raw folder
        if path.is_file():
            return read_image(self.raw, relative)
        self.open_archives()
        hit = self._index.get(PurePosixPath(relative).name)
        if hit is None:
            where = "in the folder nor in any zip" if self.archives else "in the folder (and there are no zips)"
            raise MediaError("missing_image", f"{relative}: no such image {where}")
        number, member = hit
        zf = self._zips[number]
        name = f"{Path(zf.filename).name}:{member}"
        try:
            data = zf.read(member)
        except (zipfile.BadZipFile, OSError, EOFError) as err:  # e.g. a CRC error in a damaged archive
            raise MediaError("unreadable_image", f"{name}: cannot read from the zip ({stable_error_text(err)})") from None
        return encode_image_bytes(data, name)
