"""Frames shared across a build's splits: one frame table that the split shards reference.

Self-contained shards (the default) store each distinct frame once per shard, so an
image that is in two splits (202 of VQA-RAD's 203 test images are train images) is
stored once in each split. ``--frames shared`` stores every distinct frame of an
output folder once::

    <out>/frame-table/frames-NNNNN.arrow   IPC streams of one column, ``frame`` (binary)
    <out>/<split>/<split>-NNNNN.arrow      rows whose ``frame_refs`` (list<int64>) are
                                           positions in the table (its files in name order)

A referencing shard names its table in its schema metadata (``omnivmed.frame_table``:
the folder, relative to the shard's own folder), so the shards of a combined manifest
find theirs. Every reader in this package (``open_shard``, ``map_shard``,
``stream_batches`` and what is built on them) turns the refs back into the schema's
``frames`` column, batch by batch: above that layer the rows are the same as from
self-contained shards. Reading a referencing shard with plain pyarrow or polars gives
the refs; ``omnivmed-data export --format hf`` writes self-contained files.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from omnivmed.data.schema import SCHEMA, schema_fingerprint_of

FRAME_TABLE_DIR = "frame-table"
FRAME_TABLE_KEY = b"omnivmed.frame_table"
FRAME_TABLE_SCHEMA = pa.schema([pa.field("frame", pa.binary(), nullable=False)], metadata={FRAME_TABLE_KEY: b"1"})
FRAMES_AT = SCHEMA.get_field_index("frames")
REFS_FIELD = pa.field("frame_refs", pa.list_(pa.int64()), nullable=False)
# Where a shard at <out>/<split>/ finds the table of its folder.
TABLE_FROM_SHARD = f"../{FRAME_TABLE_DIR}"


class FrameTableError(ValueError):
    """A frame table missing, unreadable, or too short for a shard's refs."""


def referencing_schema(table_dir: str = TABLE_FROM_SHARD) -> pa.Schema:
    """The on-disk schema of a shard whose frames live in the table at ``table_dir`` (relative to the shard)."""
    schema = SCHEMA.set(FRAMES_AT, REFS_FIELD)
    return schema.with_metadata({**SCHEMA.metadata, FRAME_TABLE_KEY: table_dir.encode()})


REFERENCING_FINGERPRINT = schema_fingerprint_of(referencing_schema())


def is_referencing(schema: pa.Schema) -> bool:
    return FRAME_TABLE_KEY in (schema.metadata or {}) and REFS_FIELD.name in schema.names


def table_folder(shard: Path, schema: pa.Schema) -> Path:
    return Path(os.path.normpath(Path(shard).parent / schema.metadata[FRAME_TABLE_KEY].decode()))


def frame_table_files(folder: Path) -> list[Path]:
    return sorted(Path(folder).glob("frames-*.arrow"))


class FrameTable:
    """A table's files, memory-mapped (zero-copy), as one sequence of frames."""

    def __init__(self, folder: Path, files: list[Path] | None = None):
        self.folder = Path(folder)
        files = frame_table_files(self.folder) if files is None else files
        if not files:
            raise FrameTableError(f"{self.folder}: no frame table (frames-*.arrow) for shards that reference one")
        chunks: list[pa.Array] = []
        for file in files:
            try:
                with pa.memory_map(str(file)) as source:
                    table = pa.ipc.open_stream(source).read_all()
            except (pa.ArrowInvalid, OSError) as err:
                raise FrameTableError(f"{file}: not a readable frame table ({err})") from None
            if not table.schema.equals(FRAME_TABLE_SCHEMA, check_metadata=False):
                raise FrameTableError(f"{file}: not a frame table (columns {table.schema.names})")
            chunks.extend(table.column("frame").chunks)
        self.chunks = chunks
        self._starts = np.cumsum([0, *(len(c) for c in chunks)])  # the first position of every chunk, then the end

    def __len__(self) -> int:
        return int(self._starts[-1])

    def take(self, positions: np.ndarray) -> pa.Array:
        """The frames at ``positions`` (ascending), copied out of their chunks only.

        Not ``ChunkedArray.take``: pyarrow 26 concatenates every chunk first, a copy of the whole table
        for each batch."""
        chunk_of = np.searchsorted(self._starts, positions, side="right") - 1
        parts = []
        for chunk in np.unique(chunk_of):
            local = positions[chunk_of == chunk] - self._starts[chunk]
            parts.append(self.chunks[chunk].take(pa.array(local, pa.int64())))
        return pa.concat_arrays(parts) if parts else pa.array([], pa.binary())

    def resolve(self, batch: pa.RecordBatch, origin: Path | str) -> pa.RecordBatch:
        """``batch`` (referencing schema) with its refs replaced by ``frames`` (SCHEMA): a dictionary of
        the batch's distinct frames, copied out of the table once each."""
        refs = batch.column(FRAMES_AT)
        flat = refs.flatten()
        offsets = pc.subtract(refs.offsets, refs.offsets[0]) if len(refs) else pa.array([0], pa.int32())
        if len(flat):
            wanted = np.unique(flat.to_numpy())  # ascending: the table is read in file order
            lowest, highest = int(wanted[0]), int(wanted[-1])
            if lowest < 0 or highest >= len(self):
                raise FrameTableError(
                    f"{origin}: frame ref {highest if highest >= len(self) else lowest} is outside "
                    f"the {len(self):,} frames of {self.folder}"
                )
            dictionary = self.take(wanted)
            indices = pa.array(np.searchsorted(wanted, flat.to_numpy()).astype(np.int32))
        else:
            dictionary, indices = pa.array([], pa.binary()), pa.array([], pa.int32())
        frames = pa.ListArray.from_arrays(offsets, pa.DictionaryArray.from_arrays(indices, dictionary))
        columns = list(batch.columns)
        columns[FRAMES_AT] = frames
        return pa.RecordBatch.from_arrays(columns, schema=SCHEMA)


_OPEN: dict[Path, tuple[tuple, FrameTable]] = {}


def open_frame_table(folder: Path) -> FrameTable:
    """The table at ``folder``, kept per process while its files are unchanged (a training worker opens
    every shard of a build; each maps the same table)."""
    folder = Path(folder)
    files = frame_table_files(folder)
    signature = tuple((f.name, st.st_size, st.st_mtime_ns, st.st_ino) for f in files for st in (f.stat(),))
    cached = _OPEN.get(folder)
    if cached is not None and cached[0] == signature:
        return cached[1]
    table = FrameTable(folder, files)
    if len(_OPEN) >= 4:
        _OPEN.pop(next(iter(_OPEN)))
    _OPEN[folder] = (signature, table)
    return table
