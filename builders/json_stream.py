"""Stream the elements of a large JSON array, one at a time.

PubMedVision's JSON files hold 647K rows each (over a gigabyte of text);
``json.load`` would keep every row in memory at once. Here a sliding buffer
is decoded with ``JSONDecoder.raw_decode``: memory stays at about one chunk
plus one element, whatever the number of rows.

A file that breaks off or holds invalid JSON raises :class:`JsonStreamError`
after the elements before the break were yielded, so a builder keeps them and
rejects the rest with the element index.
"""

from __future__ import annotations

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
    def __init__(self, handle):
        self.handle = handle
        self.text = ""
        self.pos = 0
        self.eof = False

    def more(self) -> bool:
        """Append the next chunk; False at the end of the file."""
        if self.eof:
            return False
        chunk = self.handle.read(CHUNK_CHARS)
        if not chunk:
            self.eof = True
            return False
        if self.pos > CHUNK_CHARS:  # drop what was consumed, so the buffer stays small
            self.text, self.pos = self.text[self.pos :], 0
        self.text += chunk
        return True

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
    decoder = json.JSONDecoder()
    with open(path, encoding="utf-8") as handle:
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
            yield _decode_one(decoder, buf, index)
            index += 1
        if buf.peek() != "":
            raise JsonStreamError(index, "text after the closing ']'")


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
    rel = path.relative_to(raw).as_posix()
    try:
        for index, element in enumerate(iter_json_array(path)):
            yield index, element
    except JsonStreamError as err:
        kept = f"; the {err.index} rows before it were read" if err.index else ""
        yield Reject(rel, f"#{err.index}", "malformed_json", f"{rel}: {err}{kept}")
    except (OSError, UnicodeDecodeError) as err:
        why = err.strerror if isinstance(err, OSError) else str(err)  # an OSError's text holds the absolute path
        yield Reject(rel, "-", "malformed_json", f"{rel}: cannot read ({why})")
