"""One captioning run, start to end: check the endpoints (online runs), read the clips, answer every
request (cache, endpoint, batch file or dry-run count), select, write the outputs. The CLI calls
:func:`caption_run` and prints; :meth:`RunResult.problems` says whether the run did its job.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from functools import partial
from typing import Callable, Iterator

from tqdm import tqdm

from omnivmed.data.output import Reject
from omnivmed.rejection_sampling.batch import IngestReport, ingest_batch_output, write_batch_files
from omnivmed.rejection_sampling.cache import CACHE_NAME, ReplyCache
from omnivmed.rejection_sampling.chunks import answer_clips, caption_chunk, chunked, merged_requester
from omnivmed.rejection_sampling.clip_inputs import ClipInput, read_clips, windows_path
from omnivmed.rejection_sampling.config import CaptionConfig
from omnivmed.rejection_sampling.outputs import RunOutputs, SourceCardLookup, unknown_source, write_outputs
from omnivmed.rejection_sampling.pipeline import ClipOutcome
from omnivmed.rejection_sampling.preflight import PreflightError, preflight
from omnivmed.rejection_sampling.requester import FailureKey, RequestEvent, Requester

TOP_REASONS = 3

# How a spread run maps its chunks: fn(chunk, open_cache=...) for each, in order, sharing the cache file.
Spread = Callable[[Callable, list, Path], Iterator]


def format_rate(rps: float) -> str:
    """Requests per second, readable however slow (a demo model on a CPU answers one every few seconds)."""
    if rps >= 1:
        return f"{rps:.1f} requests/s"
    return f"{rps:.2g} requests/s ({1 / rps:.1f} s per request)" if rps > 0 else "no requests answered"


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
    warnings: list[str] = field(default_factory=list)  # pre-flight: unset key variables, servers without /models
    failed_requests: Counter = field(default_factory=Counter)  # FailureKey -> requests failed in this run
    failed_clips: Counter = field(default_factory=Counter)  # FailureKey -> clips failed by it

    def problems(self) -> list[str]:
        """Why this run did not do its job, one line each (empty: it did). Failed clips, and a run
        that accepted nothing with no clip left waiting for a batch reply, are problems."""
        if self.outputs is None:
            return []  # a dry run
        summary, lines = self.outputs.summary, []
        if summary["failed"]:
            reasons = "; ".join(f"{n} x {key.describe()}" for key, n in self.failed_clips.most_common(TOP_REASONS))
            lines.append(f"{summary['failed']} of {summary['clips']} clips failed (requests got no reply after every retry): {reasons}")
        if self.outputs.manifest_path is None and not summary["pending"]:
            kept_out = Counter(summary["inputs_rejected"])
            if summary["rejected"]:
                kept_out["no_passing_candidate"] = summary["rejected"]
            if summary["failed"]:
                kept_out["request_failed"] = summary["failed"]
            reasons = ", ".join(f"{reason} {n}" for reason, n in kept_out.most_common(TOP_REASONS)) or "no windows in the input"
            lines.append(f"nothing accepted ({reasons}): no manifest written, so this output does not count as staged")
        return lines


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
    warn: Callable[[str], None] = lambda line: None,
    on_request: Callable[[RequestEvent], None] | None = None,
    check_endpoints: bool = True,
    spread: Spread | None = None,
    clips_per_task: int = 16,
) -> RunResult:
    """``warn`` gets pre-flight warnings and, as it happens, the first failure of each endpoint and
    error; ``on_request`` every request an endpoint answered or failed. An online run first checks
    every endpoint (:func:`~omnivmed.rejection_sampling.preflight.preflight`): one that is down
    raises :class:`~omnivmed.rejection_sampling.preflight.PreflightError` before anything is sent or written.

    ``spread`` (online runs) answers chunks of ``clips_per_task`` consecutive clips in workers
    (``omnivmed.engines.shared_cache.map_with_cache``): the outputs are the same bytes; progress and
    first-failure warnings then come a chunk at a time, and ``on_request`` is not called."""
    mode = "dry_run" if dry_run else ("batch" if batch_write is not None else "online")
    windows = windows_path(windows)
    out = Path(out)
    clips, input_rejects = read_clips(windows, limit, require_qa=require_qa)  # local mistakes first
    try:
        warnings = preflight(config) if mode == "online" and check_endpoints else []
    except PreflightError as err:
        # Down endpoints matter only if something must be sent: a finished run's outputs come from the cache.
        if not _cache_answers_everything(clips, config, cache_path or out / CACHE_NAME):
            raise
        warnings = [f"{err}; every request is in the cache, so the outputs are written from it"]
    for line in warnings:
        warn(line)
    with ReplyCache(cache_path or out / CACHE_NAME) as cache:
        run = cache.begin_run(mode)
        ingested = [ingest_batch_output(cache, path, run) for path in batch_ingest]
        hooks = _Hooks(config, warn, on_request, progress)
        try:
            if spread is not None and mode == "online":
                outcomes, requester, wall = _spread(clips, config, run, spread, clips_per_task, cache.path, hooks, progress)
            else:
                outcomes, requester, wall = asyncio.run(answer_clips(clips, config, cache, run, mode, progress, hooks))
        finally:
            hooks.close()
        result = RunResult(outputs=None, ingested=ingested, warnings=warnings, failed_requests=requester.failures)
        urls = {e.name: e.base_url for e in config.endpoints()}
        result.failed_clips = Counter(
            FailureKey(o.failure[0], urls.get(o.failure[0], "?"), o.failure[1], o.failure[2]) for o in outcomes if o.state == "failed" and o.failure
        )
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


class _Hooks:
    """What a run shows while it runs: a bar of requests answered, the first failure of each kind."""

    def __init__(self, config: CaptionConfig, warn, on_request, progress: bool):
        self.warn, self.on_request = warn, on_request
        self.urls = {e.name: e.base_url for e in config.endpoints()}
        self.announced: set[tuple[str, str]] = set()
        self.bar = tqdm(desc="requests", unit="req", disable=not progress, position=1, leave=False)

    def __call__(self, event: RequestEvent) -> None:
        self.bar.update(1)
        if event.failed is not None and (event.endpoint, event.failed.kind) not in self.announced:
            self.announced.add((event.endpoint, event.failed.kind))
            key = event.failed
            detail = event.detail if event.detail.startswith(key.error_class) else f"{key.error_class}: {event.detail}"
            self.warn(f"request failed: {key.endpoint} at {key.base_url}: {key.kind}: {detail} (the next run asks again; further failures are counted)")
        if self.on_request is not None:
            self.on_request(event)

    def announce_failures(self, failures: Counter) -> None:
        """A spread run's first failure of each endpoint and kind, as a chunk reports them."""
        for key in failures:
            if (key.endpoint, key.kind) not in self.announced:
                self.announced.add((key.endpoint, key.kind))
                self.warn(f"request failed: {key.describe()} (the next run asks again; further failures are counted)")

    def close(self) -> None:
        self.bar.close()


def _spread(clips, config: CaptionConfig, run: int, spread: Spread, clips_per_task: int, cache_path: Path, hooks: "_Hooks", progress: bool):
    """Chunks of clips answered by ``spread``'s workers, taken back in clip order."""
    start = time.perf_counter()
    bar = tqdm(total=len(clips), desc="caption", unit="clip", disable=not progress)
    results = []
    try:
        for result in spread(partial(caption_chunk, config=config, run=run), chunked(clips, clips_per_task), cache_path):
            results.append(result)
            hooks.announce_failures(result.failures)
            bar.update(len(result.outcomes))
    finally:
        bar.close()
    outcomes = [outcome for result in results for outcome in result.outcomes]
    return outcomes, merged_requester(results, run), time.perf_counter() - start


def _cache_answers_everything(clips, config: CaptionConfig, cache_path: Path) -> bool:
    """True when a dry run over ``clips`` finds every request it needs in the cache (nothing to send)."""
    if not Path(cache_path).is_file():
        return False
    with ReplyCache(cache_path) as cache:
        run = cache.begin_run("dry_run")
        _, requester, _ = asyncio.run(answer_clips(clips, config, cache, run, "dry_run"))
    return not any(usage.deferred for usage in requester.usage.values())
