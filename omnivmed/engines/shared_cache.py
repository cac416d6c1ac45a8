"""Request work spread over workers that share one reply cache (captioning, endpoint predictions).

Work comes in ordered chunks (a few clips, a few questions); ``fn(chunk,
open_cache=...)`` answers one chunk through a
:class:`~omnivmed.rejection_sampling.requester.Requester` whose cache comes
from ``open_cache()``. Every reply is committed to the one cache file the
moment it arrives, whichever process or node asked for it, so a worker or a
node killed mid-run loses no reply it received; the task Ray runs again (or
the next run) finds those replies in the cache and asks only for the rest.

Where the cache lives:

* ``local``: the cache is the SQLite file itself; every worker process opens
  it (WAL mode, one machine: SQLite's own locking serialises the commits).
* ``ray``: one *cache keeper* actor on the driver's node owns the file; workers
  on any node call it (``get``, ``put``, ``record_failure``) and wait for the
  commit before they go on. The file never needs shared storage, and SQLite
  never runs over a network file system (where its locks are not safe).

Failure modes (docs/scale.md): a reply in flight when its worker dies is
asked again (it never reached the cache); the driver's node dying ends the
run (its output folder is there), and the re-run resumes from the cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterator, Sequence, TypeVar

from omnivmed.engines import check_engine, is_plain, ordered_map

C = TypeVar("C")
R = TypeVar("R")


def stored(request) -> "StoredRequest":
    """What the cache stores of a request besides its reply: never its messages (they may hold frames)."""
    from omnivmed.rejection_sampling.batch import StoredRequest

    return StoredRequest(request.key, request.stage, request.endpoint, request.model, request.clip_id, request.candidate,
                         request.attempt, request.prompt_version)


class CacheKeeper:
    """The Ray actor that owns the cache file; its methods run one at a time (commits stay ordered)."""

    def __init__(self, path: str):
        from omnivmed.rejection_sampling.cache import ReplyCache

        self.cache = ReplyCache(Path(path))

    def get(self, key: str):
        return self.cache.get(key)

    def put(self, label, response: dict, origin: str):
        return self.cache.put(label, response, origin)

    def record_failure(self, run: int, label, kind: str, detail: str, tries: int) -> bool:
        return self.cache.record_failure(run, label, kind, detail, tries)

    def close(self) -> None:
        self.cache.close()


class RemoteCache:
    """A worker's view of the keeper: the three calls a Requester makes, each waiting for its answer."""

    def __init__(self, keeper):
        self.keeper = keeper

    def get(self, key: str):
        import ray

        return ray.get(self.keeper.get.remote(key))

    def put(self, request, response: dict, origin: str = "online"):
        import ray

        return ray.get(self.keeper.put.remote(stored(request), response, origin))

    def record_failure(self, run: int, request, kind: str, detail: str, tries: int) -> bool:
        import ray

        return ray.get(self.keeper.record_failure.remote(run, stored(request), kind, detail, tries))

    def close(self) -> None:
        pass  # the keeper stays up for the other workers


@dataclass(frozen=True)
class RemoteCacheOpener:
    keeper: object  # a Ray actor handle (picklable)

    def __call__(self) -> RemoteCache:
        return RemoteCache(self.keeper)


def open_local_cache(path: str):
    from omnivmed.rejection_sampling.cache import ReplyCache

    return ReplyCache(Path(path))


def map_with_cache(
    fn: Callable[..., R],
    chunks: Sequence[C],
    cache_path: Path,
    *,
    engine: str = "local",
    workers: int = 1,
    progress: bool = False,
) -> Iterator[R]:
    """``fn(chunk, open_cache=...)`` for every chunk, yielded in chunk order, all sharing ``cache_path``.

    ``fn`` must be picklable and safe to run again on a chunk (its cached replies make a repeat cheap).
    """
    check_engine(engine, workers)
    path = str(Path(cache_path).resolve())
    if engine == "local" or len(chunks) <= 1:
        yield from ordered_map(partial(fn, open_cache=partial(open_local_cache, path)), chunks, engine="local", workers=min(workers, max(1, len(chunks))))
        return
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from omnivmed.engines.ray_engine import ray_map, ray_session

    with ray_session(workers, progress=progress):
        here = ray.get_runtime_context().get_node_id()  # the driver's node: where the output folder is
        keeper = (
            ray.remote(CacheKeeper)
            .options(num_cpus=0, max_restarts=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=False))
            .remote(path)
        )
        try:
            yield from ray_map(partial(fn, open_cache=RemoteCacheOpener(keeper)), chunks, workers, progress=progress, what="chunk")
        finally:
            try:
                ray.get(keeper.close.remote())
            finally:
                ray.kill(keeper)


def spread_for(engine: str, workers: int, *, progress: bool = False):
    """The ``spread`` a caption run or an endpoint prediction takes: None for one local process (the plain path)."""
    if is_plain(engine, workers):
        return None
    return partial(map_with_cache, engine=engine, workers=workers, progress=progress)
