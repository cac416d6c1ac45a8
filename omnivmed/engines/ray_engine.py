"""The Ray engine: work units mapped with Ray Data, taken back in unit order.

``ray.data.from_items`` holds the units (one block each, pickled: they are
small), ``Dataset.map`` runs the function on each with at most ``workers``
tasks at once, and the rows are read back with ``preserve_order`` on, so the
stream is the units' order whatever node finished first. Ray Data's streaming
executor keeps a bounded number of blocks in flight. A task whose worker or
node dies is run again by Ray (its unit is small and the function must be
safe to repeat).

Cluster: with ``RAY_ADDRESS`` set the run joins that cluster (every node
needs omnivmed installed and the inputs at the same path); otherwise it
starts a local Ray with ``workers`` CPUs and stops it afterwards. A Ray
already started in this process (a test, a notebook) is used as it is.
"""

from __future__ import annotations

import logging
import os
import pickle
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, TypeVar

U = TypeVar("U")
R = TypeVar("R")


@contextmanager
def ray_session(workers: int, *, progress: bool = False) -> Iterator[None]:
    """Ray joined (``RAY_ADDRESS``) or started locally, ordered Ray Data output; restored afterwards."""
    import ray
    import ray.data

    from omnivmed.engines import EngineError

    started = False
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        try:
            if address:
                ray.init(logging_level=logging.WARNING)  # joins the cluster RAY_ADDRESS names
            else:
                ray.init(address="local", num_cpus=workers, include_dashboard=False, logging_level=logging.WARNING)
        except ConnectionError as err:
            raise EngineError(f"--engine ray: cannot join the Ray cluster RAY_ADDRESS={address} names ({err})") from None
        started = True
    context = ray.data.DataContext.get_current()
    saved = (context.execution_options.preserve_order, context.enable_progress_bars)
    context.execution_options.preserve_order = True
    context.enable_progress_bars = progress
    quiet = logging.getLogger("ray.data")  # its per-run INFO lines, unless progress is wanted
    saved_level = quiet.level
    if not progress:
        quiet.setLevel(logging.ERROR)
    try:
        yield
    finally:
        context.execution_options.preserve_order, context.enable_progress_bars = saved
        quiet.setLevel(saved_level)
        if started:
            ray.shutdown()


def _apply(row: dict, fn: Callable) -> dict:
    """The map function: one pickled unit in, its pickled result (or the error it raised) out.

    An error comes back as data and is raised in the driver as itself: Ray Data would wrap it
    (RayTaskError) beyond recovery, and the CLI's one-line messages catch the original types.
    Ray still runs a task again whose worker died.
    """
    os.environ.setdefault("OMNIVMED_VOLUME_THREADS", "1")  # a task holds one CPU: no threads beyond it
    try:
        result, failed = fn(pickle.loads(row["unit"])), False
    except Exception as err:
        result, failed = err, True
    return {"index": row["index"], "failed": failed, "result": pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)}


def ray_map(fn: Callable[[U], R], units: Iterable[U], workers: int, *, progress: bool = False, what: str = "unit") -> Iterator[R]:
    """``fn(unit)`` for every unit on Ray Data, yielded in unit order (inside :func:`ray_session`)."""
    import ray.data

    rows = [{"index": i, "unit": pickle.dumps(unit, protocol=pickle.HIGHEST_PROTOCOL)} for i, unit in enumerate(units)]
    if not rows:
        return
    dataset = ray.data.from_items(rows, override_num_blocks=len(rows)).map(
        _apply, fn_kwargs={"fn": fn}, num_cpus=1, concurrency=workers
    )
    expected = 0
    for row in dataset.iter_rows():
        if row["index"] != expected:
            raise RuntimeError(f"ray engine: {what} {row['index']} came back where {what} {expected} belongs")
        expected += 1
        value = pickle.loads(row["result"])
        if row["failed"]:
            raise value
        yield value
    if expected != len(rows):
        raise RuntimeError(f"ray engine: {expected} of {len(rows)} {what}s came back")
