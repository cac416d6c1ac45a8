"""The captioner's input table: surgical video windows with the QA text of the frames they span.

Windows are not Samples (no conversation yet), so they get their own small
Arrow table, ``windows.arrow`` (IPC stream, one row per window), with a
``windows.json`` summary beside it. The app writes it (``omnivmed-data
windows``: omnivmed/caption_inputs.py drives the surgical builders); the
captioner reads it (rejection_sampling/clip_inputs.py). This module is the
contract between the two.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

WINDOWS_NAME = "windows.arrow"
WINDOWS_SUMMARY_NAME = "windows.json"

WINDOW_SCHEMA = pa.schema(
    [
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("video", pa.string(), nullable=False),
        pa.field("source_path", pa.string(), nullable=False),
        pa.field("frame_format", pa.string(), nullable=False),
        pa.field("frames", pa.list_(pa.binary()), nullable=False),
        pa.field("frame_indices", pa.list_(pa.int64()), nullable=False),
        pa.field("timestamps_s", pa.list_(pa.float64())),
        pa.field("fps", pa.float64()),
        pa.field(
            "qa",
            pa.list_(pa.struct([("frame", pa.int64()), ("question", pa.string()), ("answer", pa.string())])),
            nullable=False,
        ),
    ]
)


def read_caption_inputs(path: Path) -> pa.Table:
    """The windows table (memory-mapped)."""
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_stream(source).read_all()
