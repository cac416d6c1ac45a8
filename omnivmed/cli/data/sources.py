"""Commands that fetch and build sources: download, build, build-embedded."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

# Only the registry's names at import: a builder module (and its decoders) loads when a command runs.
from omnivmed.builders import builder_names
from omnivmed.cli.data.common import (
    EngineOpt,
    WorkersOpt,
    check_engine_options,
    check_in_folder,
    check_out_folder,
    console,
    fail,
    show_progress,
)

SourceArg = Annotated[str, typer.Argument(help="Source name: " + ", ".join(builder_names()) + ".", show_default=False)]
ProgressOpt = Annotated[
    Optional[bool], typer.Option("--progress/--no-progress", help="Show progress bars (default: when stderr is a terminal).")
]


OptionOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--option",
        "-o",
        help="Builder setting KEY=VALUE (repeatable), e.g. -o preset=ct-lung; `omnivmed-data sources` lists them.",
        show_default=False,
    ),
]


class FramesLayout(str, Enum):
    per_shard = "per-shard"
    shared = "shared"


def _parse_options(pairs: list[str] | None) -> dict[str, str]:
    options = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            fail(f"--option {pair!r} is not KEY=VALUE", code=2)
        options[key.strip()] = value.strip()
    return options


def _builder(name: str, options: dict[str, str] | None = None):
    from omnivmed.builders import BuilderOptionError, get_builder

    try:
        return get_builder(name, options)
    except KeyError as err:
        fail(str(err.args[0]), code=2)
    except BuilderOptionError as err:
        fail(str(err), code=2)


def sources() -> None:
    """List the sources this version can build, with their licenses and builder options."""
    from omnivmed.builders import builder_class

    for name in builder_names():
        cls = builder_class(name)
        console.print(f"[bold]{name}[/]  {cls.info.license}  {cls.info.homepage}", highlight=False, soft_wrap=True)
        console.print(f"  {cls.info.description}", highlight=False, soft_wrap=True)
        for spec in cls.option_specs:
            console.print(f"  -o {spec.name}=...  (default {spec.default!r}) {spec.help}", highlight=False, soft_wrap=True)


def download(
    source: SourceArg,
    to: Annotated[Optional[Path], typer.Option("--to", help="Folder to download into (default: raw/<source>).")] = None,
    from_: Annotated[
        Optional[Path],
        typer.Option("--from", help="Adopt a local copy you already have instead of downloading (checked, then linked)."),
    ] = None,
    progress: ProgressOpt = None,
) -> None:
    """Download SOURCE from its published location (resumable, checksummed), or adopt a local copy with --from."""
    from omnivmed.builders import LayoutError
    from omnivmed.download import DownloadError, adopt_local, download_source

    builder = _builder(source)
    target = to or Path("raw") / source
    try:
        if from_ is not None:
            path = adopt_local(builder, from_, target)
            console.print(f"adopted {from_} as {path}")
        else:
            path = download_source(builder, target, progress=show_progress() if progress is None else progress)
            console.print(f"downloaded {source} into {path}")
    except (LayoutError, DownloadError) as err:
        fail(str(err), code=2)


def build(
    source: SourceArg,
    raw: Annotated[Path, typer.Option("--raw", help="The source's raw folder (as downloaded or your own copy).")],
    out: Annotated[Path, typer.Option("--out", help="Output folder for shards, manifest.json and rejects.jsonl.")],
    max_shard_mb: Annotated[int, typer.Option("--max-shard-mb", min=1, help="Roll over to a new shard past this size.")] = 512,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even when an up-to-date build exists.")] = False,
    frames: Annotated[
        FramesLayout,
        typer.Option(
            "--frames",
            help="per-shard: every shard self-contained (each distinct frame once per shard). shared: each distinct "
            "frame once for the whole output, in frame-table/, which the splits' shards reference (an image in "
            "train and test stored once).",
        ),
    ] = FramesLayout.per_shard,
    option: OptionOpt = None,
    progress: ProgressOpt = None,
    engine: EngineOpt = "local",
    workers: WorkersOpt = 1,
) -> None:
    """Build SOURCE from --raw into verified Arrow shards in --out.

    Exits 2 on a wrong layout, a busy or misplaced --out, or a bad --engine/--workers; 1 when nothing
    was accepted or a whole input file could not be read (the rest is kept and reported).
    """
    from omnivmed.build import NothingBuilt, failed_files, read_rejects, top_reasons, build_source
    from omnivmed.builders import LayoutError
    from omnivmed.data.output import OutputBusy
    from omnivmed.engines import EngineError

    check_engine_options(engine, workers)
    builder = _builder(source, _parse_options(option))
    check_in_folder(raw, "--raw")
    check_out_folder(out)
    try:
        result = build_source(
            builder,
            raw,
            out,
            max_shard_bytes=max_shard_mb << 20,
            force=force,
            progress=show_progress() if progress is None else progress,
            require_rows=True,
            engine=engine,
            workers=workers,
            shared_frames=frames is FramesLayout.shared,
        )
    except (LayoutError, OutputBusy, NotADirectoryError, EngineError) as err:
        fail(str(err), code=2)
    except NothingBuilt as err:
        fail(str(err), code=1)
    for warning in result.warnings:
        console.print(f"[yellow]note:[/] {warning}", highlight=False, soft_wrap=True)
    m = result.manifest
    state = "up to date, nothing rebuilt" if result.reused else "built"
    console.print(
        f"{source}: {state}: {m.rows:,} samples in {_shards(len(m.shards))}, "
        f"{m.duplicates_removed:,} duplicates removed, {sum(m.rejects.values()):,} rejected -> {result.manifest_path}",
        highlight=False,
        soft_wrap=True,
    )
    for reason, n in m.rejects.items():
        console.print(f"  rejected {reason}: {n:,} (see {out / (m.rejects_report or 'rejects.jsonl')})", highlight=False, soft_wrap=True)
    for key, n in m.counters.items():
        console.print(f"  {key.replace('_', ' ')}: {n:,}", highlight=False, soft_wrap=True)
    lost = failed_files(read_rejects(out, m))
    if lost:
        fail(f"{source}: {len(lost)} input file(s) could not be read, their records are missing: {top_reasons(lost)}", code=1)


def _shards(n: int) -> str:
    return f"{n:,} shard" + ("" if n == 1 else "s")


def windows(
    source: SourceArg,
    raw: Annotated[Path, typer.Option("--raw", help="The surgical source's raw folder.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder for windows.arrow, windows.json and the clip cache.")],
    step: Annotated[int, typer.Option("--step", min=1, help="Start a window every STEP frames of the video.")] = 25,
    option: OptionOpt = None,
    progress: ProgressOpt = None,
    engine: EngineOpt = "local",
    workers: WorkersOpt = 1,
) -> None:
    """Cut the videos of a surgical SOURCE into fixed-length windows for captioning, with their frames' QA text.

    With --workers N or --engine ray the videos are decoded and encoded by N workers; the outputs are the same bytes.
    """
    from omnivmed.builders import LayoutError
    from omnivmed.builders.surgical import SurgicalVqaBuilder
    from omnivmed.caption_inputs import write_caption_inputs
    from omnivmed.data.output import OutputBusy, output_lock
    from omnivmed.engines import EngineError
    from omnivmed.engines.windows import spread_windows

    check_engine_options(engine, workers)
    builder = _builder(source, _parse_options(option))
    if not isinstance(builder, SurgicalVqaBuilder):
        fail(f"{source} is not a surgical video source; windows come from cholec80_vqa, endovis18_vqa or psiava_vqa", code=2)
    check_in_folder(raw, "--raw")
    check_out_folder(out)
    show = show_progress() if progress is None else progress
    try:
        with output_lock(out):
            spread = spread_windows(builder, raw, out, step, engine=engine, workers=workers, progress=show)
            result = write_caption_inputs(builder, raw, out, step=step, progress=show, windows=spread)
    except (LayoutError, OutputBusy, EngineError) as err:
        fail(str(err), code=2)
    console.print(f"{source}: {result.windows:,} windows -> {result.path}", highlight=False, soft_wrap=True)
    for reason, n in result.rejects.items():
        console.print(f"  rejected {reason}: {n:,} (see {out / 'rejects.jsonl'})", highlight=False, soft_wrap=True)
    if result.windows == 0:
        reasons = ", ".join(f"{reason} {n:,}" for reason, n in sorted(result.rejects.items(), key=lambda kv: -kv[1])[:3])
        fail(f"{source}: no windows cut from {raw} ({reasons or 'no QA records with frames found'}); see {out / 'rejects.jsonl'}", code=1)


def build_embedded(
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("out/omnivmed-embedded"),
    data: Annotated[
        Optional[Path], typer.Option("--data", help="Folder holding the vendored samples (default: the clone's data/).")
    ] = None,
    progress: ProgressOpt = None,
) -> None:
    """Build the embedded default (real VQA-RAD + SLAKE samples shipped in data/) without network."""
    from omnivmed.builders import LayoutError
    from omnivmed.embedded import build_embedded as run

    try:
        manifest = run(out, data, progress=show_progress() if progress is None else progress)
    except (FileNotFoundError, LayoutError) as err:
        fail(str(err), code=2)
    console.print(f"{manifest.name}: {manifest.rows:,} samples -> {out / 'manifest.json'}; data card {out / 'README.md'}")


def register(app: typer.Typer) -> None:
    app.command()(sources)
    app.command()(download)
    app.command()(build)
    app.command()(windows)
    app.command("build-embedded")(build_embedded)
