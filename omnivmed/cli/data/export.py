"""The export command: shards into LLaVA, LLaMA-Factory (ShareGPT), ms-swift (Qwen-VL) training files or a Hub dataset folder."""

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
    hf = "hf"


def export(
    manifest: Annotated[Path, typer.Argument(help="A manifest.json written by build, build-embedded or mix, or the folder holding it.", show_default=False)],
    format_: Annotated[
        ExportFormat,
        typer.Option(
            "--format",
            help="llava (LLaVA / LLaVA-NeXT JSON), sharegpt (LLaMA-Factory JSON + dataset_info.json), qwen-vl (ms-swift JSONL) "
            "or hf (Hugging Face Hub dataset folder: Parquet + README, for load_dataset, polars, DuckDB).",
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
    push: Annotated[
        Optional[str],
        typer.Option(
            "--push",
            metavar="REPO_ID",
            help="With --format hf: upload the folder to this Hub dataset repo (needs `hf auth login` or HF_TOKEN).",
            show_default=False,
        ),
    ] = None,
    private: Annotated[bool, typer.Option("--private", help="With --push: create the repo private.")] = False,
    progress: Annotated[
        Optional[bool], typer.Option("--progress/--no-progress", help="Show progress bars (default: when stderr is a terminal).")
    ] = None,
) -> None:
    """Write MANIFEST's Samples as the files LLaVA, LLaMA-Factory or ms-swift train on, or as a Hugging Face Hub dataset."""
    from omnivmed.data.export import ExportError, export_manifest
    from omnivmed.data.manifest import ManifestError

    manifest = manifest_file(manifest)
    check_out_folder(out)
    show = show_progress() if progress is None else progress
    if format_ is ExportFormat.hf:
        _export_hf(manifest, out, split, push, private, show)
        return
    if push:
        fail(f"--push {push}: only --format hf uploads to the Hub (this is --format {format_.value})", code=2)
    try:
        result = export_manifest(manifest, out, format_.value, splits=split, media_root=media_root, progress=show)
    except (ExportError, ManifestError) as err:
        fail(str(err), code=2)
    for name, n in result.records.items():
        console.print(f"{out / name}: {n:,} records")
    console.print(f"{result.media_files:,} media files under {out / 'media'}")
    if result.system_turns_dropped:
        console.print(f"[yellow]note:[/] {result.system_turns_dropped:,} system turns dropped ({result.format} has no place for them)")


def _export_hf(manifest: Path, out: Path, split: Optional[list[str]], push: Optional[str], private: bool, progress: bool) -> None:
    from omnivmed.data.export import ExportError
    from omnivmed.data.hf_export import export_hf, push_export, require_token
    from omnivmed.data.manifest import ManifestError
    from omnivmed.data.shards import ShardSchemaError

    try:
        if push:
            require_token(push)  # before the export, not after it
        result = export_hf(manifest, out, splits=split, progress=progress)
    except (ExportError, ManifestError, ShardSchemaError) as err:
        fail(str(err), code=2)
    for config, splits in result.configs.items():
        counts = ", ".join(f"{name} {n:,}" for name, n in splits.items())
        console.print(f"config {config}: {counts}", highlight=False, soft_wrap=True)
    console.print(f"{len(result.files)} Parquet files, README.md -> {out}", highlight=False, soft_wrap=True)
    if push:
        try:
            url = push_export(out, push, private=private)
        except ExportError as err:
            fail(str(err), code=2)
        console.print(f"pushed -> {url}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command()(export)
