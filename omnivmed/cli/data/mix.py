"""Commands that mix staged sources by a recipe: mix, instruct-dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from omnivmed.cli.data.common import EngineOpt, WorkersOpt, check_engine_options, check_out_folder, console, fail, show_progress

RecipeArg = Annotated[Path, typer.Argument(help="A recipe YAML (e.g. manifests/omnivmed-instruct.yaml).", show_default=False)]
StagedOpt = Annotated[Path, typer.Option("--staged", help="Staged root: an entry NAME reads STAGED/NAME/manifest.json.")]
ManifestsOpt = Annotated[
    Path, typer.Option("--manifests", help="Folder that receives <name>.manifest.json (shard paths relative to it).")
]
TakeAllOpt = Annotated[
    bool, typer.Option("--take-all", help="A source holding fewer samples than asked gives all it has (reported) instead of failing.")
]
ProgressOpt = Annotated[
    Optional[bool], typer.Option("--progress/--no-progress", help="Show progress bars (default: when stderr is a terminal).")
]


def mix(
    recipe: RecipeArg,
    staged: StagedOpt = Path("staged"),
    out: Annotated[Optional[Path], typer.Option("--out", help="Output folder for shards and data card (default: out/<name>).")] = None,
    manifests: ManifestsOpt = Path("manifests"),
    take_all: TakeAllOpt = False,
    skip_missing: Annotated[
        bool, typer.Option("--skip-missing", help="Leave out entries whose staged manifest is absent (listed in the data card).")
    ] = False,
    max_shard_mb: Annotated[int, typer.Option("--max-shard-mb", min=1, help="Roll over to a new shard past this size.")] = 512,
    force: Annotated[bool, typer.Option("--force", help="Rewrite even when an up-to-date mix exists.")] = False,
    progress: ProgressOpt = None,
    engine: EngineOpt = "local",
    workers: WorkersOpt = 1,
) -> None:
    """Draw RECIPE's samples from the staged manifests into final shards, a manifest, a data card, figures and a preview.

    With --workers N or --engine ray the input shards are read by N workers; the outputs are the same bytes.
    """
    from omnivmed.data.mix import MixError, mix_and_publish, plan_mix
    from omnivmed.data.recipe import RecipeError, load_recipe
    from omnivmed.engines import EngineError
    from omnivmed.engines.stages import unit_mapper

    check_engine_options(engine, workers)
    try:
        loaded = load_recipe(recipe)
        if take_all:
            loaded = loaded.with_shortfall("take_all")
        plan = plan_mix(loaded, staged, skip_missing=skip_missing)
    except (RecipeError, MixError) as err:
        fail(str(err), code=2)
    from omnivmed.data.output import OutputBusy, output_lock

    target = check_out_folder(out or Path("out") / loaded.name)
    check_out_folder(manifests, "--manifests")
    show = show_progress() if progress is None else progress
    try:
        with output_lock(target):
            result = mix_and_publish(
                plan,
                target,
                manifests_dir=manifests,
                max_shard_bytes=max_shard_mb << 20,
                force=force,
                progress=show,
                map_units=unit_mapper(engine, workers, progress=show),
            )
    except (OutputBusy, EngineError) as err:
        fail(str(err), code=2)
    except MixError as err:
        fail(str(err), code=1)
    for p in plan.entries:
        line = f"  {p.entry.name}: {p.taken:,} of {p.available:,} {'/'.join(p.entry.splits)} samples"
        if p.shortfall:
            line += f" (asked for {p.wanted:,}: {p.shortfall:,} short, took all)"
        console.print(line, highlight=False, soft_wrap=True)
    for entry, why in plan.missing:
        console.print(f"  [yellow]left out[/] {entry.name}: {why}", highlight=False, soft_wrap=True)
    m = result.manifest
    state = "up to date, nothing rewritten" if result.reused else "mixed"
    console.print(
        f"{m.name}: {state}: {m.rows:,} samples in {len(m.shards)} shard{'' if len(m.shards) == 1 else 's'} (seed {m.seed}) -> "
        f"{result.published_path or result.manifest_path}; data card {target / 'README.md'}",
        highlight=False,
        soft_wrap=True,
    )
    if m.rows == 0:
        fail(f"{m.name}: the mix accepted no samples from {len(plan.entries)} staged source(s); check the recipe's counts and filters", code=1)


def instruct_dataset(
    recipe: Annotated[Path, typer.Option("--recipe", help="The recipe to make.")] = Path("manifests/omnivmed-instruct.yaml"),
    raw: Annotated[Path, typer.Option("--raw", help="Raw root: a recipe entry's build.raw folder lives under it.")] = Path("raw"),
    staged: StagedOpt = Path("staged"),
    out_root: Annotated[Path, typer.Option("--out-root", help="The mix goes to OUT_ROOT/<name>/.")] = Path("out"),
    manifests: ManifestsOpt = Path("manifests"),
    download: Annotated[
        bool, typer.Option("--download/--no-download", help="Download missing sources that are published openly (not gated).")
    ] = False,
    caption_endpoint: Annotated[
        Optional[str],
        typer.Option("--caption-endpoint", help="OpenAI-compatible endpoint for judged captions (or OMNIVMED_CAPTION_ENDPOINT)."),
    ] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Fail when a source of the recipe is missing instead of leaving it out.")] = False,
    take_all: TakeAllOpt = False,
    progress: ProgressOpt = None,
    engine: EngineOpt = "local",
    workers: WorkersOpt = 1,
) -> None:
    """Download, build, caption and mix RECIPE; with no source at hand, the embedded default. Verifies the result.

    --engine and --workers go to every build, windows and mix step; the outputs are the same bytes.
    """
    from omnivmed.data.mix import MixError
    from omnivmed.engines import EngineError
    from omnivmed.pipeline import PipelineConfig, PipelineError, instruct_dataset as run
    from omnivmed.data.recipe import RecipeError

    check_engine_options(engine, workers)
    config = PipelineConfig(
        recipe=recipe,
        raw_root=raw,
        staged_root=staged,
        out_root=out_root,
        manifests_dir=manifests,
        download=download,
        caption_endpoint=caption_endpoint,
        strict=strict,
        take_all=take_all,
        engine=engine,
        workers=workers,
    )
    try:
        report = run(config, progress=show_progress() if progress is None else progress, say=_say)
    except (RecipeError, MixError, PipelineError, EngineError) as err:
        fail(str(err), code=2)
    if report.missing:
        console.print(
            f"{len(report.missing)} source(s) of {report.recipe.name} are not at hand; see the lines above for how to get them.",
            highlight=False,
            soft_wrap=True,
        )


def _say(line: str) -> None:
    console.print(line, highlight=False, soft_wrap=True, markup=False)


def register(app: typer.Typer) -> None:
    app.command()(mix)
    app.command("instruct-dataset")(instruct_dataset)
