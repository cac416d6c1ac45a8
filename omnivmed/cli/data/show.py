"""The show command: one Sample in the terminal (or as a preview page), found by id or question id."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Annotated, Optional

import typer

from omnivmed.cli.data.common import check_out_folder, console, fail, manifest_file


def show(
    manifest: Annotated[Path, typer.Argument(help="A manifest.json written by build, build-embedded or mix, or the folder holding it.", show_default=False)],
    key: Annotated[str, typer.Argument(metavar="ID", help="A sample id (or an unambiguous prefix of one); with --question-id, the source's question id.", show_default=False)],
    question_id: Annotated[bool, typer.Option("--question-id", help="ID is the source's question id (provenance record_id, or its qid field).")] = False,
    source: Annotated[Optional[str], typer.Option("--source", help="Look only in this source (question ids repeat across sources).", show_default=False)] = None,
    html: Annotated[Optional[Path], typer.Option("--html", help="Also write a preview page of this sample to this HTML file.", show_default=False)] = None,
) -> None:
    """Print one sample of MANIFEST: labels, conversation, frames and provenance."""
    from omnivmed.data.lookup import SampleNotFound, find_sample
    from omnivmed.data.manifest import Manifest, ManifestError
    from omnivmed.data.shards import ShardSchemaError

    manifest = manifest_file(manifest)
    if html is not None:
        if html.is_dir():
            fail(f"--html {html}: is a folder; give the HTML file to write", code=2)
        check_out_folder(html.parent, "--html")
    try:
        found = find_sample(manifest, key, question_id=question_id, source=source)
    except (SampleNotFound, ManifestError, ShardSchemaError, FileNotFoundError) as err:
        fail(str(err), code=2)
    console.print(render(found.row, f"{found.shard} row {found.index}"))
    if html is not None:
        from omnivmed.data.preview import write_sample_page

        write_sample_page(Manifest.load(manifest), found.row, html)
        console.print(f"preview -> {html}", highlight=False, soft_wrap=True)


def _size(n: int) -> str:
    return f"{n:,} B" if n < 1024 else f"{n / 1024:.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.1f} MiB"


def frame_lines(row: dict) -> list[str]:
    """Frame count, format, pixel sizes (read from headers only) and byte sizes."""
    from PIL import Image

    frames = row["frames"]
    if not frames:
        return ["frames: none (text only)"]
    dims = []
    for data in frames:
        try:
            with Image.open(io.BytesIO(data)) as image:  # PIL reads the header only
                dims.append(f"{image.width}x{image.height}")
        except OSError:
            dims.append("undecodable")
    sizes = [len(f) for f in frames]
    shapes = ", ".join(dict.fromkeys(dims))
    lines = [
        f"frames: {len(frames)} {(row['frame_format'] or '?').upper()} ({shapes}), {_size(sum(sizes))} "
        f"(min {_size(min(sizes))}, max {_size(max(sizes))})"
    ]
    if len(frames) <= 8:
        lines += [f"  {i}: {d}, {_size(s)}" for i, (d, s) in enumerate(zip(dims, sizes))]
    return lines


def render(row: dict, where: str):
    """A rich renderable: labels, frames, the conversation turn by turn, provenance and visual metadata."""
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    labels = Text(
        f"source {row['source']} · split {row['split']} · task {row['task']} · modality {row['modality']} · "
        f"visual kind {row['visual_kind']}" + (f" · answer type {row['answer_type']}" if row["answer_type"] else "")
    )
    turns = [Panel(Text(t["content"]), title=t["role"], title_align="left", border_style=_ROLE_STYLE.get(t["role"], "white")) for t in row["conversations"]]
    prov = row["provenance"]
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("record id", prov["record_id"])
    table.add_row("raw paths", ", ".join(prov["raw_paths"]))
    table.add_row("license", prov["license"])
    table.add_row("source url", prov["source_url"])
    for kv in prov["fields"]:
        table.add_row(f"field {kv['key']}", kv["value"])
    for name, value in (row["visual_meta"] or {}).items():
        if value is not None:
            table.add_row(f"meta {name}", str(value))
    table.add_row("stored in", where)
    body = Group(labels, Text("\n".join(frame_lines(row))), *turns, Panel(table, title="provenance", title_align="left"))
    return Panel(body, title=f"sample {row['id']}", title_align="left")


_ROLE_STYLE = {"user": "blue", "assistant": "green", "system": "yellow"}


def register(app: typer.Typer) -> None:
    app.command()(show)
