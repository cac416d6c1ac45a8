"""The ``omnivmed-train`` command line (the trainer arrives in a later release)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(name="omnivmed-train", add_completion=False, pretty_exceptions_enable=False)


@app.command()
def train(
    shards: Annotated[
        Optional[Path], typer.Option("--shards", help="Folder of manifests (or one manifest.json) to train on.")
    ] = None,
) -> None:
    """Train the OmniV-Med model from built shards (not implemented yet)."""
    typer.echo(
        "omnivmed-train: training is not implemented in this release; it arrives with the trainer "
        "(RoPE vision encoder, token pruning, projector, Qwen2.5, three stages). "
        "Build and verify shards with omnivmed-data meanwhile."
    )
    raise typer.Exit(2)


def main() -> None:
    app()
