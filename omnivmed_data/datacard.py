"""A short data card (README.md) written next to built shards."""

from __future__ import annotations

from pathlib import Path

from omnivmed.data.fileio import atomic_write_bytes
from omnivmed.data.manifest import COUNT_AXES, Manifest


def render_datacard(manifest: Manifest, notes: list[str] | None = None) -> str:
    lines = [
        f"# {manifest.name}",
        "",
        f"{manifest.rows:,} samples in {len(manifest.shards)} Arrow IPC stream shards "
        f"(schema {manifest.schema_version}, fingerprint `{manifest.schema_fingerprint[:16]}`, "
        f"omnivmed {manifest.tool_version}).",
        "Open them with `pyarrow.ipc.open_stream`, `polars.read_ipc_stream` or "
        "`datasets.Dataset.from_file`; check them with `omnivmed-data verify manifest.json`.",
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
    lines += ["", "## Removed", "", f"- exact duplicates removed: {manifest.duplicates_removed:,}"]
    if manifest.rejects:
        lines += [f"- rejected ({reason}): {n:,}" for reason, n in manifest.rejects.items()]
        lines.append("- each rejected record is listed with its file and reason in the sources' `rejects.jsonl`")
    else:
        lines.append("- rejected: none")
    if manifest.counters:
        lines += [f"- {key.replace('_', ' ')}: {n:,}" for key, n in manifest.counters.items()]
    if manifest.options:
        lines += ["", "## Builder options", "", "| option | value |", "| --- | --- |"]
        lines += [f"| {key} | {value or '(default)'} |" for key, value in sorted(manifest.options.items())]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def write_datacard(manifest: Manifest, path: Path, notes: list[str] | None = None) -> None:
    atomic_write_bytes(Path(path), render_datacard(manifest, notes).encode())
