"""``make instruct-dataset``: download (where allowed), build, caption (when an endpoint is set), mix, verify.

The recipe drives everything: each entry's ``build`` says which builder makes
its staged folder from which raw folder, ``caption`` which videos the
captioner reads. Steps that cannot run are said plainly (a source the user
lacks, with how to get it; captioning without an endpoint) and the mix takes
what is staged. With nothing staged at all (a fresh clone) it falls back to
the embedded default, which is itself a recipe mix with the full data card.

``engine`` and ``workers`` go to every build, windows and mix step (the same
bytes whatever they are); neither is written anywhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from omnivmed.builders import BuilderOptionError, LayoutError, builder_class, get_builder
from omnivmed.build import NothingBuilt, build_source
from omnivmed.data.manifest import verify_manifest
from omnivmed.data.output import OutputBusy
from omnivmed.embedded import EMBEDDED_NAME, mix_embedded
from omnivmed.data.mix import MixResult, NothingStaged, mix_and_publish, plan_mix
from omnivmed.data.recipe import Recipe, RecipeEntry, load_recipe
from omnivmed.engines import check_engine
from omnivmed.engines.stages import engine_session, unit_mapper

CAPTION_ENDPOINT_ENV = "OMNIVMED_CAPTION_ENDPOINT"


@dataclass(frozen=True)
class PipelineConfig:
    recipe: Path
    raw_root: Path = Path("raw")
    staged_root: Path = Path("staged")
    out_root: Path = Path("out")
    manifests_dir: Path | None = Path("manifests")
    download: bool = False  # fetch missing, non-gated sources from their published locations
    caption_endpoint: str | None = None
    strict: bool = False  # a missing source fails instead of being left out
    take_all: bool = False  # a shortfall takes all instead of failing
    engine: str = "local"  # where builds, windows and the mix run: local or ray (omnivmed.engines)
    workers: int = 1  # processes (local) or concurrent Ray tasks; 1 local worker is the plain path

    def __post_init__(self):
        check_engine(self.engine, self.workers)  # EngineError (one line) before any work


@dataclass
class PipelineReport:
    recipe: Recipe
    result: MixResult
    embedded: bool  # fell back to the embedded default
    missing: list[tuple[str, str]] = field(default_factory=list)  # (entry, how to get it)
    steps: list[str] = field(default_factory=list)


class PipelineError(RuntimeError):
    """A step that cannot go on; the message says which and why."""


def instruct_dataset(config: PipelineConfig, *, progress: bool = True, say: Callable[[str], None] = print) -> PipelineReport:
    with engine_session(config.engine, config.workers, progress=progress):  # one Ray for every step
        return _instruct_dataset(config, progress=progress, say=say)


def _instruct_dataset(config: PipelineConfig, *, progress: bool, say: Callable[[str], None]) -> PipelineReport:
    recipe = load_recipe(config.recipe)  # a bad recipe stops here, before any work
    if config.take_all:
        recipe = recipe.with_shortfall("take_all")
    steps: list[str] = []

    def note(line: str) -> None:
        steps.append(line)
        say(line)

    for entry in recipe.entries:
        if entry.build is not None:
            _download_and_build(entry, config, note, progress)
    for entry in recipe.entries:
        if entry.caption is not None:
            _caption(entry, config, note, progress, engine=config.engine, workers=config.workers)

    try:
        plan = plan_mix(recipe, config.staged_root, skip_missing=not config.strict)
    except NothingStaged:
        plan = None
    left_out = {e.name for e, _ in plan.missing} if plan is not None else {e.name for e in recipe.entries}
    missing = [(e.name, how_to_get(e, config, recipe)) for e in recipe.entries if e.name in left_out]
    for name, how in missing:
        note(f"missing: {name}: {how}")

    if plan is None:
        note(f"none of the {len(recipe.entries)} sources of {recipe.name} is staged: building the embedded default instead")
        result = mix_embedded(
            Path(config.out_root) / EMBEDDED_NAME,
            manifests_dir=config.manifests_dir,
            progress=progress,
            engine=config.engine,
            workers=config.workers,
        )
        embedded = True
    else:
        out = Path(config.out_root) / recipe.name
        result = mix_and_publish(
            plan, out, manifests_dir=config.manifests_dir, progress=progress, map_units=unit_mapper(config.engine, config.workers, progress=progress)
        )
        embedded = False
        for p in plan.entries:
            if p.shortfall:
                note(f"shortfall: {p.entry.name} asked for {p.wanted:,}, took all {p.available:,} ({p.shortfall:,} short)")
    problems = verify_manifest(result.manifest_path)
    if problems:
        raise PipelineError(f"{result.manifest_path}: verify found {len(problems)} problem(s): {problems[0]}")
    m = result.manifest
    state = "up to date, nothing redone" if result.reused else "mixed"
    note(f"{m.name}: {state}: {m.rows:,} samples -> {result.published_path or result.manifest_path}")
    shards = f"{len(m.shards)} shard{'' if len(m.shards) == 1 else 's'}"
    note(f"verify: OK {result.published_path or result.manifest_path}: {shards}, {m.rows:,} rows")
    note("by source: " + ", ".join(f"{k} {v:,}" for k, v in m.counts.get("source", {}).items()))
    note(f"data card: {result.manifest_path.parent / 'README.md'} (stats.json, figures/, preview.html beside it)")
    if embedded and config.manifests_dir is not None:
        stages = ", ".join(f"stage {n} {EMBEDDED_NAME}-stage{n}" for n in (1, 2))
        note(f"training: {stages} and stage 3 {m.name} are in {config.manifests_dir}: `omnivmed-train --shards {config.manifests_dir}/` runs all three")
    return PipelineReport(recipe, result, embedded, missing, steps)


def _download_and_build(entry: RecipeEntry, config: PipelineConfig, note: Callable[[str], None], progress: bool) -> None:
    spec = entry.build
    assert spec is not None
    raw = Path(config.raw_root) / spec.raw
    staged = Path(config.staged_root) / entry.staged
    try:
        builder = get_builder(spec.source, dict(spec.options))
    except KeyError:
        note(f"build: {entry.name}: this version has no builder {spec.source!r}; skipped")
        return
    except BuilderOptionError as err:
        raise PipelineError(f"{config.recipe}: sources.{entry.name}.build: {err}") from None
    if not raw.exists() and config.download and not builder.info.gated and (builder.info.downloads or builder.info.hf_repo):
        from omnivmed.download import DownloadError, download_source

        try:
            download_source(builder, raw, progress=progress)
            note(f"download: {spec.source} -> {raw}")
        except (DownloadError, LayoutError, OSError) as err:
            note(f"download: {spec.source} failed: {err}")
    if not raw.exists():
        return  # reported as missing after planning, with how to get it
    try:
        # require_rows: a build that accepted nothing writes no manifest, so the source stays "missing".
        result = build_source(builder, raw, staged, progress=progress, require_rows=True, engine=config.engine, workers=config.workers)
    except (LayoutError, NothingBuilt, OutputBusy, NotADirectoryError) as err:
        note(f"build: {entry.name}: {err}; skipped")
        return
    state = "up to date" if result.reused else "built"
    note(f"build: {entry.name}: {state}: {result.manifest.rows:,} samples -> {result.manifest_path}")


def caption_endpoint(config: PipelineConfig) -> str | None:
    return config.caption_endpoint or os.environ.get(CAPTION_ENDPOINT_ENV) or None


def _caption(
    entry: RecipeEntry, config: PipelineConfig, note: Callable[[str], None], progress: bool, *, engine: str = "local", workers: int = 1
) -> None:
    spec = entry.caption
    assert spec is not None
    endpoint = caption_endpoint(config)
    if endpoint is None:
        note(
            f"caption: {entry.name}: skipped, no endpoint configured (pass --caption-endpoint URL or set "
            f"{CAPTION_ENDPOINT_ENV}; a URL or a captioning config file); the mix uses {Path(config.staged_root) / entry.staged} if it is staged"
        )
        return
    raw = Path(config.raw_root) / spec.raw
    if not raw.exists():
        note(f"caption: {entry.name}: no {raw} to cut windows from; skipped")
        return
    from omnivmed.builders.surgical import SurgicalVqaBuilder
    from omnivmed.caption_inputs import builder_source_card, write_caption_inputs
    from omnivmed.engines.shared_cache import spread_for
    from omnivmed.engines.windows import spread_windows
    from omnivmed.rejection_sampling.config import default_config, load_config
    from omnivmed.rejection_sampling.preflight import PreflightError
    from omnivmed.rejection_sampling.run import caption_run

    builder = get_builder(spec.windows_of, dict(spec.options))
    if not isinstance(builder, SurgicalVqaBuilder):
        raise PipelineError(f"{config.recipe}: sources.{entry.name}.caption: {spec.windows_of} is not a surgical video source")
    windows_out = Path(config.staged_root) / f"{entry.staged}-windows"
    spread = spread_windows(builder, raw, windows_out, spec.step, engine=engine, workers=workers, progress=progress)
    windows = write_caption_inputs(builder, raw, windows_out, step=spec.step, progress=progress, windows=spread)
    # The endpoint is a URL (the paper's judges on one server) or a captioning config file.
    settings = load_config(Path(endpoint)) if Path(endpoint).is_file() else default_config(endpoint)
    staged = Path(config.staged_root) / entry.staged
    try:
        result = caption_run(
            windows.path, staged, settings, progress=progress, source_card=builder_source_card, warn=lambda line: note(f"caption: {entry.name}: {line}"),
            spread=spread_for(engine, workers, progress=progress),
        )
    except PreflightError as err:
        note(f"caption: {entry.name}: {err}; skipped")
        return
    outputs = result.outputs
    # A run that accepted nothing writes no manifest: the mix then lists the entry as missing.
    rows = outputs.manifest.rows if outputs is not None and outputs.manifest_path is not None else 0
    note(f"caption: {entry.name}: {windows.windows:,} windows, {rows:,} judged captions accepted -> {staged}")
    for problem in result.problems():
        note(f"caption: {entry.name}: {problem}")


def how_to_get(entry: RecipeEntry, config: PipelineConfig, recipe: Recipe | None = None) -> str:
    """One line: how the user obtains and stages this entry's source."""
    staged = Path(config.staged_root) / entry.staged
    if entry.how_to_get:
        return entry.how_to_get
    builder_entry = next((e for e in (recipe.entries if recipe else ()) if e.staged == entry.staged and e.build), None)
    if entry.build is None and entry.caption is None and builder_entry is not None:
        return f"staged by sources.{builder_entry.name} ({staged}): " + how_to_get(builder_entry, config)
    if entry.caption is not None:
        return (
            f"judged captions of {entry.caption.windows_of} videos: `omnivmed-data windows {entry.caption.windows_of} "
            f"--raw {Path(config.raw_root) / entry.caption.raw} --out {staged}-windows`, then `omnivmed-data caption "
            f"--judge` into {staged}, or `make instruct-dataset CAPTION_ENDPOINT=URL`"
        )
    if entry.build is None:
        return f"stage it as {entry.manifest_path(config.staged_root)}"
    spec = entry.build
    raw = Path(config.raw_root) / spec.raw
    options = "".join(f" -o {k}={v}" for k, v in spec.options)
    build = f"`omnivmed-data build {spec.source} --raw {raw} --out {staged}{options}`"
    try:
        info = builder_class(spec.source).info
    except KeyError:
        return f"this version has no {spec.source!r} builder yet; stage {entry.manifest_path(config.staged_root)} yourself"
    if info.gated:
        get = f"gated: request access at {info.homepage}, then `omnivmed-data download {spec.source} --from YOUR_COPY --to {raw}`"
    elif info.downloads or info.hf_repo:
        get = f"`omnivmed-data download {spec.source} --to {raw}` (or `make instruct-dataset DOWNLOAD=1`)"
    else:
        get = f"bring your own copy ({info.homepage}): `omnivmed-data download {spec.source} --from YOUR_COPY --to {raw}`"
    return f"{get}, then {build}"
