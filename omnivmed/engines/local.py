"""The local engine with N workers: a process pool maps work units, results are taken in unit order."""

from __future__ import annotations

import multiprocessing
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

U = TypeVar("U")
R = TypeVar("R")

# Units submitted ahead per worker: enough to keep every worker busy while the consumer drains one.
AHEAD_PER_WORKER = 2


def pool_map(fn: Callable[[U], R], units: Iterable[U], workers: int) -> Iterator[R]:
    """``fn(unit)`` for every unit, yielded in unit order; at most ``AHEAD_PER_WORKER * workers`` in flight.

    ``fn`` must be picklable (a module-level function or a ``functools.partial``
    of one): workers are spawned, not forked, because the parent may hold threads.
    """
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        pending: deque[Future] = deque()
        todo = iter(units)
        try:
            for unit in todo:
                pending.append(pool.submit(fn, unit))
                if len(pending) >= AHEAD_PER_WORKER * workers:
                    break
            while pending:
                result = pending.popleft().result()
                for unit in todo:
                    pending.append(pool.submit(fn, unit))
                    break
                yield result
        finally:
            for future in pending:
                future.cancel()
