"""Stream the elements of a large JSON array, one at a time.

PubMedVision's JSON files hold 647K rows each (over a gigabyte of text);
``json.load`` would keep every row in memory at once. Here a sliding buffer
is decoded with ``JSONDecoder.raw_decode``: memory stays at about one chunk
plus one element, whatever the number of rows.

A file that breaks off or holds invalid JSON raises :class:`JsonStreamError`
after the elements before the break were yielded, so a builder keeps them and
rejects the rest with the element index.

Work units: :func:`json_rows_with_offsets` also gives each element's byte
offset in the file, and :func:`json_rows_at` reads a run of elements from such
an offset, so a unit names rows by (offset, count) instead of carrying them.
The file is read without newline translation, so characters map to bytes.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Iterator, Union

from omnivmed.builders.base import Reject

CHUNK_CHARS = 1 << 20
# An element longer than this is taken for a broken file, not read on to the end.
MAX_ELEMENT_CHARS = 64 << 20
_WHITESPACE = " \t\n\r"


class JsonStreamError(ValueError):
    """The file is not a well-formed JSON array from element ``index`` on."""

    def __init__(self, index: int, why: str):
        super().__init__(f"not valid JSON at element {index} ({why})")
        self.index = index
        self.why = why


class _Buffer:
    def __init__(self, handle, start_byte: int = 0):
        self.handle = handle
        self.text = ""
        self.pos = 0
        self.eof = False
        self.base_byte = start_byte  # byte offset in the file of text[0]

    def more(self) -> bool:
        """Append the next chunk; False at the end of the file."""
        if self.eof:
            return False
        chunk = self.handle.read(CHUNK_CHARS)
        if not chunk:
            self.eof = True
            return False
        if self.pos > CHUNK_CHARS:  # drop what was consumed, so the buffer stays small
            self.base_byte += len(self.text[: self.pos].encode("utf-8"))
            self.text, self.pos = self.text[self.pos :], 0
        self.text += chunk
        return True

    def byte_offset(self) -> int:
        """Byte offset in the file of the current position."""
        return self.base_byte + len(self.text[: self.pos].encode("utf-8"))

    def peek(self) -> str:
        """The next non-whitespace character ('' at the end of the file), not consumed."""
        while True:
            while self.pos < len(self.text) and self.text[self.pos] in _WHITESPACE:
                self.pos += 1
            if self.pos < len(self.text):
                return self.text[self.pos]
            if not self.more():
                return ""


def iter_json_array(path: Path) -> Iterator[object]:
    """Yield the elements of the JSON array in ``path`` in order.

    Raises :class:`JsonStreamError` (with how many elements came before) when
    the file is not a JSON array, breaks off or holds invalid JSON, and
    ``OSError``/``UnicodeDecodeError`` when it cannot be read as UTF-8.
    """
    for _, element in _elements(path, offsets=False):
        yield element


def _elements(path: Path, offsets: bool) -> Iterator[tuple[int, object]]:
    """(byte offset or -1, element) for every element (see :func:`iter_json_array`)."""
    decoder = json.JSONDecoder()
    with open(path, encoding="utf-8", newline="") as handle:
        buf = _Buffer(handle)
        first = buf.peek()
        if first != "[":
            found = "an empty file" if first == "" else f"{first!r}"
            raise JsonStreamError(0, f"expected a JSON array, found {found}")
        buf.pos += 1
        index = 0
        while True:
            char = buf.peek()
            if char == "]":
                buf.pos += 1
                break
            if index > 0:
                if char != ",":
                    raise JsonStreamError(index, "the file ends before the array closes" if char == "" else f"expected ',' or ']', found {char!r}")
                buf.pos += 1
                buf.peek()
            at = buf.byte_offset() if offsets else -1
            yield at, _decode_one(decoder, buf, index)
            index += 1
        if buf.peek() != "":
            raise JsonStreamError(index, "text after the closing ']'")


def json_rows_at(path: Path, start_byte: int, count: int) -> list:
    """``count`` elements from the one starting at ``start_byte`` (an offset :func:`json_rows_with_offsets` gave).

    Raises :class:`JsonStreamError` when they are not there (the file changed since it was split).
    """
    decoder = json.JSONDecoder()
    with open(path, "rb") as binary:
        binary.seek(start_byte)
        with io.TextIOWrapper(binary, encoding="utf-8", newline="") as handle:
            buf = _Buffer(handle, start_byte)
            rows = []
            for number in range(count):
                if number:
                    if buf.peek() != ",":
                        raise JsonStreamError(number, f"{path.name}: the file changed since it was split into work units")
                    buf.pos += 1
                buf.peek()
                rows.append(_decode_one(decoder, buf, number))
            return rows


def _decode_one(decoder: json.JSONDecoder, buf: _Buffer, index: int):
    while True:
        try:
            value, end = decoder.raw_decode(buf.text, buf.pos)
        except json.JSONDecodeError as err:
            if len(buf.text) - buf.pos < MAX_ELEMENT_CHARS and buf.more():
                continue  # the element may only be cut by the chunk boundary
            raise JsonStreamError(index, err.msg) from None
        # A number or literal that touches the buffer's end may continue in the next chunk.
        if end == len(buf.text) and buf.more():
            continue
        buf.pos = end
        return value


def json_rows(path: Path, raw: Path) -> Iterator[Union[tuple[int, object], Reject]]:
    """``(index, element)`` per element, then one Reject when the file breaks off or cannot be read.

    The Reject names the file relative to ``raw`` and the element where the
    trouble starts; the elements before it were already yielded.
    """
    for item in _rows(path, raw, offsets=False):
        yield item if isinstance(item, Reject) else item[:2]


def json_rows_with_offsets(path: Path, raw: Path) -> Iterator[Union[tuple[int, object, int], Reject]]:
    """As :func:`json_rows`, with each element's byte offset: ``(index, element, offset)``."""
    yield from _rows(path, raw, offsets=True)


def _rows(path: Path, raw: Path, offsets: bool) -> Iterator[Union[tuple[int, object, int], Reject]]:
    rel = path.relative_to(raw).as_posix()
    index = 0
    try:
        for index, (offset, element) in enumerate(_elements(path, offsets)):
            yield index, element, offset
    except JsonStreamError as err:
        kept = f"; the {err.index} rows before it were read" if err.index else ""
        yield Reject(rel, f"#{err.index}", "malformed_json", f"{rel}: {err}{kept}")
    except (OSError, UnicodeDecodeError) as err:
        why = err.strerror if isinstance(err, OSError) else str(err)  # an OSError's text holds the absolute path
        yield Reject(rel, "-", "malformed_json", f"{rel}: cannot read ({why})")
