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

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pyarrow as pa

from omnivmed.data.fileio import SHARD_HASH, file_digest, fsync_dir, temporary_name
from omnivmed.data.manifest import ShardInfo
from omnivmed.data.schema import SCHEMA, SCHEMA_FINGERPRINT, Sample, schema_fingerprint_of

DEFAULT_MAX_SHARD_BYTES = 512 << 20
DEFAULT_BATCH_ROWS = 64
DEFAULT_BATCH_BYTES = 16 << 20


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
class _OpenShard:
    final_path: Path
    tmp_path: Path
    sink: _ShardFile
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
        sink = _ShardFile(tmp)
        writer = pa.ipc.new_stream(sink.native, SCHEMA)
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
                digest=digest,
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
