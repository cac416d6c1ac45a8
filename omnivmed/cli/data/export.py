"""The export command: shards into LLaVA, LLaMA-Factory (ShareGPT) or ms-swift (Qwen-VL) training files."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from omnivmed.cli.data.common import check_out_folder, console, fail, manifest_file, show_progress


class ExportFormat(str, Enum):
    llava = "llava"
    sharegpt = "sharegpt"
    qwen_vl = "qwen-vl"


def export(
    manifest: Annotated[Path, typer.Argument(help="A manifest.json written by build, build-embedded or mix, or the folder holding it.", show_default=False)],
    format_: Annotated[
        ExportFormat,
        typer.Option(
            "--format",
            help="llava (LLaVA / LLaVA-NeXT JSON), sharegpt (LLaMA-Factory JSON + dataset_info.json) or qwen-vl (ms-swift JSONL).",
            case_sensitive=False,
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder for the annotation files and media/ (created if missing).")],
    split: Annotated[
        Optional[list[str]],
        typer.Option("--split", help="Export only this split (repeatable; default: every split of the manifest).", show_default=False),
    ] = None,
    media_root: Annotated[
        str,
        typer.Option("--media-root", help="Prefix for the media paths written into the JSON (default: relative to --out)."),
    ] = "",
    progress: Annotated[
        Optional[bool], typer.Option("--progress/--no-progress", help="Show progress bars (default: when stderr is a terminal).")
    ] = None,
) -> None:
    """Write MANIFEST's Samples as the conversation JSON and media files LLaVA, LLaMA-Factory or ms-swift train on."""
    from omnivmed.data.export import ExportError, export_manifest
    from omnivmed.data.manifest import ManifestError

    manifest = manifest_file(manifest)
    check_out_folder(out)
    try:
        result = export_manifest(
            manifest,
            out,
            format_.value,
            splits=split,
            media_root=media_root,
            progress=show_progress() if progress is None else progress,
        )
    except (ExportError, ManifestError) as err:
        fail(str(err), code=2)
    for name, n in result.records.items():
        console.print(f"{out / name}: {n:,} records")
    console.print(f"{result.media_files:,} media files under {out / 'media'}")
    if result.system_turns_dropped:
        console.print(f"[yellow]note:[/] {result.system_turns_dropped:,} system turns dropped ({result.format} has no place for them)")


def register(app: typer.Typer) -> None:
    app.command()(export)
