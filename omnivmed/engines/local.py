"""The local engine with N workers: a process pool maps work units, results are taken in unit order."""

from __future__ import annotations

import multiprocessing
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Iterator

from omnivmed.builders.base import Builder, BuilderItem, Unit

# Units submitted ahead per worker: enough to keep every worker busy while the writer drains one.
AHEAD_PER_WORKER = 2

_builder: Builder | None = None
_raw: Path | None = None


def _init(builder: Builder, raw: Path) -> None:
    global _builder, _raw
    _builder, _raw = builder, raw


def _run(unit: Unit) -> list[BuilderItem]:
    assert _builder is not None and _raw is not None
    return list(_builder.generate_unit(_raw, unit))


def pool_items(builder: Builder, raw: Path, units: list[Unit], workers: int) -> Iterator[BuilderItem]:
    """Every unit's items, unit after unit; at most ``AHEAD_PER_WORKER * workers`` units in flight.

    Workers are spawned (not forked: the parent may hold threads), each with one
    copy of the builder, sent once.
    """
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init, initargs=(builder, raw)) as pool:
        pending: deque[Future] = deque()
        todo = iter(units)
        try:
            for unit in todo:
                pending.append(pool.submit(_run, unit))
                if len(pending) >= AHEAD_PER_WORKER * workers:
                    break
            while pending:
                items = pending.popleft().result()
                for unit in todo:
                    pending.append(pool.submit(_run, unit))
                    break
                yield from items
        finally:
            for future in pending:
                future.cancel()
