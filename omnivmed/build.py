"""The build stage: one builder's raw folder into shards, a manifest and a rejects report.

It deduplicates builder output (first copy wins; builders yield held-out
splits first) and hands samples and rejects to the one output writer
(:mod:`omnivmed.data.output`), which counts, writes shards, ``rejects.jsonl``
and the manifest. A finished build whose inputs and shards are unchanged is
not redone. The output folder's lock is held for the whole build, so a second
build into the same ``--out`` stops with one line before touching anything.

With ``require_rows``, a build that accepted nothing writes its
``rejects.jsonl`` but no manifest (so nothing downstream takes it for a
staged source) and raises :class:`NothingBuilt` with the top reasons.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from omnivmed.builders.base import Builder
from omnivmed.data.fileio import sha256_file, sha256_folder
from omnivmed.data.manifest import InputFile, Manifest, SourceCard, load_intact_manifest
from omnivmed.data.output import MANIFEST_NAME, REJECTS_NAME, OutputWriter, Reject, output_lock, write_rejects
from omnivmed.data.shards import DEFAULT_MAX_SHARD_BYTES
from omnivmed.data.volume.dicom_privacy import redact_path
from omnivmed.engines import check_engine, ordered_items


class NothingBuilt(ValueError):
    """Inputs were present but no sample was accepted; the message gives the top reasons and counts."""


def top_reasons(rejects: list[Reject], limit: int = 3) -> str:
    """'malformed_json 2 (e.g. train.json: not valid JSON ...); missing_image 1 (...)', most frequent first."""
    counts = Counter(r.reason for r in rejects)
    first: dict[str, Reject] = {}
    for r in rejects:
        first.setdefault(r.reason, r)
    parts = [f"{reason} {n:,} (e.g. {first[reason].detail})" for reason, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]]
    more = len(counts) - limit
    return "; ".join(parts) + (f"; and {more} more reason(s)" if more > 0 else "")


FILE_FAILURES = frozenset({"malformed_json", "malformed_csv", "malformed_parquet", "unreadable_zip"})


def failed_files(rejects: list[Reject]) -> list[Reject]:
    """Rejects of a whole input file, or of its rest from a break on (unreadable, malformed): its records were lost."""
    return [r for r in rejects if r.record == "-" or r.reason in FILE_FAILURES]


def read_rejects(out: Path, manifest: Manifest) -> list[Reject]:
    """The rejects report of a finished build (empty when it has none or it cannot be read)."""
    import json

    path = Path(out) / (manifest.rejects_report or REJECTS_NAME)
    if not manifest.rejects or not path.is_file():
        return []
    rejects = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            d = json.loads(line)
            rejects.append(Reject(str(d["file"]), str(d["record"]), str(d["reason"]), str(d["detail"])))
        except (ValueError, KeyError, TypeError):
            continue
    return rejects


@dataclass(frozen=True)
class BuildResult:
    manifest_path: Path
    manifest: Manifest
    reused: bool  # True when an up-to-date build was found and nothing was redone
    warnings: tuple[str, ...] = ()  # e.g. an input that differs from the published release


def differences_from_published(builder: Builder, inputs: list[InputFile]) -> tuple[str, ...]:
    """Inputs whose checksum is not the one of the official release we checked."""
    known = dict(builder.info.known_sha256)
    return tuple(
        f"{i.path}: sha256 {i.sha256[:12]}... differs from the published release's {known[i.path][:12]}..."
        for i in inputs
        if i.path in known and known[i.path] != i.sha256
    )


def input_checksums(builder: Builder, raw: Path) -> list[InputFile]:
    """Checksums of the builder's inputs; a folder (a DICOM series) is one entry.

    Paths are scrubbed of DICOM UIDs (exports often name files and folders after them).
    """
    inputs = []
    for path in sorted(builder.input_files(raw), key=lambda p: p.relative_to(raw).as_posix()):
        if path.is_dir():
            size, digest = sha256_folder(path)
        else:
            size, digest = path.stat().st_size, sha256_file(path)
        inputs.append(InputFile(redact_path(path.relative_to(raw).as_posix()), size, digest))
    return inputs


def _up_to_date(manifest_path: Path, inputs: list[InputFile], options: dict[str, str], shared_frames: bool) -> Manifest | None:
    return load_intact_manifest(
        manifest_path, lambda m: m.inputs == inputs and m.options == options and bool(m.frame_table) == shared_frames
    )


def build_source(
    builder: Builder,
    raw: Path,
    out: Path,
    *,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    force: bool = False,
    progress: bool = True,
    require_rows: bool = False,
    engine: str = "local",
    workers: int = 1,
    shared_frames: bool = False,
) -> BuildResult:
    """Build ``raw`` with ``builder`` into ``out``. Raises LayoutError before any work.

    ``shared_frames``: every distinct frame stored once for the whole output, in a frame table the
    split shards reference (an image in train and test is stored once; see frame_table.py), instead
    of once per self-contained shard.

    ``engine`` and ``workers`` choose where the builder's work runs
    (:mod:`omnivmed.engines`); the output is the same bytes for every choice.
    Raises :class:`~omnivmed.engines.EngineError` for a choice that cannot run.

    Raises :class:`~omnivmed.data.output.OutputBusy` when another process is writing ``out``.
    """
    raw, out = Path(raw), Path(out)
    check_engine(engine, workers)
    builder.check_layout(raw)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out}: is a file, not a folder; --out must be a folder (or a path that does not exist yet)")
    with output_lock(out):
        return _build_locked(
            builder, raw, out, max_shard_bytes=max_shard_bytes, force=force, progress=progress, require_rows=require_rows,
            engine=engine, workers=workers, shared_frames=shared_frames,
        )


def _build_locked(
    builder: Builder, raw: Path, out: Path, *, max_shard_bytes: int, force: bool, progress: bool, require_rows: bool,
    engine: str, workers: int, shared_frames: bool,
) -> BuildResult:
    inputs = input_checksums(builder, raw)
    warnings = differences_from_published(builder, inputs)
    manifest_path = out / MANIFEST_NAME
    if not force and (previous := _up_to_date(manifest_path, inputs, builder.recorded_options(), shared_frames)) is not None:
        return BuildResult(manifest_path, previous, reused=True, warnings=warnings)

    seen: set[str] = set()
    duplicates = 0
    rejects: list[Reject] = []
    bar = tqdm(
        total=builder.estimated_records(raw) if progress else None,
        desc=f"build {builder.info.name}",
        unit="rec",
        disable=not progress,
    )
    info = builder.info
    with OutputWriter(out, max_shard_bytes=max_shard_bytes, shared_frames=shared_frames) as writer:
        builder.begin(out)
        for item in ordered_items(builder, raw, engine=engine, workers=workers, progress=progress):
            bar.update(1)
            if isinstance(item, Reject):
                rejects.append(item)
                continue
            if item.id in seen:
                duplicates += 1
                continue
            seen.add(item.id)
            writer.write(item)
        bar.close()
        if require_rows and writer.rows == 0:
            writer.close_shards()
            write_rejects(out / REJECTS_NAME, rejects)
            why = top_reasons(rejects) if rejects else f"the inputs hold no {info.name} records"
            raise NothingBuilt(f"{info.name}: nothing accepted from {raw} ({why}); see {out / REJECTS_NAME}")
        manifest = Manifest(
            name=info.name,
            sources=[SourceCard(info.name, info.homepage, info.license, info.citation)],
            inputs=inputs,
            options=builder.recorded_options(),
            counters=dict(sorted(builder.counters().items())),
            duplicates_removed=duplicates,
        )
        writer.finish(manifest, rejects)
    return BuildResult(manifest_path, manifest, reused=False, warnings=warnings)
