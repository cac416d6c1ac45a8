"""Shared CLI helpers: one-line errors and console output."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 1) -> "typer.Exit":
    """Print one clear line to stderr and exit with ``code``."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def show_progress() -> bool:
    """Progress bars on a terminal, quiet in logs and CI."""
    return sys.stderr.isatty()
