"""``make caption-demo``: the whole captioning loop offline, on the embedded clips, with a demo model.

1. the embedded surgical tree (generated frames in the real Cholec80-VQA
   layout, omnivmed/surgical_demo.py) is cut into windows;
2. a local OpenAI-compatible server on 127.0.0.1 serves SmolLM2-135M-Instruct
   (DEMO MODEL: text-only, 135M parameters; its captions and scores mean nothing);
3. the same model generates the candidates and plays both judges (a
   "multimodal" one that is sent the frames it cannot see, and a text one),
   through the real client, cache, selection and writers.

A second run of the demo sends no request: everything is in the cache.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from omnivmed.builders import get_builder
from omnivmed.caption_inputs import builder_source_card, write_caption_inputs
from omnivmed.surgical_demo import write_demo_tree
from omnivmed.rejection_sampling.config import AcceptanceRule, CaptionConfig, EndpointConfig, JudgeConfig, SamplingConfig
from omnivmed.rejection_sampling.requester import RequestEvent
from omnivmed.rejection_sampling.run import RunResult, caption_run, format_rate
from omnivmed.rejection_sampling.server import LocalServer

DEMO_WINDOW_STEP = 8  # two back-to-back windows of 8 frames per generated video
# The demo's rule, not the default (every score >= 4): the 135M model puts most of its mass on "1"
# whatever it reads, so its judges sample (temperature 1) and a candidate passes on a mean of 2.
DEMO_ACCEPTANCE = AcceptanceRule(min_each=1, min_mean=2.0)
JUDGE_SAMPLING = SamplingConfig(temperature=1.0, top_p=1.0, max_tokens=48, retry_temperature=1.0)


def demo_config(base_url: str, *, candidates: int = 2, extra_rounds: int = 1, max_tokens: int = 32, judges: int = 2) -> CaptionConfig:
    from omnivmed.rejection_sampling.demo_model import DEMO_MODEL_NAME

    def endpoint(name: str) -> EndpointConfig:
        # One model answers one request at a time: more in flight would only queue at the server.
        return EndpointConfig(name=name, base_url=base_url, model=DEMO_MODEL_NAME, api_key_env=None, concurrency=2, timeout_s=600, max_frames=4)

    panel = (
        JudgeConfig(endpoint("demo-vision-judge"), kind="multimodal", sampling=JUDGE_SAMPLING),
        JudgeConfig(endpoint("demo-medical-judge"), kind="text", sampling=JUDGE_SAMPLING),
    )[:judges]
    return CaptionConfig(
        generator=endpoint("demo-generator"),
        judges=panel,
        sampling=SamplingConfig(temperature=0.8, top_p=0.95, max_tokens=max_tokens),
        candidates=candidates,
        extra_rounds=extra_rounds,
        acceptance=DEMO_ACCEPTANCE,
        clip_workers=2,
    )


def prepare_demo_windows(out: Path) -> Path:
    raw = write_demo_tree(Path(out) / "raw" / "cholec80_vqa")
    builder = get_builder("cholec80_vqa", {"short_side": "0"})
    return write_caption_inputs(builder, raw, Path(out) / "windows", step=DEMO_WINDOW_STEP, progress=False).path


class RequestLines:
    """One line per request the demo model answers (each takes seconds on a CPU): which stage, clip and
    candidate, how many tokens, how long, and the rate so far."""

    def __init__(self, say: Callable[[str], None]):
        self.say = say
        self.count = 0
        self.start: float | None = None

    def __call__(self, event: RequestEvent) -> None:
        now = time.perf_counter()
        if self.start is None:
            self.start = now - event.seconds
        self.count += 1
        elapsed = max(now - self.start, 1e-9)
        if event.failed is not None:
            what = f"failed: {event.failed.describe()}"
        else:
            what = f"{event.completion_tokens} tokens in {event.seconds:.1f} s"
        self.say(
            f"  request {self.count}: {event.stage}, clip {event.clip_id[:12]}, candidate {event.candidate}"
            f"{f', re-ask {event.attempt}' if event.attempt else ''}: {what} ({format_rate(self.count / elapsed)} so far)"
        )


def run_demo(
    out: Path, *, limit: int | None = None, progress: bool = False, model=None, say: Callable[[str], None] | None = None, **config_options
) -> RunResult:
    """``model``: an already loaded :class:`DemoModel` (loading takes about 20 s). ``say`` gets a line
    when the model is loaded and one per request it answers."""
    from omnivmed.rejection_sampling.demo_model import DemoModel

    out = Path(out)
    windows = prepare_demo_windows(out)
    if model is None:
        if say:
            say("loading the demo model (about 20 s on 2 cores)...")
        started = time.perf_counter()
        model = DemoModel()
        if say:
            say(f"model loaded in {time.perf_counter() - started:.0f} s; captioning, one line per request (seconds each on a CPU, more while other work shares it)")
    with LocalServer(model.responder) as server:
        config = demo_config(server.base_url, **config_options)
        return caption_run(
            windows,
            out / "captions",
            config,
            limit=limit,
            progress=progress,
            source_card=builder_source_card,
            warn=say or (lambda line: None),
            on_request=RequestLines(say) if say else None,
        )
