"""Reading a shard batch by batch with memory that does not grow with the shard.

Memory-mapping is the right way to read a few rows at random, but a pass over
every batch that touches only some columns still faults in most of a mapped
file's pages (the kernel maps neighbouring pages on each fault), so resident
memory grows with the shard. Whole passes (the mix's pool and copy, the data
card's statistics) read batches with plain reads instead: one batch in memory
at a time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pyarrow as pa

from omnivmed.data.shards import ShardSchemaError, check_shard_schema, resolve_batch


def stream_batches(path: Path) -> Iterator[pa.RecordBatch]:
    """A shard's record batches as SCHEMA rows, read one at a time; refuses another schema (ShardSchemaError).

    A shard referencing a frame table gets each batch's frames from the (memory-mapped) table."""
    path = Path(path)
    with pa.OSFile(str(path)) as source:
        try:
            reader = pa.ipc.open_stream(source)
        except pa.ArrowInvalid as err:
            raise ShardSchemaError(f"{path}: not an Arrow IPC stream ({err})") from None
        frame_table = check_shard_schema(path, reader.schema)
        for batch in reader:
            yield resolve_batch(frame_table, batch, path)
