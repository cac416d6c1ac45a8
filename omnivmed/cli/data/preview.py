"""The preview command: a static HTML page of sampled Samples."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from omnivmed.cli.data.common import check_out_folder, console, fail, manifest_file


def preview(
    manifest: Annotated[Path, typer.Argument(help="A manifest.json written by build, mix or build-embedded, or the folder holding it.", show_default=False)],
    out: Annotated[Optional[Path], typer.Option("--out", help="HTML file to write (default: preview.html beside the manifest).")] = None,
    per_kind: Annotated[int, typer.Option("--per-kind", min=1, help="Samples shown per visual kind (image, volume, video, ...).")] = 4,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed of the sample draw (default: the manifest's seed, else 0).")] = None,
) -> None:
    """Write a self-contained HTML page (no server) showing sampled Samples of every visual kind in MANIFEST."""
    from omnivmed.data.manifest import ManifestError
    from omnivmed.data.preview import PREVIEW_NAME, write_preview
    from omnivmed.data.shards import ShardSchemaError

    manifest = manifest_file(manifest)
    target = out or manifest.parent / PREVIEW_NAME
    if target.is_dir():
        fail(f"--out {target}: is a folder; give the HTML file to write (e.g. {target / PREVIEW_NAME})", code=2)
    check_out_folder(target.parent)
    try:
        shown = write_preview(manifest, target, per_kind=per_kind, seed=seed)
    except (ManifestError, ShardSchemaError, FileNotFoundError) as err:
        fail(str(err), code=2)
    console.print(f"{shown} samples -> {target}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command()(preview)
