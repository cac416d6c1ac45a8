"""Rows of a memory-mapped record batch, read in place: no per-row Python object graph.

``Sample.from_row`` builds a row's whole object graph (every struct through
``to_pylist``: provenance, visual metadata, conversations) before the trainer
touches a pixel; it costs more than reading a small file. Here a record batch
is turned once into views of its Arrow offset buffers, and a row is a
:class:`RowView`: its frames are ``memoryview`` slices of the mapped binary
column (no copy; with dictionary-encoded frames, slices of the batch's
dictionary at the row's indices), its conversation turns are cut from the
string buffers only when the chat encoder asks for them. A RowView has what
``make_example`` reads (id, source, visual_kind, frames, conversations), so the
examples, tokens and pixels are the ones the Sample path gives.
"""

from __future__ import annotations

import pyarrow as pa

from omnivmed.data.schema import Turn


def _offsets(array: pa.Array) -> memoryview:
    """The (len + 1) int32 value offsets of a list/binary/string array, its slice offset applied.

    A memoryview of the mapped buffer: indexing it gives Python ints without a copy or a numpy scalar."""
    offsets = memoryview(array.buffers()[1]).cast("B").cast("i")
    return offsets[array.offset : array.offset + len(array) + 1]


def _indices(array: pa.Array) -> memoryview:
    """A dictionary array's int32 indices, its slice offset applied (zero-copy view)."""
    if array.type != pa.int32():
        raise ValueError(f"frames dictionary indices are {array.type}, expected int32")
    indices = memoryview(array.buffers()[1]).cast("B").cast("i")
    return indices[array.offset : array.offset + len(array)]


class _Strings:
    """A string/binary array as (offsets, data) for slicing without building Python objects for every row.

    ``copy_text``: the data buffer is copied once into ``bytes`` (short text columns: slicing and decoding
    ``bytes`` is faster than a view); frames stay a view of the mapped file."""

    def __init__(self, array: pa.Array, name: str, copy_text: bool = True):
        if array.null_count:
            raise ValueError(f"column {name} has {array.null_count} null values")
        self.offsets = _offsets(array)
        data = array.buffers()[2]
        if data is None:
            self.data = b""
        else:
            self.data = data.to_pybytes() if copy_text else memoryview(data)

    def bytes_at(self, i: int) -> memoryview:
        return self.data[self.offsets[i] : self.offsets[i + 1]]

    def text_at(self, i: int) -> str:
        return self.data[self.offsets[i] : self.offsets[i + 1]].decode()


class BatchColumns:
    """One record batch's columns the trainer reads, as offset views into the mapped buffers."""

    def __init__(self, batch: pa.RecordBatch):
        self.num_rows = batch.num_rows
        self.ids = _Strings(batch.column("id"), "id")
        self.sources = _Strings(batch.column("source"), "source")
        self.kinds = _Strings(batch.column("visual_kind"), "visual_kind")
        frames = batch.column("frames")
        self.frame_offsets = _offsets(frames)
        values = frames.values
        self.frame_index = None  # schema 2: frames dictionary-encoded (each distinct frame once per batch)
        if pa.types.is_dictionary(values.type):
            if values.null_count:
                raise ValueError(f"column frames has {values.null_count} null values")
            self.frame_index = _indices(values.indices)
            values = values.dictionary
        self.frames = _Strings(values, "frames", copy_text=False)
        conversations = batch.column("conversations")
        self.turn_offsets = _offsets(conversations)
        turns = conversations.values
        self.roles = _Strings(turns.field("role"), "conversations.role")
        self.contents = _Strings(turns.field("content"), "conversations.content")

    def row(self, i: int) -> "RowView":
        if not 0 <= i < self.num_rows:
            raise IndexError(f"row {i} outside a record batch of {self.num_rows}")
        first, last = self.frame_offsets[i], self.frame_offsets[i + 1]
        picks = range(first, last) if self.frame_index is None else self.frame_index[first:last]
        frames = tuple(self.frames.bytes_at(j) for j in picks)
        return RowView(self, i, self.ids.text_at(i), self.sources.text_at(i), self.kinds.text_at(i), frames)

    def turns(self, i: int) -> tuple[Turn, ...]:
        first, last = self.turn_offsets[i], self.turn_offsets[i + 1]
        return tuple(Turn(self.roles.text_at(j), self.contents.text_at(j)) for j in range(first, last))


class RowView:
    """One row as the trainer needs it; ``frames`` are zero-copy views, ``conversations`` are read on first use."""

    __slots__ = ("_columns", "_row", "id", "source", "visual_kind", "frames", "_turns")

    def __init__(self, columns: BatchColumns, row: int, id: str, source: str, visual_kind: str, frames: tuple):
        self._columns, self._row = columns, row
        self.id, self.source, self.visual_kind, self.frames = id, source, visual_kind, frames
        self._turns: tuple[Turn, ...] | None = None

    @property
    def conversations(self) -> tuple[Turn, ...]:
        if self._turns is None:
            self._turns = self._columns.turns(self._row)
        return self._turns
