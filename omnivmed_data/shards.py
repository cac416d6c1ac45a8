"""Shard writer and reader: Arrow IPC *stream* files, one writer for the project.

Why the stream format: Hugging Face ``datasets`` memory-maps stream files
directly (``Dataset.from_file``), polars reads them with ``read_ipc_stream``
and pyarrow with ``ipc.open_stream``, so one file opens in all three without
conversion. Random access costs nothing extra: a memory-mapped stream is read
zero-copy, and record batches are kept small so one sample maps little.

Writes are atomic (temporary name, fsync, rename) and deterministic (same
samples in the same order give the same bytes). A shard rolls over to the next
file once it passes ``max_shard_bytes``.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pyarrow as pa

from omnivmed.data.fileio import fsync_dir, temporary_name
from omnivmed.data.manifest import ShardInfo
from omnivmed.data.schema import SCHEMA, SCHEMA_FINGERPRINT, Sample, schema_fingerprint_of

DEFAULT_MAX_SHARD_BYTES = 512 << 20
DEFAULT_BATCH_ROWS = 64
DEFAULT_BATCH_BYTES = 16 << 20


class ShardSchemaError(ValueError):
    """A shard written with another schema than this tool's."""


class _HashingFile:
    """File sink that hashes bytes as they are written, so no second read is needed.

    The file write stays inline (errors surface where they happen); sha256 runs
    on a helper thread, fed in write order, so hashing overlaps with building
    and writing the next batches (hashlib releases the GIL on large buffers).
    Small writes (IPC metadata, padding) are coalesced before they are queued.
    The queue holds references to the written objects (immutable ``bytes`` or
    Arrow buffers), so the data stays alive until it is hashed; the queue is
    bounded, so at most a few batches' worth are in flight.
    """

    _COALESCE = 64 << 10  # writes below this size are gathered into one chunk
    _QUEUE_ITEMS = 8

    def __init__(self, path: Path):
        self._file = open(path, "wb")
        self._hash = hashlib.sha256()
        self.size = 0
        self.closed = False
        self._small = bytearray()
        self._queue: queue.Queue = queue.Queue(maxsize=self._QUEUE_ITEMS)
        self._error: BaseException | None = None
        self._cancelled = False
        self._thread = threading.Thread(target=self._hash_loop, name="shard-sha256", daemon=True)
        self._thread.start()

    def _hash_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._cancelled or self._error is not None:
                continue
            try:
                self._hash.update(item)
            except BaseException as err:  # noqa: BLE001 - re-raised in the writing thread
                self._error = err

    def _push_small(self) -> None:
        if self._small:
            self._queue.put(bytes(self._small))
            self._small.clear()

    def write(self, data) -> int:
        if self._error is not None:
            raise self._error
        view = memoryview(data)
        n = view.nbytes
        written = self._file.write(view)
        self.size += n
        if n < self._COALESCE:
            self._small += view
            if len(self._small) >= self._COALESCE:
                self._push_small()
        else:
            self._push_small()
            # Keep the object itself: bytes are immutable and an Arrow buffer
            # owns (or shares ownership of) its memory.
            self._queue.put(data)
        return written

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        # pyarrow's writer may close us; the real close (with fsync) is finish().
        pass

    def _stop_hashing(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def finish(self) -> str:
        self._push_small()
        # fsync waits on the disk while the helper finishes hashing.
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._stop_hashing()
        if self._error is not None:
            raise self._error
        self.closed = True
        return self._hash.hexdigest()

    def abort(self) -> None:
        self._cancelled = True
        self._small.clear()
        self._stop_hashing()
        if not self._file.closed:
            self._file.close()


@dataclass
class _OpenShard:
    final_path: Path
    tmp_path: Path
    sink: _HashingFile
    writer: pa.ipc.RecordBatchStreamWriter
    rows: int = 0


@dataclass
class _SplitStream:
    split: str
    index: int = 0
    shard: _OpenShard | None = None
    pending: list[dict] = field(default_factory=list)
    pending_bytes: int = 0


class ShardWriter:
    """Writes Samples into ``<out_dir>/<split>/<split>-NNNNN.arrow``.

    Use as a context manager; :meth:`close` returns the finished shards.
    Leaving the ``with`` block on an exception removes the temporary files and
    keeps every shard that was already complete.
    """

    def __init__(
        self,
        out_dir: Path,
        *,
        max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        batch_bytes: int = DEFAULT_BATCH_BYTES,
    ):
        self.out_dir = Path(out_dir)
        self.max_shard_bytes = max_shard_bytes
        self.batch_rows = batch_rows
        self.batch_bytes = batch_bytes
        self._streams: dict[str, _SplitStream] = {}
        self._finished: list[ShardInfo] = []

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
        stream.pending.append(row)
        stream.pending_bytes += sum(len(f) for f in row["frames"])
        if len(stream.pending) >= self.batch_rows or stream.pending_bytes >= self.batch_bytes:
            self._flush(stream)

    def close(self) -> list[ShardInfo]:
        for split in sorted(self._streams):
            stream = self._streams[split]
            self._flush(stream)
            self._finish_shard(stream)
        self._streams.clear()
        return sorted(self._finished, key=lambda s: s.path)

    def abort(self) -> None:
        for stream in self._streams.values():
            if stream.shard is not None:
                stream.shard.sink.abort()
                stream.shard.tmp_path.unlink(missing_ok=True)
                stream.shard = None
        self._streams.clear()

    def _flush(self, stream: _SplitStream) -> None:
        if not stream.pending:
            return
        batch = pa.RecordBatch.from_pylist(stream.pending, schema=SCHEMA)
        stream.pending = []
        stream.pending_bytes = 0
        shard = stream.shard or self._open_shard(stream)
        shard.writer.write_batch(batch)
        shard.rows += batch.num_rows
        if shard.sink.size >= self.max_shard_bytes:
            self._finish_shard(stream)

    def _open_shard(self, stream: _SplitStream) -> _OpenShard:
        final = self.out_dir / stream.split / f"{stream.split}-{stream.index:05d}.arrow"
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_name(final)
        sink = _HashingFile(tmp)
        writer = pa.ipc.new_stream(sink, SCHEMA)
        stream.shard = _OpenShard(final, tmp, sink, writer)
        return stream.shard

    def _finish_shard(self, stream: _SplitStream) -> None:
        shard = stream.shard
        if shard is None:
            return
        shard.writer.close()
        digest = shard.sink.finish()
        os.replace(shard.tmp_path, shard.final_path)
        fsync_dir(shard.final_path.parent)
        self._finished.append(
            ShardInfo(
                path=shard.final_path.relative_to(self.out_dir).as_posix(),
                split=stream.split,
                rows=shard.rows,
                bytes=shard.sink.size,
                sha256=digest,
            )
        )
        stream.shard = None
        stream.index += 1


def open_shard(path: Path) -> pa.Table:
    """Memory-map a shard as a zero-copy Table; refuse another schema."""
    path = Path(path)
    try:
        with pa.memory_map(str(path)) as source:
            table = pa.ipc.open_stream(source).read_all()
    except pa.ArrowInvalid as err:
        raise ShardSchemaError(f"{path}: not an Arrow IPC stream ({err})") from None
    # Fast path: an exact schema match (C++ comparison) needs no fingerprint text.
    if table.schema.equals(SCHEMA):
        return table
    found = schema_fingerprint_of(table.schema)
    if found != SCHEMA_FINGERPRINT:
        raise ShardSchemaError(f"{path}: schema fingerprint {found[:12]} is not this tool's {SCHEMA_FINGERPRINT[:12]}")
    return table


def iter_batches(path: Path) -> Iterator[pa.RecordBatch]:
    """Stream a shard batch by batch (memory-mapped: constant memory)."""
    table = open_shard(path)
    yield from table.to_batches()


def iter_samples(path: Path) -> Iterator[Sample]:
    for batch in iter_batches(path):
        for row in batch.to_pylist():
            yield Sample.from_row(row)
