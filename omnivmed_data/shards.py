"""Shard writer and reader: Arrow IPC *stream* files, one writer for the project.

Why the stream format: Hugging Face ``datasets`` memory-maps stream files
directly (``Dataset.from_file``), polars reads them with ``read_ipc_stream``
and pyarrow with ``ipc.open_stream``, so one file opens in all three without
conversion. Random access costs nothing extra: a memory-mapped stream is read
zero-copy, and record batches are kept small so one sample maps little.

Writes are atomic (temporary name, fsync, rename) and deterministic (same
samples in the same order give the same bytes). A shard rolls over to the next
file once it holds about ``max_shard_bytes`` (distinct frames and text).

Frames are stored once per shard (schema 2): the ``frames`` column is
``list<dictionary<int32, binary>>`` over one dictionary of the shard's
distinct frames. Every reader decodes it to plain bytes: pyarrow
(``to_pylist``), polars (``List(Binary)``) and ``datasets``
(``List(Value("binary"))``).

With ``shared_frames`` the writer stores each distinct frame once for the whole
output folder instead, in a frame table the split shards reference
(frame_table.py); this module's readers resolve the references.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pyarrow as pa

from omnivmed.data.fileio import SHARD_HASH, file_digest, fsync_dir, temporary_name
from omnivmed.data.frame_table import (
    FRAME_TABLE_DIR,
    FRAME_TABLE_SCHEMA,
    REFERENCING_FINGERPRINT,
    FrameTable,
    FrameTableError,
    is_referencing,
    open_frame_table,
    referencing_schema,
    table_folder,
)
from omnivmed.data.manifest import FrameFile, ShardInfo
from omnivmed.data.schema import SCHEMA, SCHEMA_FINGERPRINT, Sample, schema_fingerprint_of

DEFAULT_MAX_SHARD_BYTES = 512 << 20
DEFAULT_BATCH_ROWS = 64


class ShardSchemaError(ValueError):
    """A shard written with another schema than this tool's."""


class _ShardFile:
    """The file a shard is written to, made durable and hashed when it is finished.

    Arrow writes straight into a native file (``pa.OSFile``: no Python call per
    buffer, as fast as a plain pyarrow writer). The digest is taken from the
    finished file, memory-mapped, while ``fsync`` waits on the disk on another
    thread: the hash uses CPU time the write would otherwise spend idle, so on
    a busy machine it costs almost nothing (a hash fed during the write
    competed with serialisation for the cores). It is also the digest of the
    bytes the file really holds. BLAKE3 by default, on one thread.
    """

    def __init__(self, path: Path, algorithm: str = SHARD_HASH):
        self.path = path
        self.algorithm = algorithm
        self._file = pa.OSFile(str(path), "wb")
        self._size = 0

    @property
    def native(self) -> pa.NativeFile:
        """What Arrow's writer writes to."""
        return self._file

    @property
    def size(self) -> int:
        return self._size if self._file.closed else self._file.tell()

    def finish(self) -> str:
        """Flush, fsync and hash (overlapped), close; the digest as ``"<algorithm>:<hex>"``."""
        self._file.flush()
        self._size = self._file.tell()
        errors: list[BaseException] = []

        def sync() -> None:
            try:
                os.fsync(self._file.fileno())
            except BaseException as err:  # noqa: BLE001 - re-raised in the writing thread
                errors.append(err)

        syncer = threading.Thread(target=sync, name="shard-fsync", daemon=True)
        syncer.start()
        try:
            digest = file_digest(self.path, self.algorithm, all_cores=False)
        finally:
            syncer.join()
        self._file.close()
        if errors:
            raise errors[0]
        return digest

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()


@dataclass
class _PendingShard:
    """One shard being gathered: its rows (frames replaced by positions) and its unique frames.

    Frames are stored once per shard: the ``frames`` column is a list of
    dictionary indices into one dictionary of the shard's distinct frames,
    written once before the shard's record batches (no delta dictionaries:
    polars does not read them). A shard is therefore gathered in memory
    (at most about ``max_shard_bytes``) and written when it is full.
    """

    rows: list[dict] = field(default_factory=list)
    positions: list[list[int]] = field(default_factory=list)
    index: dict[bytes, int] = field(default_factory=dict)
    frames: list[bytes] = field(default_factory=list)
    size: int = 0  # distinct frame bytes + text bytes: what the file will roughly hold


@dataclass
class _SplitStream:
    split: str
    index: int = 0
    shard: _PendingShard = field(default_factory=_PendingShard)


_NO_FRAMES = pa.schema([f for f in SCHEMA if f.name != "frames"])
_FRAMES_AT = SCHEMA.get_field_index("frames")
_ROW_OVERHEAD = 256  # bytes a row's labels and provenance take, roughly, besides its conversation
# A shard referencing a frame table holds text only, so size alone would gather a million rows (as Python
# objects, several GB) before rolling over: it also rolls over at this many rows.
SHARED_SHARD_ROWS = 65_536


class ShardWriter:
    """Writes Samples into ``<out_dir>/<split>/<split>-NNNNN.arrow``.

    Use as a context manager; :meth:`close` returns the finished shards.
    Leaving the ``with`` block on an exception removes the temporary files and
    keeps every shard that was already complete. A frame that occurs in several
    rows of a shard (an image asked about 7 times, a CT volume's slices under
    each of its questions) is stored once.
    """

    def __init__(
        self,
        out_dir: Path,
        *,
        max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        shared_frames: bool = False,
    ):
        self.out_dir = Path(out_dir)
        self.max_shard_bytes = max_shard_bytes
        self.batch_rows = batch_rows
        self._streams: dict[str, _SplitStream] = {}
        self._finished: list[ShardInfo] = []
        self._writing: Path | None = None
        self._table = _FrameTableWriter(self.out_dir, self._write_file, max_shard_bytes) if shared_frames else None
        self._schema = referencing_schema() if shared_frames else SCHEMA
        self.frame_files: list[FrameFile] = []  # the frame table's files, once closed (shared_frames)

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def write(self, sample: Sample) -> None:
        self.write_row(sample.to_row())

    def write_row(self, row: dict) -> None:
        """Append one row already in schema form (``Sample.to_row()``)."""
        stream = self._streams.get(row["split"])
        if stream is None:
            stream = self._streams[row["split"]] = _SplitStream(row["split"])
        shard = stream.shard
        if self._table is not None:
            positions = [self._table.add(frame) for frame in row["frames"]]
            shard.size += 8 * len(positions)
        else:
            positions = []
            for frame in row["frames"]:
                position = shard.index.get(frame)
                if position is None:
                    position = shard.index[frame] = len(shard.frames)
                    shard.frames.append(frame)
                    shard.size += len(frame)
                positions.append(position)
        rest = {k: v for k, v in row.items() if k != "frames"}
        shard.rows.append(rest)
        shard.positions.append(positions)
        shard.size += _ROW_OVERHEAD + sum(len(t.get("content") or "") for t in row.get("conversations") or ())
        if shard.size >= self.max_shard_bytes or (self._table is not None and len(shard.rows) >= SHARED_SHARD_ROWS):
            self._finish_shard(stream)

    def close(self) -> list[ShardInfo]:
        for split in sorted(self._streams):
            self._finish_shard(self._streams[split])
        self._streams.clear()
        if self._table is not None:
            self.frame_files = self._table.close()
        return sorted(self._finished, key=lambda s: s.path)

    def abort(self) -> None:
        if self._writing is not None:
            self._writing.unlink(missing_ok=True)
        self._streams.clear()

    def _batches(self, shard: _PendingShard) -> Iterator[pa.RecordBatch]:
        dictionary = pa.array(shard.frames, pa.binary())
        for start in range(0, len(shard.rows), self.batch_rows):
            rows = shard.rows[start : start + self.batch_rows]
            positions = shard.positions[start : start + self.batch_rows]
            offsets, flat = [0], []
            for p in positions:
                flat.extend(p)
                offsets.append(len(flat))
            if self._table is not None:  # positions are refs into the frame table
                values = pa.array(flat, pa.int64())
            else:
                values = pa.DictionaryArray.from_arrays(pa.array(flat, pa.int32()), dictionary)
            frames = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values)
            rest = pa.RecordBatch.from_pylist(rows, schema=_NO_FRAMES)
            columns = list(rest.columns)
            columns.insert(_FRAMES_AT, frames)
            yield pa.RecordBatch.from_arrays(columns, schema=self._schema)

    def _finish_shard(self, stream: _SplitStream) -> None:
        shard = stream.shard
        if not shard.rows:
            return
        final = self.out_dir / stream.split / f"{stream.split}-{stream.index:05d}.arrow"
        size, digest = self._write_file(final, self._schema, self._batches(shard))
        self._finished.append(
            ShardInfo(
                path=final.relative_to(self.out_dir).as_posix(),
                split=stream.split,
                rows=len(shard.rows),
                bytes=size,
                digest=digest,
            )
        )
        stream.shard = _PendingShard()
        stream.index += 1

    def _write_file(self, final: Path, schema: pa.Schema, batches: Iterator[pa.RecordBatch]) -> tuple[int, str]:
        """One IPC stream file, atomically: its size and digest."""
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_name(final)
        self._writing = tmp
        sink = _ShardFile(tmp)
        try:
            with pa.ipc.new_stream(sink.native, schema) as writer:
                for batch in batches:
                    writer.write_batch(batch)
            digest = sink.finish()
        except BaseException:
            sink.abort()
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, final)
        self._writing = None
        fsync_dir(final.parent)
        return sink.size, digest


class _FrameTableWriter:
    """The frame table of a ``shared_frames`` writer: each distinct frame once, numbered in first-seen order.

    Frames are known by a 16-byte BLAKE2b digest, so the index holds digests, not frames (an M3D build's
    distinct slices are tens of GB). A file is written whenever the frames gathered reach
    ``max_bytes``, and the last one on close.
    """

    BATCH_FRAMES = 64

    def __init__(self, out_dir: Path, write_file, max_bytes: int):
        self._out_dir = out_dir
        self._write_file = write_file  # ShardWriter._write_file: atomic, hashed, removed on abort
        self._max_bytes = max_bytes
        self._index: dict[bytes, int] = {}
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._files: list[FrameFile] = []

    def add(self, frame: bytes) -> int:
        key = hashlib.blake2b(frame, digest_size=16).digest()
        position = self._index.get(key)
        if position is None:
            position = self._index[key] = len(self._index)
            self._pending.append(frame)
            self._pending_bytes += len(frame)
            if self._pending_bytes >= self._max_bytes:
                self._flush()
        return position

    def close(self) -> list[FrameFile]:
        self._flush()
        return list(self._files)

    def _flush(self) -> None:
        if not self._pending:
            return
        final = self._out_dir / FRAME_TABLE_DIR / f"frames-{len(self._files):05d}.arrow"
        pending = self._pending
        batches = (
            pa.RecordBatch.from_arrays([pa.array(pending[i : i + self.BATCH_FRAMES], pa.binary())], schema=FRAME_TABLE_SCHEMA)
            for i in range(0, len(pending), self.BATCH_FRAMES)
        )
        size, digest = self._write_file(final, FRAME_TABLE_SCHEMA, batches)
        self._files.append(FrameFile(final.relative_to(self._out_dir).as_posix(), len(pending), size, digest))
        self._pending, self._pending_bytes = [], 0


@dataclass
class MappedShard:
    """A shard memory-mapped as it is on disk, and the way from its batches to the schema's rows.

    ``table`` holds the file's own columns (zero-copy): for a shard referencing a frame table, its
    frames are refs until :meth:`resolve` turns a batch (or a slice) into SCHEMA rows. Use it to read
    a few columns of every row, or some rows' frames, without copying a whole shard's frames.
    """

    path: Path
    table: pa.Table
    frame_table: FrameTable | None = None  # for a shard referencing one

    def resolve(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        return resolve_batch(self.frame_table, batch, self.path)

    def resolve_table(self, table: pa.Table) -> pa.Table:
        if self.frame_table is None:
            return table
        return pa.Table.from_batches([self.resolve(b) for b in table.to_batches()], schema=SCHEMA)


def resolve_batch(frame_table: FrameTable | None, batch: pa.RecordBatch, path: Path) -> pa.RecordBatch:
    """A record batch of the shard at ``path`` as SCHEMA rows (as it is, without a frame table)."""
    if frame_table is None:
        return batch
    try:
        return frame_table.resolve(batch, path)
    except FrameTableError as err:
        raise ShardSchemaError(str(err)) from None


def check_shard_schema(path: Path, schema: pa.Schema) -> FrameTable | None:
    """The frame table a shard of ``schema`` references (None for a self-contained shard); ShardSchemaError
    for a schema that is neither this tool's nor its referencing form."""
    # Fast path: an exact schema match (C++ comparison) needs no fingerprint text.
    if schema.equals(SCHEMA):
        return None
    found = schema_fingerprint_of(schema)
    if is_referencing(schema) and found == REFERENCING_FINGERPRINT:
        try:
            return open_frame_table(table_folder(path, schema))
        except (FrameTableError, OSError) as err:
            raise ShardSchemaError(f"{path}: {err}") from None
    if found != SCHEMA_FINGERPRINT:
        raise ShardSchemaError(f"{path}: schema fingerprint {found[:12]} is not this tool's {SCHEMA_FINGERPRINT[:12]}")
    return None


def map_shard(path: Path) -> MappedShard:
    """Memory-map a shard as it is on disk (zero-copy); refuse another schema."""
    path = Path(path)
    try:
        with pa.memory_map(str(path)) as source:
            table = pa.ipc.open_stream(source).read_all()
    except pa.ArrowInvalid as err:
        raise ShardSchemaError(f"{path}: not an Arrow IPC stream ({err})") from None
    return MappedShard(path, table, check_shard_schema(path, table.schema))


def open_shard(path: Path) -> pa.Table:
    """Memory-map a shard as a Table of SCHEMA rows; refuse another schema.

    Zero-copy for a self-contained shard; a shard referencing a frame table gets its frames copied out
    of the table (use :func:`map_shard` to resolve only the batches needed)."""
    mapped = map_shard(path)
    return mapped.resolve_table(mapped.table)


def iter_batches(path: Path) -> Iterator[pa.RecordBatch]:
    """Stream a shard batch by batch (memory-mapped: constant memory)."""
    table = open_shard(path)
    yield from table.to_batches()


def iter_samples(path: Path) -> Iterator[Sample]:
    for batch in iter_batches(path):
        for row in batch.to_pylist():
            yield Sample.from_row(row)
