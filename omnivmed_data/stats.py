"""Counts over built shards, for ``omnivmed-data stats``.

Reads only the small string columns from the memory-mapped shards (frames
are never touched), so it is cheap on any size of data set.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from omnivmed.data.manifest import Manifest, shard_path
from omnivmed.data.shards import open_shard

STAT_COLUMNS = ("source", "split", "task", "modality", "visual_kind", "answer_type")


def label_frame(manifest_path: Path, manifest: Manifest | None = None) -> pl.DataFrame:
    """One row per sample with the label columns and the frame count."""
    manifest = manifest or Manifest.load(manifest_path)
    parts = []
    for shard in manifest.shards:
        table = open_shard(shard_path(manifest_path, shard))
        frame = pl.from_arrow(table.select(list(STAT_COLUMNS)))
        n_frames = pl.from_arrow(table.column("frames")).list.len().alias("n_frames")
        parts.append(frame.with_columns(n_frames))
    if not parts:
        return pl.DataFrame(schema={**{c: pl.String for c in STAT_COLUMNS}, "n_frames": pl.UInt32})
    return pl.concat(parts)


def count_by(frame: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    unknown = set(columns) - set(STAT_COLUMNS)
    if unknown:
        raise ValueError(f"cannot group by {sorted(unknown)}; choose from {', '.join(STAT_COLUMNS)}")
    return frame.group_by(columns).agg(pl.len().alias("samples"), pl.col("n_frames").sum().alias("frames")).sort(columns)
