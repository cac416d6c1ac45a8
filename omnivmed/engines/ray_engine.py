"""The Ray engine: work units mapped with Ray Data, taken back in unit order.

``ray.data.from_items`` holds the units (one block each, pickled: they are
small), ``Dataset.map`` runs the builder's ``generate_unit`` on each with at
most ``workers`` tasks at once, and the rows are read back with
``preserve_order`` on, so the stream is the builder's order whatever node
finished first. Ray Data's streaming executor keeps a bounded number of
blocks in flight.

Cluster: with ``RAY_ADDRESS`` set the build joins that cluster (every node
needs omnivmed installed and the raw folder at the same path); otherwise it
starts a local Ray with ``workers`` CPUs and stops it afterwards. A Ray
already started in this process (a test, a notebook) is used as it is.
"""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path
from typing import Iterator

from omnivmed.builders.base import Builder, BuilderItem, Unit


def _run_unit(row: dict, builder: Builder, raw: str) -> dict:
    """The map function: one unit in, its items (pickled, in order) out."""
    unit = pickle.loads(row["unit"])
    items = list(builder.generate_unit(Path(raw), unit))
    return {"index": row["index"], "items": pickle.dumps(items, protocol=pickle.HIGHEST_PROTOCOL)}


def ray_items(builder: Builder, raw: Path, units: list[Unit], workers: int, *, progress: bool = False) -> Iterator[BuilderItem]:
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
        rows = [{"index": i, "unit": pickle.dumps(unit, protocol=pickle.HIGHEST_PROTOCOL)} for i, unit in enumerate(units)]
        dataset = ray.data.from_items(rows, override_num_blocks=len(rows)).map(
            _run_unit, fn_kwargs={"builder": builder, "raw": str(raw)}, num_cpus=1, concurrency=workers
        )
        expected = 0
        for row in dataset.iter_rows():
            if row["index"] != expected:
                raise RuntimeError(f"ray engine: unit {row['index']} came back where unit {expected} belongs")
            expected += 1
            yield from pickle.loads(row["items"])
        if expected != len(units):
            raise RuntimeError(f"ray engine: {expected} of {len(units)} units came back")
    finally:
        context.execution_options.preserve_order, context.enable_progress_bars = saved
        quiet.setLevel(saved_level)
        if started:
            ray.shutdown()
