"""Manifests in, a verified index of trainable rows out.

The trainer depends only on the manifest/shard contract: a manifest file (or
a folder of ``*.manifest.json`` / ``manifest.json`` files) lists shards with
sha256 and schema fingerprint; every shard is verified before training
starts, and a mismatch stops the run naming the file and the reason.
Per row the index keeps what the order and the stage filters need (source,
visual kind, task), read from Arrow columns without decoding any frame.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from omnivmed.data.manifest import Manifest, ManifestError, shard_path, verify_manifest
from omnivmed.data.schema import Sample
from omnivmed.data.shards import MappedShard, ShardSchemaError, map_shard
from omnivmed.trainer.data.rows import BatchColumns, RowView


class TrainDataError(ValueError):
    """Training data that cannot be used: names the file and the reason."""


def discover_manifests(path: Path) -> list[Path]:
    """One manifest file, or every ``*.manifest.json`` / ``manifest.json`` directly in a folder."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise TrainDataError(f"{path}: no such manifest file or folder")
    found = sorted({*path.glob("*.manifest.json"), *path.glob("manifest.json")})
    if not found:
        raise TrainDataError(f"{path}: folder holds no *.manifest.json or manifest.json")
    return found


RECIPE_STAGE = "recipe.stage"  # the option a recipe mix writes into its manifest (omnivmed-data mix)


def manifests_for_stage(path: Path, stage: int) -> list[Path]:
    """The manifests ``--shards PATH`` means for ``stage``.

    A file is taken as given. In a folder (``manifests/``), recipe mixes say
    which stage they are for (``recipe.stage`` in their options): when any
    manifest there says so, only those for this stage are used.
    """
    found = discover_manifests(path)
    if Path(path).is_file():
        return found
    stages = {}
    for manifest_path in found:
        try:
            stages[manifest_path] = Manifest.load(manifest_path).options.get(RECIPE_STAGE)
        except ManifestError as err:
            raise TrainDataError(str(err)) from None
    if not any(stages.values()):
        return found
    chosen = [p for p, s in stages.items() if s == str(stage)]
    if not chosen:
        declared = ", ".join(f"{p.name} (stage {s})" for p, s in stages.items() if s)
        raise TrainDataError(f"{path}: no manifest is for stage {stage}; found {declared}")
    return chosen


@dataclass
class SampleIndex:
    """Every selected row: which shard, which row, and the columns the stage filters use."""

    shards: list[Path]
    shard_of: np.ndarray  # int32 per row
    row_of: np.ndarray  # int32 per row
    source: np.ndarray  # str per row
    visual_kind: np.ndarray
    task: np.ndarray
    manifests: list[Manifest]

    def __len__(self) -> int:
        return len(self.shard_of)

    def select(self, keep: np.ndarray) -> "SampleIndex":
        return SampleIndex(
            self.shards, self.shard_of[keep], self.row_of[keep], self.source[keep],
            self.visual_kind[keep], self.task[keep], self.manifests,
        )  # fmt: skip


def load_index(paths: list[Path], split: str = "train", *, verify: bool = True) -> SampleIndex:
    """Verify the manifests' shards and index the rows of ``split``."""
    shards: list[Path] = []
    manifests: list[Manifest] = []
    seen: set[Path] = set()
    for manifest_path in paths:
        try:
            manifest = Manifest.load(manifest_path)
        except ManifestError as err:
            raise TrainDataError(str(err)) from None
        if verify:
            problems = verify_manifest(manifest_path, manifest)
            if problems:
                raise TrainDataError(f"{manifest_path}: " + "; ".join(problems))
        manifests.append(manifest)
        for shard in manifest.shards:
            path = shard_path(manifest_path, shard).resolve()
            if shard.split == split and path not in seen:  # a combined manifest may repeat a staged one's shards
                seen.add(path)
                shards.append(path)
    if not shards:
        raise TrainDataError(f"{', '.join(map(str, paths))}: no {split!r} shards")
    return index_shards(shards, manifests)


def index_shards(shards: list[Path], manifests: list[Manifest] = ()) -> SampleIndex:
    """Every row of ``shards`` (already verified, or not from a manifest: the loading benchmark's copies)."""
    columns: dict[str, list] = {"shard": [], "row": [], "source": [], "visual_kind": [], "task": []}
    for number, path in enumerate(shards):
        table = _open(path).table.select(["source", "visual_kind", "task"])
        columns["shard"].append(np.full(table.num_rows, number, dtype=np.int32))
        columns["row"].append(np.arange(table.num_rows, dtype=np.int32))
        for name in ("source", "visual_kind", "task"):
            columns[name].append(np.asarray(table.column(name).to_pylist(), dtype=object))
    cat = {k: np.concatenate(v) for k, v in columns.items()}
    return SampleIndex(
        list(shards), cat["shard"], cat["row"], cat["source"], cat["visual_kind"], cat["task"], list(manifests)
    )  # fmt: skip


def _open(path: Path) -> MappedShard:
    """The shard memory-mapped as on disk (frames of a frame-table shard are resolved batch by batch)."""
    try:
        return map_shard(path)
    except (ShardSchemaError, OSError) as err:
        raise TrainDataError(f"{path}: {err}") from None


class ShardReader:
    """Random access to rows; each process (DataLoader worker) memory-maps shards lazily, never pickles them.

    :meth:`row` is the training path: a :class:`RowView` read in place from the record batch's buffers
    (rows.py). :meth:`sample` builds the full :class:`Sample` (every column, through ``to_pylist``) for tools
    that want one.
    """

    def __init__(self, shards: list[Path]):
        self.shards = list(shards)
        self._batches: dict[int, tuple[list, list, list]] = {}

    def _locate(self, shard: int, row: int) -> tuple[tuple[list, list, list], int, int]:
        entry = self._batches.get(shard)
        if entry is None:
            mapped = _open(self.shards[shard])
            batches = _LazyBatches(mapped, mapped.table.to_batches())
            starts = list(itertools.accumulate((b.num_rows for b in batches.raw), initial=0))
            entry = self._batches[shard] = (batches, starts, [None] * len(batches.raw))
        starts = entry[1]
        if not 0 <= row < starts[-1]:
            raise TrainDataError(f"{self.shards[shard]}: row {row} outside its {starts[-1]} rows")
        number = bisect.bisect_right(starts, row) - 1
        return entry, number, row - starts[number]

    def row(self, shard: int, row: int) -> RowView:
        (batches, _, columns), number, offset = self._locate(shard, row)
        if columns[number] is None:
            try:
                columns[number] = BatchColumns(batches[number])
            except ValueError as err:
                raise TrainDataError(f"{self.shards[shard]}: record batch {number}: {err}") from None
        return columns[number].row(offset)

    def sample(self, shard: int, row: int) -> Sample:
        (batches, _, _), number, offset = self._locate(shard, row)
        return Sample.from_row(batches[number].slice(offset, 1).to_pylist()[0])

    def __getstate__(self):  # workers re-open their own memory maps
        return {"shards": self.shards, "_batches": {}}


class _LazyBatches:
    """A shard's record batches as SCHEMA rows, each resolved when first read: a shard that references a
    frame table copies only the frames of the batches training touches."""

    def __init__(self, mapped: MappedShard, raw: list):
        self.mapped, self.raw = mapped, raw
        self._resolved: list = [None] * len(raw)

    def __getitem__(self, number: int):
        batch = self._resolved[number]
        if batch is None:
            try:
                batch = self._resolved[number] = self.mapped.resolve(self.raw[number])
            except ShardSchemaError as err:
                raise TrainDataError(str(err)) from None
        return batch
