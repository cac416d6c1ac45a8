"""The data card: README.md next to the shards, plus stats.json, figures and the preview page.

The README is rendered from the manifest (sources with licenses and
citations, counts along every axis, recipe and seed, what was rejected and
why) and, for a published set, from the statistics of
:mod:`omnivmed.data.card_stats`. Every file is written only when its bytes
change, so re-publishing an unchanged set touches nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from omnivmed.data.card_stats import CardStats, collect_stats
from omnivmed.data.fileio import atomic_write_bytes, write_if_changed
from omnivmed.data.manifest import COUNT_AXES, Manifest

STATS_NAME = "stats.json"
FIGURES_DIR = "figures"
CARD_NAME = "README.md"


@dataclass(frozen=True)
class RejectExample:
    count: int
    example: str  # one rejected record's file and reason line, from the source's rejects report


def render_datacard(
    manifest: Manifest,
    notes: list[str] | None = None,
    *,
    stats: CardStats | None = None,
    figures: dict[str, str] | None = None,
    preview: str | None = None,
    reject_examples: dict[str, RejectExample] | None = None,
) -> str:
    lines = [
        f"# {manifest.name}",
        "",
        f"{manifest.rows:,} sample{'' if manifest.rows == 1 else 's'} in {len(manifest.shards)} Arrow IPC stream "
        f"shard{'' if len(manifest.shards) == 1 else 's'} "
        f"(schema {manifest.schema_version}, fingerprint `{manifest.schema_fingerprint[:16]}`, "
        f"omnivmed {manifest.tool_version}).",
        "Open them with `pyarrow.ipc.open_stream`, `polars.read_ipc_stream` or "
        "`datasets.Dataset.from_file`; check them with `omnivmed-data verify manifest.json`.",
    ]
    if preview:
        lines += ["", f"Browse sampled records of every visual kind in [{preview}]({preview}) (opens from disk, no server)."]
    return "\n".join(lines) + "\n\n" + render_datacard_body(manifest, notes, stats=stats, figures=figures, reject_examples=reject_examples)


def render_datacard_body(
    manifest: Manifest,
    notes: list[str] | None = None,
    *,
    stats: CardStats | None = None,
    figures: dict[str, str] | None = None,
    reject_examples: dict[str, RejectExample] | None = None,
) -> str:
    """The card's sections (recipe, sources, counts, statistics, removals, options, notes) without the
    title and the shard-format intro: what another layout's card (the Hub export's README) reuses."""
    lines: list[str] = []
    lines += _recipe_section(manifest)
    lines += [
        "",
        "## Sources",
        "",
        "| source | license | homepage | citation |",
        "| --- | --- | --- | --- |",
    ]
    for card in manifest.sources:
        lines.append(f"| {card.name} | {card.license} | {card.homepage} | {card.citation} |")
    for axis in COUNT_AXES:
        values = manifest.counts.get(axis, {})
        lines += ["", f"## Samples by {axis.replace('_', ' ')}", "", f"| {axis} | samples |", "| --- | ---: |"]
        lines += [f"| {key} | {n:,} |" for key, n in values.items()]
    if stats is not None:
        lines += _stats_section(stats, figures or {})
    lines += _removed_section(manifest, reject_examples or {})
    builder_options = {k: v for k, v in manifest.options.items() if not k.startswith("recipe.")}
    if builder_options:
        lines += ["", "## Builder options", "", "| option | value |", "| --- | --- |"]
        lines += [f"| {key} | {value or '(default)'} |" for key, value in sorted(builder_options.items())]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in notes]
    return "\n".join(lines).lstrip("\n") + "\n"


def _recipe_section(manifest: Manifest) -> list[str]:
    if manifest.recipe is None:
        return []
    options, counters = manifest.options, manifest.counters
    entries = sorted({k.split(".")[1] for k in options if k.startswith("recipe.") and k.count(".") >= 2})
    lines = [
        "",
        "## Recipe",
        "",
        f"Mixed by `omnivmed-data mix` from recipe `{manifest.recipe}` (sha256 `{manifest.recipe_sha256}`), "
        f"seed {manifest.seed}, for training stage {options.get('recipe.stage', '?')}. Each source's count is spread "
        f"over its task x modality strata ({options.get('recipe.balance', 'proportional')}) and drawn with a generator "
        "seeded by (seed, source, stratum): the same recipe and seed give byte-identical shards.",
        "",
        "| recipe entry | staged | splits | tasks | take | available | taken | stage |",
        "| --- | --- | --- | --- | --- | ---: | ---: | ---: |",
    ]
    left_out = []
    for e in entries:
        if f"recipe.{e}.left_out" in options:
            left_out.append(f"- `{e}` left out: {options[f'recipe.{e}.left_out']}")
            continue
        get = lambda key: options.get(f"recipe.{e}.{key}", "")  # noqa: E731
        lines.append(
            f"| {e} | {get('staged')} | {get('splits')} | {get('tasks')} | {get('take')} | "
            f"{counters.get(f'recipe.{e}.available', 0):,} | {counters.get(f'recipe.{e}.taken', 0):,} | {get('stage')} |"
        )
    filtered = [e for e in entries if f"recipe.{e}.filter" in options]
    if filtered:
        lines += ["", "Filters (rows of the entry's splits and tasks, then those passing its filter: the available ones):", ""]
        lines += [
            f"- `{e}`: {options[f'recipe.{e}.filter']}: {counters.get(f'recipe.{e}.before_filter', 0):,} before, "
            f"{counters.get(f'recipe.{e}.available', 0):,} after"
            for e in filtered
        ]
    short = [(e, counters[f"recipe.{e}.shortfall"]) for e in entries if f"recipe.{e}.shortfall" in counters]
    if short:
        lines += ["", "Shortfalls (the recipe asked for more than the source holds; all of it was taken):", ""]
        lines += [f"- `{e}`: {n:,} samples short" for e, n in short]
    if left_out:
        lines += ["", "Entries of the recipe that were not staged (this set is partial):", ""] + left_out
    return lines


def _stats_section(stats: CardStats, figures: dict[str, str]) -> list[str]:
    lines = ["", "## Cross-counts", ""]
    for key, counter in stats.cross.items():
        a, b = key.split(",")
        if key == "source,split":
            lines += [f"| {a} | {b} | samples |", "| --- | --- | ---: |"]
            lines += [f"| {x} | {y} | {n:,} |" for (x, y), n in sorted(counter.items())]
            lines.append("")
    lines.append(f"Every cross-count ({', '.join(stats.cross)}) is in `{STATS_NAME}`.")
    tokens = stats.to_dict()["tokens_per_sample"]
    lines += ["", "## Lengths", ""]
    if tokens.get("samples"):
        lines.append(
            f"- tokens per sample ({stats.tokens_counted_with}): mean {tokens['mean']}, median {tokens['median']}, "
            f"95th percentile {tokens['p95']}, max {tokens['max']}"
        )
    for kind, summary in stats.to_dict()["frames_per_sample"].items():
        lines.append(f"- frames per {kind} sample: mean {summary['mean']}, min {summary['min']}, max {summary['max']}")
    if figures:
        lines += ["", "## Figures", ""]
        lines += [f"![{name.replace('_', ' ')}]({path})" for name, path in figures.items()]
    return lines


def _removed_section(manifest: Manifest, examples: dict[str, RejectExample]) -> list[str]:
    lines = ["", "## Removed", "", f"- exact duplicates removed: {manifest.duplicates_removed:,}"]
    if manifest.rejects:
        for reason, n in manifest.rejects.items():
            example = examples.get(reason)
            lines.append(f"- rejected ({reason}): {n:,}" + (f"; e.g. {example.example}" if example else ""))
        lines.append("- each rejected record is listed with its file and reason in the sources' `rejects.jsonl`")
    else:
        lines.append("- rejected: none")
    counters = {k: v for k, v in manifest.counters.items() if not k.startswith("recipe.")}
    lines += [f"- {key.replace('_', ' ')}: {n:,}" for key, n in counters.items()]
    return lines


def write_datacard(manifest: Manifest, path: Path, notes: list[str] | None = None, **extra) -> None:
    atomic_write_bytes(Path(path), render_datacard(manifest, notes, **extra).encode())


def reject_examples(reports: dict[str, Path]) -> dict[str, RejectExample]:
    """First rejected record of each reason, per source ("<source>:<reason>" keys, as in a mix manifest)."""
    found: dict[str, RejectExample] = {}
    for source, path in reports.items():
        if not Path(path).is_file():
            continue
        counts: dict[str, int] = {}
        first: dict[str, str] = {}
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            counts[item["reason"]] = counts.get(item["reason"], 0) + 1
            first.setdefault(item["reason"], f"`{item['file']}` record {item['record']}: {item['detail']}")
        found.update({f"{source}:{r}": RejectExample(counts[r], first[r]) for r in counts})
    return found


def publish(
    manifest_path: Path,
    *,
    notes: list[str] | None = None,
    reject_reports: dict[str, Path] | None = None,
    tokenizer=None,
    preview_per_kind: int = 4,
) -> dict[str, Path]:
    """Write README.md, stats.json, figures/*.png and preview.html next to the manifest's shards."""
    from omnivmed.data.figures import write_figures
    from omnivmed.data.preview import PREVIEW_NAME, write_preview

    manifest_path = Path(manifest_path)
    folder = manifest_path.parent
    manifest = Manifest.load(manifest_path)
    stats = collect_stats(manifest_path, manifest, tokenizer)
    write_if_changed(folder / STATS_NAME, stats.to_json().encode())
    figures = write_figures(stats, folder / FIGURES_DIR)
    write_preview(manifest_path, folder / PREVIEW_NAME, per_kind=preview_per_kind)
    card = render_datacard(
        manifest,
        notes,
        stats=stats,
        figures={name: path.relative_to(folder).as_posix() for name, path in figures.items()},
        preview=PREVIEW_NAME,
        reject_examples=reject_examples(reject_reports or {}),
    )
    write_if_changed(folder / CARD_NAME, card.encode())
    return {"card": folder / CARD_NAME, "stats": folder / STATS_NAME, "preview": folder / PREVIEW_NAME, **figures}
