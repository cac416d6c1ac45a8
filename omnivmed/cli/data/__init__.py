"""The ``omnivmed-data`` command line: one module per command group, no logic here."""

from __future__ import annotations

import typer

from omnivmed.cli.data import caption, export, manifests, mix, preview, show, sources

app = typer.Typer(
    name="omnivmed-data",
    help="Build the OmniV-Med-Instruct data set from public medical sources into verified Arrow shards.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
sources.register(app)
manifests.register(app)
mix.register(app)
preview.register(app)
export.register(app)
show.register(app)
caption.register(app)


def main() -> None:
    app()
