"""Build engines: where a builder's work units run, never what comes out.

``local`` with one worker is the plain path (``builder.generate(raw)`` in this
process). ``local`` with N workers maps the builder's work units over a pool of
N processes; ``ray`` maps them with Ray Data on a Ray cluster (``RAY_ADDRESS``)
or a local Ray started with N CPUs. Every engine hands back the items in the
builder's own order (unit after unit, each unit's items in order, never in
arrival order), so the build that consumes them (deduplication, the writer)
writes the same bytes whatever the engine and the worker count. Neither the
engine nor the worker count is written anywhere.

Memory stays bounded: at most a few units per worker are in flight, and a
unit's items are held only until they are consumed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Iterator

from omnivmed.builders.base import Builder, BuilderItem

ENGINES = ("local", "ray")


class EngineError(ValueError):
    """A bad engine choice (unknown name, no workers, Ray not installed); the message is one line."""


def check_engine(engine: str, workers: int) -> None:
    """Raise :class:`EngineError` unless ``engine`` and ``workers`` can run (imports nothing)."""
    if engine not in ENGINES:
        raise EngineError(f"--engine {engine!r} is not one of {', '.join(ENGINES)}")
    if workers < 1:
        raise EngineError(f"--workers {workers} must be at least 1")
    if engine == "ray" and importlib.util.find_spec("ray") is None:
        raise EngineError("--engine ray needs Ray: pip install 'omnivmed[scale]' (or 'ray[data]>=2.40')")


def ordered_items(builder: Builder, raw: Path, *, engine: str = "local", workers: int = 1, progress: bool = False) -> Iterator[BuilderItem]:
    """The builder's items in :meth:`~omnivmed.builders.base.Builder.generate` order, computed by ``engine``."""
    check_engine(engine, workers)
    raw = Path(raw)
    if engine == "local" and workers == 1:
        yield from builder.generate(raw)
        return
    units = builder.work_units(raw)
    if len(units) <= 1:
        # Nothing to spread (the default single unit): run here, so a builder's state stays in this process.
        for unit in units:
            yield from builder.generate_unit(raw, unit)
        return
    if engine == "local":
        from omnivmed.engines.local import pool_items

        yield from pool_items(builder, raw, units, workers)
    else:
        from omnivmed.engines.ray_engine import ray_items

        yield from ray_items(builder, raw, units, workers, progress=progress)
