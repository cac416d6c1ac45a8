"""Reading and checking 2D images for Samples.

Images are stored as the source's own encoded bytes when they are JPEG or PNG
(no re-encoding: nothing is lost and ids stay tied to the source file); other
formats are converted losslessly to PNG. Every image is fully decoded once to
prove it is readable, truncated JPEGs included.
"""

from __future__ import annotations

import io
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from omnivmed.data.fileio import is_within


class MediaError(ValueError):
    """An image that cannot be used; ``reason`` is a short category."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class EncodedImage:
    data: bytes
    format: str  # "jpeg" or "png"
    height: int
    width: int


def sniff_format(data: bytes) -> str | None:
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    return None


_OBJECT_REPR = re.compile(r"\s*<[^<>]*? at 0x[0-9a-fA-F]+>")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,}")


def stable_error_text(err: BaseException) -> str:
    """An exception's message without object reprs or memory addresses (rejects must be byte-identical across runs).

    PIL says "cannot identify image file <_io.BytesIO object at 0x7f...>"; this gives "cannot identify image file".
    """
    text = (str(err).splitlines() or [""])[0]
    text = _ADDRESS.sub("0x?", _OBJECT_REPR.sub("", text)).strip()
    return text or type(err).__name__


def encode_image_bytes(data: bytes, name: str) -> EncodedImage:
    """Check that ``data`` decodes completely; keep JPEG/PNG bytes as they are."""
    if not data:
        raise MediaError("unreadable_image", f"{name}: empty file")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # full decode: raises on truncated data
            height, width = img.height, img.width
            fmt = sniff_format(data)
            if fmt is None:
                buf = io.BytesIO()
                img.save(buf, format="PNG")
                data, fmt = buf.getvalue(), "png"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise MediaError("unreadable_image", f"{name}: cannot decode image ({stable_error_text(err)})") from None
    return EncodedImage(data=data, format=fmt, height=height, width=width)


def resolve_inside(raw: Path, relative: str) -> Path:
    """Join a path from an annotation file to the raw folder, refusing escapes."""
    if not relative or not relative.strip():
        raise MediaError("missing_image", "empty image path")
    if "\x00" in relative:
        raise MediaError("path_escapes_raw", f"{relative!r}: image path holds a NUL character")
    candidate = raw / relative
    if Path(relative).is_absolute() or not is_within(raw, candidate):
        raise MediaError("path_escapes_raw", f"{relative}: image path leaves the raw folder {raw}")
    return candidate


def read_image(raw: Path, relative: str) -> EncodedImage:
    """Read and check the image at ``relative`` inside ``raw``."""
    path = resolve_inside(raw, relative)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise MediaError("missing_image", f"{relative}: no such image") from None
    except (IsADirectoryError, PermissionError, OSError) as err:
        raise MediaError("unreadable_image", f"{relative}: cannot read ({err.strerror or err})") from None
    return encode_image_bytes(data, relative)


class ImageCache:
    """Reads each image once per build: VQA sources ask many questions per image.

    Bounded (least recently used out), so a source with a million images does
    not keep them all in memory. ``check_files``: a hit is taken only while the
    file's size, times and inode are the ones it was read with (for a cache that
    outlives one build: :func:`unit_image_cache`).
    """

    def __init__(self, raw: Path, max_items: int = 1024, check_files: bool = False):
        self.raw = raw
        self.max_items = max_items
        self.check_files = check_files
        self._cache: OrderedDict[str, tuple[tuple | None, EncodedImage | MediaError]] = OrderedDict()

    def _signature(self, relative: str) -> tuple | None:
        if not self.check_files:
            return None
        try:
            st = resolve_inside(self.raw, relative).stat()
        except (MediaError, OSError):
            return None
        return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)

    def get(self, relative: str) -> EncodedImage:
        signature = self._signature(relative)
        entry = self._cache.get(relative)
        if entry is None or entry[0] != signature:
            try:
                hit = read_image(self.raw, relative)
            except MediaError as err:
                hit = err
            self._cache[relative] = (signature, hit)
            self._cache.move_to_end(relative)
            if len(self._cache) > self.max_items:
                self._cache.popitem(last=False)
        else:
            hit = entry[1]
            self._cache.move_to_end(relative)
        if isinstance(hit, MediaError):
            raise hit
        return hit


_UNIT_CACHES: OrderedDict[tuple[str, int], ImageCache] = OrderedDict()
# Image folders one process keeps at once: a worker builds one source at a time, and a long-lived Ray worker
# moves on to the next source's folder; 2 x 1024 images of about 100 KB bound what it holds.
_UNIT_CACHE_FOLDERS = 2


def unit_image_cache(raw: Path, max_items: int = 1024) -> ImageCache:
    """This process's cache for the images under ``raw``, kept across work units.

    A worker given many units of one source (64 VQA-RAD questions each) decodes
    each image once instead of once a unit: with a fresh cache a unit, the
    questions' 315 images were fully decoded about 11,000 times in a 17,984-row
    build, and 2 workers ran at a fifth of one process. Hits are checked against
    the file (``check_files``), so a worker that outlives a build never serves
    an image that changed since."""
    key = (str(Path(raw).resolve()), max_items)
    cache = _UNIT_CACHES.get(key)
    if cache is None:
        cache = _UNIT_CACHES[key] = ImageCache(raw, max_items, check_files=True)
        if len(_UNIT_CACHES) > _UNIT_CACHE_FOLDERS:
            _UNIT_CACHES.popitem(last=False)
    _UNIT_CACHES.move_to_end(key)
    return cache
