"""Commands that read built manifests: verify, stats."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from omnivmed.cli.data.common import console, fail, manifest_file

if TYPE_CHECKING:
    from omnivmed.data.manifest import Manifest

ManifestArg = Annotated[
    Path, typer.Argument(help="A manifest.json written by build, build-embedded or mix, or the folder holding it.", show_default=False)
]


def _load(path: Path) -> Manifest:
    from omnivmed.data.manifest import Manifest, ManifestError

    try:
        return Manifest.load(path)
    except ManifestError as err:
        fail(str(err), code=2)


def verify(manifest: ManifestArg) -> None:
    """Check every shard of MANIFEST (present, size, digest, rows, schema) and its frame table, if it has one;
    exit 1 naming each bad file."""
    from omnivmed.data.manifest import verify_manifest

    manifest = manifest_file(manifest)
    loaded = _load(manifest)
    problems = verify_manifest(manifest, loaded)
    if problems:
        for line in problems:
            console.print(f"[red]FAIL[/] {line}", highlight=False, soft_wrap=True)
        fail(f"{manifest}: {len(problems)} problem(s) in {len(loaded.shards)} shard{'' if len(loaded.shards) == 1 else 's'}")
    shards = f"{len(loaded.shards)} shard{'' if len(loaded.shards) == 1 else 's'}"
    if loaded.frame_table:
        files = len(loaded.frame_table)
        frames = sum(f.frames for f in loaded.frame_table)
        shards += f" and a frame table ({files} file{'' if files == 1 else 's'}, {frames:,} frames)"
    console.print(f"OK {manifest}: {shards}, {loaded.rows:,} rows, schema {loaded.schema_version}", highlight=False, soft_wrap=True)


def stats(
    manifest: ManifestArg,
    by: Annotated[
        str,
        typer.Option("--by", help="Comma-separated columns to cross-tabulate (source, split, task, modality, visual_kind, answer_type)."),
    ] = "source,split,task",
) -> None:
    """Print counts of MANIFEST: per axis from the manifest, and a cross-table read from the shards."""
    from rich.table import Table

    from omnivmed.data.manifest import COUNT_AXES
    from omnivmed.data.stats import count_by, label_frame

    manifest = manifest_file(manifest)
    loaded = _load(manifest)
    summary = Table(title=f"{loaded.name}: {loaded.rows:,} samples, {len(loaded.shards)} shards")
    summary.add_column("axis")
    summary.add_column("value")
    summary.add_column("samples", justify="right")
    for axis in COUNT_AXES:
        for value, n in loaded.counts.get(axis, {}).items():
            summary.add_row(axis, value, f"{n:,}")
    summary.add_row("removed", "exact duplicates", f"{loaded.duplicates_removed:,}")
    for reason, n in loaded.rejects.items():
        summary.add_row("rejected", reason, f"{n:,}")
    console.print(summary)

    columns = [c.strip() for c in by.split(",") if c.strip()]
    try:
        table = count_by(label_frame(manifest, loaded), columns)
    except ValueError as err:
        fail(str(err), code=2)
    cross = Table(title="by " + ", ".join(columns))
    for column in table.columns:
        cross.add_column(column, justify="right" if column in ("samples", "frames") else "left")
    for row in table.iter_rows():
        cross.add_row(*[f"{v:,}" if isinstance(v, int) else str(v) for v in row])
    console.print(cross)


def register(app: typer.Typer) -> None:
    app.command()(verify)
    app.command()(stats)
