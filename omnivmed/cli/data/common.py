"""Shared CLI helpers: one-line errors and console output."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)

# The engine options of build, windows, mix and instruct-dataset.
EngineOpt = Annotated[
    str,
    typer.Option("--engine", help="Where the work runs: local (this machine) or ray (RAY_ADDRESS's cluster, else a local Ray). Same bytes either way."),
]
WorkersOpt = Annotated[int, typer.Option("--workers", help="Processes (local) or concurrent Ray tasks doing the work.")]


def fail(message: str, code: int = 1) -> "typer.Exit":
    """Print one clear line to stderr and exit with ``code``."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def check_engine_options(engine: str, workers: int) -> None:
    """One line and exit 2 for an unknown ``--engine``, ``--workers`` below 1, or Ray missing."""
    from omnivmed.engines import EngineError, check_engine

    try:
        check_engine(engine, workers)
    except EngineError as err:
        fail(str(err), code=2)


def show_progress() -> bool:
    """Progress bars on a terminal, quiet in logs and CI."""
    return sys.stderr.isatty()


def check_out_folder(path: Path, option: str = "--out") -> Path:
    """One line and exit 2 when ``path`` (or a folder above it) is a file where a folder is wanted."""
    path = Path(path)
    for candidate in (path, *path.parents):
        if candidate.exists():
            if not candidate.is_dir():
                where = "" if candidate == path else f" (inside {option} {path})"
                fail(f"{option} {candidate}: is a file, not a folder{where}; choose a folder", code=2)
            break
    return path


def check_in_folder(path: Path, option: str) -> Path:
    """One line and exit 2 when an input folder is a file or missing."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        fail(f"{option} {path}: is a file, not a folder; give the folder that holds it ({path.parent})", code=2)
    return path


def manifest_file(path: Path) -> Path:
    """A manifest.json given as itself or as the folder holding it; one line and exit 2 for anything else."""
    path = Path(path)
    if path.is_dir():
        inside = path / "manifest.json"
        if not inside.is_file():
            fail(f"{path}: a folder without manifest.json; give a manifest.json written by build, build-embedded or mix", code=2)
        path = inside
    elif not path.exists():
        fail(f"{path}: no such manifest (give a manifest.json or the folder holding it)", code=2)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        fail(f"{path}: cannot read ({getattr(err, 'strerror', None) or type(err).__name__})", code=2)
    except ValueError as err:
        fail(f"{path}: not a manifest: not valid JSON ({str(err).splitlines()[0]})", code=2)
    if not isinstance(data, dict) or "shards" not in data or "format" not in data:
        found = f"an object with keys {', '.join(sorted(data)[:5])}" if isinstance(data, dict) else f"a JSON {type(data).__name__}"
        fail(
            f"{path}: not a manifest (expected an object with 'shards' and 'format', found {found}; "
            "an exported training file? give the manifest.json written by build, build-embedded or mix)",
            code=2,
        )
    return path
