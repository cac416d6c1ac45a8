"""The local engine with N workers: a process pool maps work units, results are taken in unit order."""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

U = TypeVar("U")
R = TypeVar("R")

# Units submitted ahead per worker: enough to keep every worker busy while the consumer drains one.
AHEAD_PER_WORKER = 2


def _share_cores(threads: str) -> None:
    """A worker's share of the machine for threaded slice work (volumes), unless the user set one."""
    os.environ.setdefault("OMNIVMED_VOLUME_THREADS", threads)


def pool_map(fn: Callable[[U], R], units: Iterable[U], workers: int) -> Iterator[R]:
    """``fn(unit)`` for every unit, yielded in unit order; at most ``AHEAD_PER_WORKER * workers`` in flight.

    ``fn`` must be picklable (a module-level function or a ``functools.partial``
    of one): workers are spawned, not forked, because the parent may hold threads.
    """
    context = multiprocessing.get_context("spawn")
    share = str(max(1, (os.cpu_count() or 1) // workers))  # N workers must not each take every core
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_share_cores, initargs=(share,)) as pool:
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
