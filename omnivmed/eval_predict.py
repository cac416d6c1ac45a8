"""Predictors of the evaluator: answer files, OpenAI-compatible endpoints, the baselines, a local model.

Endpoint predictions go through the captioner's machinery unchanged: one
:class:`ChatRequest` per question (media as content hashes in the key, base64
on the wire), the SQLite reply cache (each reply committed the moment it
arrives), the bounded pool and the retries of :class:`EndpointClient`
(500/429/timeouts, Retry-After honoured), and the :class:`Requester` that asks
the cache first. A run killed at any point and started again asks only for
the answers it never received. Frames travel as images the way the captioner
sends them: the stored JPEG/PNG bytes, one part each, evenly subsampled to
``max_frames`` for a clip or a volume.

``blind`` is the same predictor without the frames: a text-only model's
answers show how much of a benchmark can be answered without looking.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Sequence

from omnivmed.data.fileio import atomic_write_bytes
from omnivmed.evaluation.baselines import MAJORITY_VERSION, MajorityBaseline
from omnivmed.evaluation.benchmarks import GtRecord, frames_of
from omnivmed.evaluation.errors import EvalInputError
from omnivmed.evaluation.predictions import PREDICTIONS_NAME, Prediction, match_predictions, read_predictions, write_predictions
from omnivmed.evaluation.predictors import PredictOutcome, PredictRequest

CACHE_NAME = "requests.sqlite"
RUN_NAME = "run.json"
ENDPOINT_NAME = "eval"
MIME = {"jpeg": "image/jpeg", "png": "image/png"}
BLIND_SYSTEM = "Answer the medical question as briefly as possible."


@dataclass(frozen=True)
class EndpointSettings:
    base_url: str
    model: str
    api_key_env: str | None = "OPENAI_API_KEY"
    concurrency: int = 8
    timeout_s: float = 120.0
    max_retries: int = 5
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    max_tokens: int = 128
    max_frames: int = 8

    def public(self) -> dict:
        """What shaped the answers (for run.json; never a key)."""
        return {"model": self.model, "max_tokens": self.max_tokens, "max_frames": self.max_frames}


def pick_positions(n: int, k: int) -> list[int]:
    """``k`` evenly spaced positions out of ``n``, first and last kept (the captioner's subsampling)."""
    from omnivmed.rejection_sampling.media_parts import pick_frames

    return pick_frames(n, k)


def _const(data: bytes) -> bytes:
    return data


class EndpointPredictor:
    """Any OpenAI-compatible chat endpoint; ``images=False`` makes it the ``blind`` baseline."""

    def __init__(self, settings: EndpointSettings, cache_path: Path, *, images: bool = True, system: str | None = None, spread=None):
        self.settings = settings
        self.cache_path = Path(cache_path)
        self.images = images
        self.system = system
        self.spread = spread  # None: one process; else omnivmed.engines.shared_cache.spread_for(...)
        self.name = "endpoint" if images else "blind"

    def with_base_url(self, base_url: str) -> "EndpointPredictor":
        return EndpointPredictor(replace(self.settings, base_url=base_url), self.cache_path, images=self.images, system=self.system, spread=self.spread)

    def _media(self, record: GtRecord):
        from omnivmed.rejection_sampling.chat_request import Media

        if not self.images or not record.n_frames:
            return []
        frames = frames_of(record)
        mime = MIME.get(record.frame_format or "jpeg", "image/jpeg")
        return [
            Media("image", mime, hashlib.sha256(frames[p]).hexdigest(), partial(_const, frames[p]))
            for p in pick_positions(len(frames), self.settings.max_frames)
        ]

    def chat_request(self, request: PredictRequest):
        from omnivmed.rejection_sampling.chat_request import ChatRequest, Message

        media = self._media(request.record)
        messages = []
        if self.system:
            messages.append(Message("system", (self.system,)))
        messages.append(Message("user", (*media, request.prompt)))
        return ChatRequest(
            stage=f"eval:{request.benchmark}",
            endpoint=ENDPOINT_NAME,
            model=self.settings.model,
            messages=tuple(messages),
            temperature=0.0,
            top_p=1.0,
            max_tokens=self.settings.max_tokens,
            seed=0,
            response_format=None,
            clip_id=request.record.question_id,
            candidate=0,
            attempt=0,
            prompt_version=request.prompt_version + ("" if self.images else "+blind"),
        )

    def missing(self, requests: Sequence[PredictRequest]) -> int:
        """How many of ``requests`` the cache cannot answer (what a run would send)."""
        with open_cache(self.cache_path) as cache:
            return sum(1 for r in requests if self.chat_request(r).key not in cache)

    def predict(self, requests: Sequence[PredictRequest]) -> PredictOutcome:
        answers = ask_all(self.settings, self.cache_path, [self.chat_request(r) for r in requests], spread=self.spread)
        outcome = PredictOutcome(predictions=[], sent=answers.sent, cached=answers.cached)
        for request, (text, failure) in zip(requests, answers.replies):
            if failure is not None:
                outcome.failures[request.record.question_id] = failure
            else:
                outcome.predictions.append(Prediction(request.record.question_id, text.strip(), request.record.sample_id, request.prompt))
        return outcome


def open_cache(path: Path):
    from omnivmed.rejection_sampling.cache import CacheError, ReplyCache

    try:
        return ReplyCache(path)
    except CacheError as err:
        raise EvalInputError(str(err).splitlines()[0]) from None


@dataclass
class Answers:
    replies: list[tuple[str | None, str | None]]  # (content, None) or (None, why it failed), in request order
    sent: int
    cached: int


# Questions in one chunk of work when predictions are spread over workers.
QUESTIONS_PER_TASK = 64


def ask_all(settings: EndpointSettings, cache_path: Path, chats: Sequence, *, spread=None) -> Answers:
    """Every chat request answered from the cache, else the endpoint (retries, backoff, pool); one run.

    ``spread`` answers chunks of questions in workers that share the cache
    (``omnivmed.engines.shared_cache``); the answers come back in request order either way."""
    with open_cache(cache_path) as cache:
        run = cache.begin_run("online")
        if spread is None:
            return asyncio.run(_ask_all(settings, cache, run, chats))
    chunks = [list(chats[i : i + QUESTIONS_PER_TASK]) for i in range(0, len(chats), QUESTIONS_PER_TASK)]
    from omnivmed.engines import EngineError

    try:
        parts = list(spread(partial(ask_chunk, settings=settings, run=run), chunks, cache_path))
    except EngineError as err:  # e.g. a Ray cluster that refuses the connection: one line, exit 2
        raise EvalInputError(str(err)) from None
    return Answers([reply for part in parts for reply in part.replies], sum(p.sent for p in parts), sum(p.cached for p in parts))


def ask_chunk(chats: list, *, settings: EndpointSettings, run: int, open_cache) -> Answers:
    """One chunk of questions, in a worker, against the run's shared cache (safe to repeat)."""
    cache = open_cache()
    try:
        return asyncio.run(_ask_all(settings, cache, run, chats))
    finally:
        cache.close()


async def _ask_all(settings: EndpointSettings, cache, run: int, chats) -> Answers:
    from omnivmed.rejection_sampling.client import EndpointClient, TransportFailure
    from omnivmed.rejection_sampling.config import EndpointConfig
    from omnivmed.rejection_sampling.requester import Requester

    s = settings
    config = EndpointConfig(
        name=ENDPOINT_NAME,
        base_url=s.base_url,
        model=s.model,
        api_key_env=s.api_key_env,
        concurrency=s.concurrency,
        timeout_s=s.timeout_s,
        max_retries=s.max_retries,
        backoff_s=s.backoff_s,
        max_backoff_s=s.max_backoff_s,
    )
    client = EndpointClient(config)
    requester = Requester(cache, {ENDPOINT_NAME: client}, run, "online", secrets=tuple(x for x in (config.api_key,) if x))

    async def one(chat):
        try:
            reply = await requester.reply(chat)
        except TransportFailure as failure:
            return None, f"{failure.kind} after {failure.tries} tries"
        return reply.content, None

    try:
        replies = await asyncio.gather(*(one(c) for c in chats))
    finally:
        await client.aclose()
        requester.close()
    return Answers(list(replies), sum(u.sent for u in requester.usage.values()), sum(u.cached for u in requester.usage.values()))


class MajorityPredictor:
    name = "majority"

    def __init__(self, train: Sequence[GtRecord]):
        self.baseline = MajorityBaseline.fit(train)

    def predict(self, requests: Sequence[PredictRequest]) -> PredictOutcome:
        return PredictOutcome(self.baseline.predict([r.record for r in requests]))


class FilePredictor:
    """An answer file (LLaVA-Med's lines or ours), matched to the questions; the match report is kept."""

    name = "file"

    def __init__(self, path: Path):
        self.path = Path(path)
        self.predictions = read_predictions(self.path)
        self.report = None

    def predict(self, requests: Sequence[PredictRequest]) -> PredictOutcome:
        matched = match_predictions([r.record for r in requests], self.predictions)
        self.report = matched.report
        prompts = {r.record.question_id: r.prompt for r in requests}
        predictions = [p if p.prompt else replace(p, prompt=prompts.get(p.question_id, "")) for p in matched.predictions]
        answered = {p.question_id for p in predictions}
        missing = {r.record.question_id: "not in the answer file" for r in requests if r.record.question_id not in answered}
        return PredictOutcome(predictions, failures=missing)


class LocalModelPredictor:
    """``--model DIR``: a trained omnivmed stage folder generating in this process, greedy, in batches.

    Frames go in exactly as the shards hold them and as training saw them (the
    trainer's ``Runner``: same VisualSpec, pruning and chat template).
    """

    name = "local"

    def __init__(self, folder: Path, *, batch_size: int = 8, max_new_tokens: int = 64, device: str = "auto"):
        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise EvalInputError(f"--model {folder}: not a trained omnivmed model folder (no config.json); "
                                 "give OUT/stageN/model, or --endpoint URL --model NAME for a served model")
        from omnivmed.trainer.inference import Runner, Settings

        self.runner = Runner.load(folder, device=device)
        self.settings = Settings(max_new_tokens=max_new_tokens)
        self.batch_size = batch_size

    def query(self, request: PredictRequest):
        from omnivmed.trainer.inference import NO_VISUAL, Query, Visual, question_turns

        record = request.record
        frames = frames_of(record) if record.n_frames else ()
        visual = Visual(record.visual_kind, tuple(frames), record.frame_format) if frames else NO_VISUAL
        return Query(question_turns(request.prompt, visual), visual)

    def predict(self, requests: Sequence[PredictRequest]) -> PredictOutcome:
        from omnivmed.trainer.inference import InputError

        outcome = PredictOutcome(predictions=[])
        for start in range(0, len(requests), self.batch_size):
            chunk = requests[start : start + self.batch_size]
            try:
                answers = self.runner.generate([self.query(r) for r in chunk], self.settings)
            except InputError as err:
                outcome.failures.update({r.record.question_id: str(err) for r in chunk})
                continue
            outcome.sent += len(chunk)
            for request, answer in zip(chunk, answers):
                record = request.record
                outcome.predictions.append(Prediction(record.question_id, answer.text.strip(), record.sample_id, request.prompt))
        return outcome


def save_predictions(folder: Path, benchmark: str, outcome: PredictOutcome, order: Sequence[GtRecord]) -> Path:
    """``folder/<benchmark>/predictions.jsonl`` in ground-truth order (answered questions only)."""
    position = {r.question_id: n for n, r in enumerate(order)}
    predictions = sorted(outcome.predictions, key=lambda p: position.get(p.question_id, len(position)))
    path = Path(folder) / benchmark / PREDICTIONS_NAME
    write_predictions(path, predictions)
    return path


def record_run(folder: Path, info: dict, benchmark: str, details: dict) -> None:
    """Merge what produced the predictions into ``folder/run.json``."""
    path = Path(folder) / RUN_NAME
    data = {}
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            data = {}
    data.update(info)
    data.setdefault("benchmarks", {})[benchmark] = details
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode())


def majority_info() -> dict:
    return {"predictor": "majority", "model": MAJORITY_VERSION, "prompt_version": ""}


def endpoint_info(predictor: EndpointPredictor, template_version: str) -> dict:
    return {"predictor": predictor.name, **predictor.settings.public(), "prompt_version": template_version, "images": predictor.images}

