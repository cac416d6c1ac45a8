"""Join several built manifests into one, without copying shards.

Shard (and frame table) paths are rewritten relative to the new manifest's folder; counts are
summed; options, counters, rejects, duplicates and source cards are merged by
the same code as the mix's (:func:`omnivmed.data.output.merge_part`), under
each part's name; inputs are prefixed by their source.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from omnivmed.data.manifest import FrameFile, InputFile, Manifest, ShardInfo, SourceCard
from omnivmed.data.output import merge_part, settle_merge


def combine_manifests(name: str, manifest_paths: list[Path], out_path: Path) -> Manifest:
    out_dir = Path(out_path).parent.resolve()
    combined = Manifest(name=name)
    counts: dict[str, Counter] = {}
    rejects: Counter = Counter()
    cards: dict[str, SourceCard] = {}
    for path in manifest_paths:
        path = Path(path)
        part = Manifest.load(path)
        if part.schema_fingerprint != combined.schema_fingerprint:
            raise ValueError(f"{path}: built with schema {part.schema_version}, not {combined.schema_version}")
        base = path.parent.resolve()
        for shard in part.shards:
            rel = Path(os.path.relpath(base / shard.path, out_dir)).as_posix()
            combined.shards.append(ShardInfo(rel, shard.split, shard.rows, shard.bytes, shard.digest))
        for file in part.frame_table:  # the shards find their table themselves; listed so verify checks it
            rel = Path(os.path.relpath(base / file.path, out_dir)).as_posix()
            combined.frame_table.append(FrameFile(rel, file.frames, file.bytes, file.digest))
        for axis, values in part.counts.items():
            counts.setdefault(axis, Counter()).update(values)
        combined.inputs.extend(InputFile(f"{part.name}/{i.path}", i.bytes, i.sha256) for i in part.inputs)
        merge_part(combined, part, part.name, rejects, cards)
    combined.counts = {axis: dict(sorted(c.items())) for axis, c in counts.items()}
    settle_merge(combined, rejects, cards)
    combined.save(out_path)
    return combined
