"""The engine as the formats layer's stages take it: a map over their work units, results in unit order.

``omnivmed.data`` may not import the engines (the layers go one way), so a stage
such as :func:`omnivmed.data.mix.run_mix` takes a ``map_units(fn, units)``
callable; the app makes it here from ``--engine`` and ``--workers``.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import partial
from typing import Callable, Iterator, Sequence, TypeVar

from omnivmed.engines import check_engine, is_plain, ordered_map

U = TypeVar("U")
R = TypeVar("R")

UnitMapper = Callable[[Callable[[U], R], Sequence[U]], Iterator[R]]


def unit_mapper(engine: str = "local", workers: int = 1, *, progress: bool = False) -> UnitMapper | None:
    """None on the plain path (one local worker: the stage runs as it always has), else
    :func:`~omnivmed.engines.ordered_map` bound to ``engine`` and ``workers``."""
    if is_plain(engine, workers):
        return None
    return partial(ordered_map, engine=engine, workers=workers, progress=progress)


@contextmanager
def engine_session(engine: str = "local", workers: int = 1, *, progress: bool = False) -> Iterator[None]:
    """One Ray for a run of several stages (each would otherwise start and stop a local Ray of its own);
    nothing for the local engine. Ray is imported only for ``engine="ray"``."""
    check_engine(engine, workers)
    if engine != "ray":
        yield
        return
    from omnivmed.engines.ray_engine import ray_session

    with ray_session(workers, progress=progress):
        yield
