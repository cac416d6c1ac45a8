"""One captioning run, start to end: read the clips, answer every request (cache, endpoint, batch
file or dry-run count), select, write the outputs. The CLI calls :func:`caption_run` and prints.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

from omnivmed.data.output import Reject
from omnivmed.rejection_sampling.batch import IngestReport, ingest_batch_output, write_batch_files
from omnivmed.rejection_sampling.cache import CACHE_NAME, ReplyCache
from omnivmed.rejection_sampling.client import EndpointClient
from omnivmed.rejection_sampling.clip_inputs import ClipInput, read_clips, windows_path
from omnivmed.rejection_sampling.config import CaptionConfig
from omnivmed.rejection_sampling.outputs import RunOutputs, SourceCardLookup, unknown_source, write_outputs
from omnivmed.rejection_sampling.pipeline import CaptionPipeline, ClipOutcome
from omnivmed.rejection_sampling.requester import Requester


@dataclass(frozen=True)
class Plan:
    """What a run would do, before anything is sent (``--dry-run``)."""

    clips: int
    inputs_rejected: int
    cached: int  # requests the cache answers
    to_send_now: dict[str, int]  # per stage: requests the next step sends (known exactly)
    at_most: int  # every request still possible if every round runs (parse re-asks excluded)


@dataclass
class RunResult:
    outputs: RunOutputs | None
    plan: Plan | None = None
    ingested: list[IngestReport] = field(default_factory=list)
    batch_files: dict[str, Path] = field(default_factory=dict)


def _upper_bound(config: CaptionConfig, outcomes: list[ClipOutcome]) -> int:
    """Requests a pending clip may still need: the rest of its round plus every later round."""
    n, judges = config.candidates, len(config.judges)
    total = 0
    for outcome in outcomes:
        if outcome.state != "pending":
            continue
        last_round = max(c.round for c in outcome.candidates)
        for c in outcome.candidates:
            if c.round == last_round and c.state == "pending":
                total += (1 if c.caption is None else 0) + judges - len(c.judges)
        total += (config.extra_rounds - last_round) * n * (1 + judges)
    return total


def caption_run(
    windows: Path,
    out: Path,
    config: CaptionConfig,
    *,
    limit: int | None = None,
    dry_run: bool = False,
    batch_write: Path | None = None,
    batch_ingest: tuple[Path, ...] = (),
    require_qa: bool = True,
    cache_path: Path | None = None,
    progress: bool = False,
    source_card: SourceCardLookup = unknown_source,
) -> RunResult:
    windows = windows_path(windows)
    out = Path(out)
    clips, input_rejects = read_clips(windows, limit, require_qa=require_qa)
    mode = "dry_run" if dry_run else ("batch" if batch_write is not None else "online")
    with ReplyCache(cache_path or out / CACHE_NAME) as cache:
        run = cache.begin_run(mode)
        ingested = [ingest_batch_output(cache, path, run) for path in batch_ingest]
        outcomes, requester, wall = asyncio.run(_caption(clips, config, cache, run, mode, progress))
        result = RunResult(outputs=None, ingested=ingested)
        if dry_run:
            usage = requester.usage
            result.plan = Plan(
                clips=len(clips),
                inputs_rejected=len(input_rejects),
                cached=sum(u.cached for u in usage.values()),
                to_send_now={stage: u.deferred for stage, u in sorted(usage.items()) if u.deferred},
                at_most=_upper_bound(config, outcomes),
            )
            return result
        if mode == "batch":
            order = {clip.clip_id: n for n, clip in enumerate(clips)}
            pending = sorted(requester.deferred.values(), key=lambda r: (order[r.clip_id], r.candidate, r.stage, r.attempt))
            result.batch_files = write_batch_files(cache, pending, batch_write)
        result.outputs = write_outputs(out, windows, outcomes, input_rejects, config, requester, wall, source_card)
        return result


async def _caption(clips: list[ClipInput], config: CaptionConfig, cache: ReplyCache, run: int, mode: str, progress: bool):
    clients = {e.name: EndpointClient(e) for e in config.endpoints()} if mode == "online" else {}
    requester = Requester(cache, clients, run, mode, secrets=config.secrets())
    start = time.perf_counter()
    try:
        outcomes = await CaptionPipeline(config, requester).run(clips, progress=progress)
    finally:
        for client in clients.values():
            await client.aclose()
        requester.close()
    return outcomes, requester, time.perf_counter() - start
