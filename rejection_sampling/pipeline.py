"""The captioning loop: N seeded candidates per clip, every judge scores every candidate, the
acceptance rule picks the winner, up to R extra rounds for clips with no passing candidate.

Clips are worked on by a bounded pool of workers; the requests they make are
bounded per endpoint by its client. Each clip ends in exactly one state:

* ``accepted``: a candidate of some round passed; the best passing one wins;
* ``rejected``: every round ran and nothing passed (kept out, counted);
* ``failed``: a request got no reply after every retry; the clip is left
  undecided (a partly judged round could pick another winner once complete)
  and the next run asks again for what is missing;
* ``pending``: batch or dry-run mode, waiting for replies not in the cache.

A reply that never parses (after its parse retries) is deterministic given
the cache: that candidate simply cannot pass.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from tqdm import tqdm

from omnivmed.rejection_sampling.chat_request import ChatRequest, derived_seed
from omnivmed.rejection_sampling.clip_inputs import ClipInput
from omnivmed.rejection_sampling.config import CaptionConfig, EndpointConfig, JudgeConfig, SamplingConfig
from omnivmed.rejection_sampling.media_parts import clip_media
from omnivmed.rejection_sampling.prompts import (
    CAPTION_PROMPT_VERSION,
    JUDGE_PROMPT_VERSION,
    Scores,
    caption_messages,
    judge_messages,
    judge_response_format,
    parse_caption,
    parse_scores,
)
from omnivmed.rejection_sampling.requester import Attempt, Deferred, ParseExhausted, RequestFailed, Requester
from omnivmed.rejection_sampling.selection import best, passes

STATES = ("accepted", "rejected", "failed", "pending")
CAPTION_STAGE = "caption"


def judge_stage(name: str) -> str:
    return f"judge:{name}"


@dataclass
class JudgeResult:
    judge: str
    kind: str
    model: str
    scores: Scores | None = None
    error: str | None = None  # why there are no scores
    attempts: list[Attempt] = field(default_factory=list)


@dataclass
class Candidate:
    round: int
    index: int
    seed: int
    caption: str | None = None
    state: str = "ok"  # ok | unparsed | failed | pending
    error: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    judges: list[JudgeResult] = field(default_factory=list)
    passed: bool = False
    winner: bool = False
    failure: tuple[str, str, str] | None = None  # (endpoint, kind, error class) of a failed request


@dataclass
class ClipOutcome:
    clip: ClipInput
    state: str
    candidates: list[Candidate]
    winner: Candidate | None = None
    detail: str = ""
    failure: tuple[str, str, str] | None = None  # a failed clip: (endpoint, kind, error class)


def _failure(err: RequestFailed) -> tuple[str, str, str]:
    return err.endpoint, err.failure.kind, err.failure.error_class


def _sampling_for(sampling: SamplingConfig, attempt: int) -> float:
    return sampling.temperature if attempt == 0 else sampling.retry_temperature


class CaptionPipeline:
    def __init__(self, config: CaptionConfig, requester: Requester):
        self.config = config
        self.requester = requester

    # -- requests ---------------------------------------------------------
    def caption_request(self, clip: ClipInput, index: int, attempt: int, media) -> ChatRequest:
        gen, sampling = self.config.generator, self.config.sampling
        return ChatRequest(
            stage=CAPTION_STAGE,
            endpoint=gen.name,
            model=gen.model,
            messages=caption_messages(clip, media),
            temperature=_sampling_for(sampling, attempt),
            top_p=sampling.top_p,
            max_tokens=sampling.max_tokens,
            seed=derived_seed(self.config.seed, "caption", clip.clip_id, index, attempt),
            response_format=None,
            clip_id=clip.clip_id,
            candidate=index,
            attempt=attempt,
            prompt_version=CAPTION_PROMPT_VERSION,
        )

    def judge_request(self, clip: ClipInput, index: int, caption: str, judge: JudgeConfig, attempt: int, media) -> ChatRequest:
        endpoint, sampling = judge.endpoint, judge.sampling
        return ChatRequest(
            stage=judge_stage(judge.name),
            endpoint=endpoint.name,
            model=endpoint.model,
            messages=judge_messages(clip, caption, judge.kind, media),
            temperature=_sampling_for(sampling, attempt),
            top_p=sampling.top_p,
            max_tokens=sampling.max_tokens,
            seed=derived_seed(self.config.seed, "judge", judge.name, clip.clip_id, index, attempt),
            response_format=judge_response_format(endpoint.structured_output),
            clip_id=clip.clip_id,
            candidate=index,
            attempt=attempt,
            prompt_version=JUDGE_PROMPT_VERSION,
        )

    # -- one clip ---------------------------------------------------------
    def _media(self, clip: ClipInput, endpoint: EndpointConfig, memo: dict):
        key = (endpoint.media, endpoint.max_frames)
        if key not in memo:
            memo[key] = clip_media(clip, endpoint.media, endpoint.max_frames)
        return memo[key]

    async def _judge(self, clip, index, caption, judge: JudgeConfig, memo) -> JudgeResult:
        result = JudgeResult(judge.name, judge.kind, judge.endpoint.model)
        media = self._media(clip, judge.endpoint, memo) if judge.kind == "multimodal" else []
        try:
            result.scores, result.attempts = await self.requester.parsed(
                lambda attempt: self.judge_request(clip, index, caption, judge, attempt, media),
                parse_scores,
                judge.endpoint.max_parse_retries,
            )
        except ParseExhausted as err:
            result.error, result.attempts = f"unparsed: {err.detail}", err.attempts
        return result

    async def _candidate(self, clip: ClipInput, round_: int, index: int, memo: dict) -> Candidate:
        candidate = Candidate(round_, index, derived_seed(self.config.seed, "caption", clip.clip_id, index, 0))
        gen = self.config.generator
        media = self._media(clip, gen, memo)
        try:
            candidate.caption, candidate.attempts = await self.requester.parsed(
                lambda attempt: self.caption_request(clip, index, attempt, media), parse_caption, gen.max_parse_retries
            )
            results = await asyncio.gather(
                *(self._judge(clip, index, candidate.caption, j, memo) for j in self.config.judges), return_exceptions=True
            )
        except ParseExhausted as err:
            candidate.state, candidate.error, candidate.attempts = "unparsed", err.detail, err.attempts
            return candidate
        except RequestFailed as err:
            candidate.state, candidate.error, candidate.attempts = "failed", self.requester.redact(str(err)), err.attempts
            candidate.failure = _failure(err)
            return candidate
        except Deferred:
            candidate.state = "pending"
            return candidate
        for result in results:
            if isinstance(result, Deferred):
                candidate.state = "pending"
            elif isinstance(result, RequestFailed):
                if candidate.state != "pending":
                    candidate.state, candidate.error = "failed", self.requester.redact(str(result))
                    candidate.failure = _failure(result)
            elif isinstance(result, BaseException):
                raise result
            else:
                candidate.judges.append(result)
        if candidate.state == "ok":
            candidate.passed = passes([j.scores for j in candidate.judges], self.config.acceptance)
        return candidate

    async def caption_clip(self, clip: ClipInput) -> ClipOutcome:
        n = self.config.candidates
        memo: dict = {}
        candidates: list[Candidate] = []
        for round_ in range(1 + self.config.extra_rounds):
            batch = await asyncio.gather(*(self._candidate(clip, round_, round_ * n + k, memo) for k in range(n)))
            candidates.extend(batch)
            states = {c.state for c in batch}
            if "failed" in states:
                failed = next(c for c in batch if c.state == "failed")
                return ClipOutcome(clip, "failed", candidates, detail=failed.error or "request failed", failure=failed.failure)
            if "pending" in states:
                return ClipOutcome(clip, "pending", candidates, detail=f"round {round_} waits for replies")
            winner = best([(c.index, [j.scores for j in c.judges]) for c in batch if c.passed])
            if winner is not None:
                chosen = next(c for c in batch if c.index == winner)
                chosen.winner = True
                return ClipOutcome(clip, "accepted", candidates, chosen)
        rounds = 1 + self.config.extra_rounds
        return ClipOutcome(clip, "rejected", candidates, detail=f"no candidate passed in {rounds} round(s) of {n}")

    # -- all clips --------------------------------------------------------
    async def run(self, clips: list[ClipInput], *, progress: bool = False) -> list[ClipOutcome]:
        outcomes: list[ClipOutcome | None] = [None] * len(clips)
        queue: asyncio.Queue = asyncio.Queue()
        for position, clip in enumerate(clips):
            queue.put_nowait((position, clip))
        bar = tqdm(total=len(clips), desc="caption", unit="clip", disable=not progress)

        async def worker():
            while True:
                try:
                    position, clip = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                outcomes[position] = await self.caption_clip(clip)
                bar.update(1)

        try:
            await asyncio.gather(*(worker() for _ in range(min(self.config.clip_workers, max(1, len(clips))))))
        finally:
            bar.close()
        return outcomes
