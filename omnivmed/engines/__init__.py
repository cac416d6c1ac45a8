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
from functools import partial
from pathlib import Path
from typing import Callable, Iterator, Sequence, TypeVar

from omnivmed.builders.base import Builder, BuilderItem, Unit

U = TypeVar("U")
R = TypeVar("R")

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


def is_plain(engine: str, workers: int) -> bool:
    """True for one local worker: the stage runs in this process, exactly as it does without an engine."""
    check_engine(engine, workers)
    return engine == "local" and workers == 1


def ordered_map(fn: Callable[[U], R], units: Sequence[U], *, engine: str = "local", workers: int = 1, progress: bool = False) -> Iterator[R]:
    """``fn(unit)`` for every unit, in unit order, computed by ``engine`` (here, in a pool, or on Ray).

    ``fn`` must be picklable (module-level, or a ``functools.partial`` of one)
    and safe to run twice on a unit (Ray repeats the task of a dead worker).
    One worker on the local engine, or a single unit, runs here in order.
    """
    if is_plain(engine, workers) or len(units) <= 1:
        for unit in units:
            yield fn(unit)
    elif engine == "local":
        from omnivmed.engines.local import pool_map

        yield from pool_map(fn, units, workers)
    else:
        from omnivmed.engines.ray_engine import ray_map, ray_session

        with ray_session(workers, progress=progress):
            yield from ray_map(fn, units, workers, progress=progress)


def _unit_items(unit: Unit, builder: Builder, raw: Path) -> list[BuilderItem]:
    return list(builder.generate_unit(raw, unit))


def ordered_items(builder: Builder, raw: Path, *, engine: str = "local", workers: int = 1, progress: bool = False) -> Iterator[BuilderItem]:
    """The builder's items in :meth:`~omnivmed.builders.base.Builder.generate` order, computed by ``engine``."""
    raw = Path(raw)
    if is_plain(engine, workers):
        yield from builder.generate(raw)
        return
    units = builder.work_units(raw)
    # A single unit (the default) runs here, so a builder's state (counters) stays in this process.
    for items in ordered_map(partial(_unit_items, builder=builder, raw=raw), units, engine=engine, workers=workers, progress=progress):
        yield from items
