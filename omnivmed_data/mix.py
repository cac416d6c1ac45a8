"""The mix stage: a recipe's draws from staged manifests, copied into the final shards.

Depends only on manifests and shards. Planning reads the staged manifests and
the small label columns of their shards (memory-mapped; frames are never
touched), checks that every source is there and holds what the recipe asks,
and draws row positions; only then is anything written. Copying streams each
input shard batch by batch (plain reads, so memory stays one batch deep
whatever the data's size), keeps the drawn rows in recipe order, and hands
them to the one shard writer. The same recipe and seed give the same bytes;
a re-run with nothing changed does nothing. The copy's reads can run on an
engine (``map_units``: the app's process pool or Ray), one input shard per
unit, taken back in recipe order: the same bytes again.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from omnivmed.data.batches import stream_batches
from omnivmed.data.draw import Stratum, allocate, draw
from omnivmed.data.fileio import write_if_changed
from omnivmed.data.filters import FilterError, FilterPass
from omnivmed.data.manifest import (
    InputFile,
    Manifest,
    ManifestError,
    ShardInfo,
    SourceCard,
    load_intact_manifest,
    shard_path,
)
from omnivmed.data.output import MANIFEST_NAME, REJECTS_NAME, OutputWriter, merge_part, settle_merge
from omnivmed.data.recipe import Recipe, RecipeEntry
from omnivmed.data.schema import SCHEMA_FINGERPRINT
from omnivmed.data.shards import DEFAULT_MAX_SHARD_BYTES, ShardSchemaError


class MixError(ValueError):
    """A recipe that cannot be mixed from what is staged; the message names the recipe, the source and why."""


class NothingStaged(MixError):
    """Not one of the recipe's sources is staged (a fresh clone)."""


@dataclass
class EntryPlan:
    entry: RecipeEntry
    manifest_path: Path
    manifest: Manifest
    available: int  # rows that pass the entry's split and task filters and its filter
    wanted: int  # what the recipe asks for
    strata: dict[Stratum, tuple[int, int]]  # (available, taken) per (task, modality)
    rows: np.ndarray = field(repr=False)  # drawn positions over the manifest's shards in order, ascending
    before_filter: int = 0  # rows of the entry's splits and tasks before its filter (== available without one)

    @property
    def taken(self) -> int:
        return int(len(self.rows))

    @property
    def shortfall(self) -> int:
        return max(0, self.wanted - self.available)


@dataclass
class MixPlan:
    recipe: Recipe
    entries: list[EntryPlan]
    missing: list[tuple[RecipeEntry, str]]  # entries left out (skip_missing) and why

    @property
    def rows(self) -> int:
        return sum(e.taken for e in self.entries)


@dataclass(frozen=True)
class MixResult:
    manifest_path: Path  # out/<name>/manifest.json
    published_path: Path | None  # manifests/<name>.manifest.json
    manifest: Manifest
    reused: bool


# --- planning -------------------------------------------------------------------


def plan_mix(recipe: Recipe, staged_root: Path, *, skip_missing: bool = False) -> MixPlan:
    """Resolve every entry and draw its rows; raises MixError before any output is written."""
    staged_root = Path(staged_root)
    found, missing = [], []
    for entry in recipe.entries:
        path = entry.manifest_path(staged_root)
        problem = _staged_problem(path)
        if problem is None:
            found.append((entry, path))
        else:
            missing.append((entry, problem))
    if missing and not skip_missing:
        lines = "; ".join(f"sources.{e.name}: {why}" for e, why in missing)
        raise MixError(f"{recipe.origin}: {len(missing)} staged source(s) missing: {lines}")
    if not found:
        raise NothingStaged(f"{recipe.origin}: none of its {len(recipe.entries)} staged sources is present")

    resolved = [_plan_entry(entry, path) for entry, path in found]
    plans = [p for p, _ in resolved]
    short = [p for p in plans if p.shortfall]
    if short and recipe.on_shortfall == "fail":
        lines = "; ".join(
            f"sources.{p.entry.name} asks for {p.wanted:,} {'/'.join(p.entry.splits)} samples"
            f"{_task_words(p.entry)}, {p.manifest_path} has {p.available:,}: short by {p.shortfall:,}"
            for p in short
        )
        raise MixError(f"{recipe.origin}: {lines} (on_shortfall: take_all, or --take-all, takes what there is)")
    for p, members in resolved:
        counts = allocate({k: a for k, (a, _) in p.strata.items()}, min(p.wanted, p.available), recipe.balance)
        p.strata = {k: (a, counts[k]) for k, (a, _) in p.strata.items()}
        p.rows = draw(members, counts, seed=recipe.seed, entry=p.entry.name)
    return MixPlan(recipe, plans, missing)


def _staged_problem(path: Path) -> str | None:
    if not path.is_file():
        return f"no manifest at {path}"
    try:
        manifest = Manifest.load(path)
    except ManifestError as err:
        return str(err)
    if manifest.schema_fingerprint != SCHEMA_FINGERPRINT:
        return f"{path} was built with schema {manifest.schema_version}; rebuild it"
    for shard in manifest.shards:
        file = shard_path(path, shard)
        if not file.is_file():
            return f"{path}: shard {shard.path} is missing"
        if file.stat().st_size != shard.bytes:
            return f"{path}: shard {shard.path} is {file.stat().st_size} bytes, the manifest says {shard.bytes}"
    return None


def _task_words(entry: RecipeEntry) -> str:
    words = f" of task {'/'.join(entry.tasks)}" if entry.tasks else ""
    return words + (f" passing its filter ({entry.filter.describe()})" if entry.filter else "")


def _plan_entry(entry: RecipeEntry, path: Path) -> tuple[EntryPlan, dict[Stratum, np.ndarray]]:
    manifest = Manifest.load(path)
    members, before_filter = _pool(path, manifest, entry)
    available = sum(len(v) for v in members.values())
    plan = EntryPlan(
        entry=entry,
        manifest_path=path,
        manifest=manifest,
        available=available,
        wanted=entry.take.wanted(available),
        strata={k: (len(v), 0) for k, v in sorted(members.items())},
        rows=np.zeros(0, dtype=np.int64),
        before_filter=before_filter,
    )
    return plan, members


def _pool(path: Path, manifest: Manifest, entry: RecipeEntry) -> tuple[dict[Stratum, np.ndarray], int]:
    """Positions (over the manifest's shards in order) of the rows the entry may draw, by stratum, and
    how many rows of the entry's splits and tasks there were before its ``filter``.

    Batches are read one at a time (not memory-mapped: touching a few columns of every batch of a
    mapped file faults in most of its pages, so resident memory would grow with the shard).
    """
    parts: dict[Stratum, list[np.ndarray]] = {}
    offset = 0
    splits = pa.array(entry.splits)
    tasks = pa.array(entry.tasks) if entry.tasks else None
    rows_filter = FilterPass(entry.filter, str(path)) if entry.filter else None
    before = 0
    for shard in manifest.shards:
        for batch in _checked_batches(shard_path(path, shard)):
            mask = pc.is_in(batch.column("split"), value_set=splits)
            if tasks is not None:
                mask = pc.and_(mask, pc.is_in(batch.column("task"), value_set=tasks))
            mask = mask.to_numpy(zero_copy_only=False)
            before += int(mask.sum())
            if rows_filter is not None:
                mask = rows_filter.mask(batch, mask)
            positions = np.flatnonzero(mask) + offset
            offset += batch.num_rows
            if not len(positions):
                continue
            keep = pa.array(mask)
            keys = pc.binary_join_element_wise(
                pc.filter(batch.column("task"), keep), pc.filter(batch.column("modality"), keep), "\x1f"
            ).dictionary_encode()
            codes = keys.indices.to_numpy(zero_copy_only=False)
            for code, key in enumerate(keys.dictionary.to_pylist()):
                task, modality = key.split("\x1f")
                parts.setdefault((task, modality), []).append(positions[codes == code])
    if rows_filter is not None:
        try:
            rows_filter.check()
        except FilterError as err:
            raise MixError(str(err)) from None
    return {k: np.concatenate(v) for k, v in parts.items()}, before


# --- writing --------------------------------------------------------------------


def run_mix(
    plan: MixPlan,
    out: Path,
    *,
    manifests_dir: Path | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    force: bool = False,
    progress: bool = True,
    map_units: UnitMapper | None = None,
) -> MixResult:
    """Write the drawn rows into ``out`` (shards + manifest.json) and publish ``manifests_dir/<name>.manifest.json``.

    ``map_units`` (the app's engine, e.g. a process pool) reads the input shards: it is called as
    ``map_units(read_drawn, units)`` over :func:`shard_draws` units and must give the results in unit
    order (the builtin ``map`` does). None: read here, one batch at a time. The bytes are the same.
    """
    out = Path(out)
    manifest_path = out / MANIFEST_NAME
    template = _manifest_template(plan)
    previous = None if force else _up_to_date(manifest_path, template)
    if previous is not None:
        published = _publish(previous, manifest_path, manifests_dir)
        return MixResult(manifest_path, published, previous, reused=True)

    bar = tqdm(total=plan.rows, desc=f"mix {plan.recipe.name}", unit="sample", disable=not progress)
    with OutputWriter(out, max_shard_bytes=max_shard_bytes) as writer:
        for row in _plan_rows(plan, map_units):
            writer.write_row(row)
            bar.update(1)
        bar.close()
        writer.finish(template)
    published = _publish(template, manifest_path, manifests_dir)
    return MixResult(manifest_path, published, template, reused=False)


def _checked_batches(path: Path) -> Iterator[pa.RecordBatch]:
    try:
        yield from stream_batches(path)
    except ShardSchemaError as err:
        raise MixError(str(err)) from None


@dataclass(frozen=True)
class ShardDraw:
    """A unit of the copy: one input shard and the drawn rows in it (ascending positions in the shard)."""

    path: Path
    rows: np.ndarray = field(repr=False)


# How an engine maps read_drawn over the units: results in unit order (the builtin map is one).
UnitMapper = Callable[[Callable[[ShardDraw], list[pa.RecordBatch]], list[ShardDraw]], Iterable[list[pa.RecordBatch]]]


def shard_draws(plan: EntryPlan) -> list[ShardDraw]:
    """The entry's shards that hold drawn rows, in shard order."""
    units, offset = [], 0
    for shard in plan.manifest.shards:
        lo, hi = np.searchsorted(plan.rows, [offset, offset + shard.rows])
        if hi > lo:
            units.append(ShardDraw(shard_path(plan.manifest_path, shard), plan.rows[lo:hi] - offset))
        offset += shard.rows
    return units


def _drawn_batches(unit: ShardDraw) -> Iterator[pa.RecordBatch]:
    """The unit's drawn rows in row order, one input batch in memory at a time."""
    start = 0
    for batch in _checked_batches(unit.path):
        a, b = np.searchsorted(unit.rows, [start, start + batch.num_rows])
        if b > a:
            yield batch.take(pa.array(unit.rows[a:b] - start))
        start += batch.num_rows


def read_drawn(unit: ShardDraw) -> list[pa.RecordBatch]:
    """The unit's drawn rows as record batches (what an engine's worker hands back)."""
    return list(_drawn_batches(unit))


def _plan_rows(plan: MixPlan, map_units: UnitMapper | None) -> Iterator[dict]:
    """Every drawn row in recipe order, read one shard at a time: here (lazily, one input batch in memory at
    a time) or by ``map_units``."""
    units = [unit for entry in plan.entries for unit in shard_draws(entry)]
    per_unit = (_drawn_batches(unit) for unit in units) if map_units is None else map_units(read_drawn, units)
    for batches in per_unit:
        for batch in batches:
            yield from batch.to_pylist()


def _manifest_template(plan: MixPlan) -> Manifest:
    """The mix's manifest without shards and counts (known once written): what an up-to-date check compares."""
    recipe = plan.recipe
    manifest = Manifest(name=recipe.name, recipe=recipe.file_name, recipe_sha256=recipe.sha256, seed=recipe.seed)
    cards: dict[str, SourceCard] = {}
    rejects: Counter = Counter()
    manifest.options.update({"recipe.stage": str(recipe.stage), "recipe.balance": recipe.balance, "recipe.on_shortfall": recipe.on_shortfall})
    for p in plan.entries:
        e, part = p.entry, p.manifest
        manifest.inputs.extend(InputFile(f"{e.name}/{s.path}", s.bytes, s.digest) for s in part.shards)
        manifest.options.update(
            {
                f"recipe.{e.name}.take": e.take.describe(),
                f"recipe.{e.name}.splits": ",".join(e.splits),
                f"recipe.{e.name}.tasks": ",".join(e.tasks) if e.tasks else "all",
                f"recipe.{e.name}.stage": str(e.stage),
                f"recipe.{e.name}.staged": part.name,
            }
        )
        manifest.counters.update({f"recipe.{e.name}.available": p.available, f"recipe.{e.name}.taken": p.taken})
        if p.shortfall:
            manifest.counters[f"recipe.{e.name}.shortfall"] = p.shortfall
        if e.filter is not None:
            manifest.options[f"recipe.{e.name}.filter"] = e.filter.describe()
            manifest.counters[f"recipe.{e.name}.before_filter"] = p.before_filter
        merge_part(manifest, part, e.name, rejects, cards)
    for e, why in plan.missing:
        manifest.options[f"recipe.{e.name}.left_out"] = why
    settle_merge(manifest, rejects, cards)
    return manifest


def _up_to_date(manifest_path: Path, template: Manifest) -> Manifest | None:
    fields = ("name", "recipe_sha256", "seed", "inputs", "options", "counters", "schema_fingerprint", "tool_version")
    return load_intact_manifest(manifest_path, lambda m: all(getattr(m, f) == getattr(template, f) for f in fields))


def _publish(manifest: Manifest, manifest_path: Path, manifests_dir: Path | None) -> Path | None:
    """The same manifest under ``manifests_dir/<name>.manifest.json``, shard paths relative to it."""
    if manifests_dir is None:
        return None
    manifests_dir = Path(manifests_dir)
    target = manifests_dir / f"{manifest.name}.manifest.json"
    manifests_dir.mkdir(parents=True, exist_ok=True)
    base = manifest_path.parent.resolve()
    rel = os.path.relpath(base, manifests_dir.resolve())
    shards = [ShardInfo(Path(rel, s.path).as_posix(), s.split, s.rows, s.bytes, s.digest) for s in manifest.shards]
    write_if_changed(target, replace(manifest, shards=shards).to_json().encode())
    return target


# --- mix + data card ------------------------------------------------------------


def reject_reports(plan: MixPlan) -> dict[str, Path]:
    """Each entry's rejects report (beside its staged manifest), for the data card's examples."""
    return {p.entry.name: p.manifest_path.parent / (p.manifest.rejects_report or REJECTS_NAME) for p in plan.entries}


def mix_and_publish(
    plan: MixPlan,
    out: Path,
    *,
    manifests_dir: Path | None = None,
    notes: list[str] | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    force: bool = False,
    progress: bool = True,
    map_units: UnitMapper | None = None,
) -> MixResult:
    """:func:`run_mix`, then the data card, stats.json, figures and preview beside the shards."""
    from omnivmed.data.datacard import CARD_NAME, STATS_NAME, publish
    from omnivmed.data.preview import PREVIEW_NAME

    result = run_mix(
        plan, out, manifests_dir=manifests_dir, max_shard_bytes=max_shard_bytes, force=force, progress=progress, map_units=map_units
    )
    card_files = [Path(out) / name for name in (CARD_NAME, STATS_NAME, PREVIEW_NAME)]
    if not (result.reused and all(f.is_file() for f in card_files)):
        publish(result.manifest_path, notes=notes, reject_reports=reject_reports(plan))
    return result
