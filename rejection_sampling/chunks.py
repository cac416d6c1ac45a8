"""Clips answered a chunk at a time: the unit a worker takes when captioning is spread over workers.

:func:`answer_clips` is the one captioning loop of a run (clients, requester,
pipeline); a plain run calls it on every clip, a spread run calls
:func:`caption_chunk` on each chunk of consecutive clips in a worker (a local
process or a Ray task), whose cache commits to the run's one cache file (see
``omnivmed.engines.shared_cache``). Outcomes come back in clip order, so the
outputs are the same bytes as a plain run's; usage, failures and timing are
summed into one :class:`Requester` for the run report.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, fields
from typing import Callable

from omnivmed.rejection_sampling.client import EndpointClient
from omnivmed.rejection_sampling.clip_inputs import ClipInput
from omnivmed.rejection_sampling.config import CaptionConfig
from omnivmed.rejection_sampling.pipeline import CaptionPipeline, ClipOutcome
from omnivmed.rejection_sampling.requester import Requester, StageUsage


async def answer_clips(clips: list[ClipInput], config: CaptionConfig, cache, run: int, mode: str, progress: bool = False, hooks=None):
    """(outcomes in clip order, the requester with this run's usage, wall seconds)."""
    clients = {e.name: EndpointClient(e) for e in config.endpoints()} if mode == "online" else {}
    requester = Requester(cache, clients, run, mode, secrets=config.secrets(), on_request=hooks)
    start = time.perf_counter()
    try:
        outcomes = await CaptionPipeline(config, requester).run(clips, progress=progress)
    finally:
        for client in clients.values():
            await client.aclose()
        requester.close()
    return outcomes, requester, time.perf_counter() - start


@dataclass
class ChunkResult:
    outcomes: list[ClipOutcome]
    usage: dict[str, StageUsage]
    failures: Counter  # FailureKey -> requests failed
    first_send: float | None  # wall clock (time.time): comparable across processes and nodes
    last_reply: float | None


def caption_chunk(clips: list[ClipInput], *, config: CaptionConfig, run: int, open_cache: Callable) -> ChunkResult:
    """Caption ``clips`` online against the run's shared cache (safe to repeat: replies come from the cache)."""
    cache = open_cache()
    try:
        outcomes, requester, _ = asyncio.run(answer_clips(clips, config, cache, run, "online"))
    finally:
        cache.close()
    to_wall = time.time() - time.perf_counter()
    return ChunkResult(
        outcomes,
        dict(requester.usage),
        requester.failures,
        None if requester.first_send is None else requester.first_send + to_wall,
        None if requester.last_reply is None else requester.last_reply + to_wall,
    )


def chunked(clips: list[ClipInput], size: int) -> list[list[ClipInput]]:
    return [clips[i : i + size] for i in range(0, len(clips), size)]


def merged_requester(results: list[ChunkResult], run: int) -> Requester:
    """One run's requester as the report reads it: usage and failures summed, first send to last reply."""
    requester = Requester(cache=None, clients={}, run=run, mode="online")
    requester.close()
    usage: dict[str, StageUsage] = defaultdict(StageUsage)
    for result in results:
        for stage, part in result.usage.items():
            total = usage[stage]
            for f in fields(StageUsage):
                setattr(total, f.name, getattr(total, f.name) + getattr(part, f.name))
        requester.failures.update(result.failures)
    requester.usage = usage
    sends = [r.first_send for r in results if r.first_send is not None]
    replies = [r.last_reply for r in results if r.last_reply is not None]
    requester.first_send, requester.last_reply = (min(sends), max(replies)) if sends and replies else (None, None)
    return requester
