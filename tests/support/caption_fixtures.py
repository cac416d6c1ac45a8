"""Captioning fixtures: windows of the generated surgical tree, and a scripted endpoint.

The scripted responder answers like a real pair of endpoints would, but from
rules a test can read: a caption names the seed it was sampled with, and a
judge's scores are a function of that seed (so some candidates pass and some
do not, the same way every time). Faults are injected per request key: the
``faults`` function sees the key and how many times it has been asked before.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from pathlib import Path
from typing import Callable

from omnivmed.builders import get_builder
from omnivmed.caption_inputs import write_caption_inputs
from omnivmed.surgical_demo import write_demo_tree
from omnivmed.rejection_sampling.client import REQUEST_KEY_HEADER
from omnivmed.rejection_sampling.config import CaptionConfig, EndpointConfig, JudgeConfig, SamplingConfig
from omnivmed.rejection_sampling.prompts import JUDGE_SYSTEM
from omnivmed.rejection_sampling.server import Reply

SEED_IN_CAPTION = re.compile(r"\[seed (\d+)\]")


def make_windows(root: Path, step: int = 2) -> Path:
    """10 windows (step 2) or 4 (step 8) of the generated Cholec80-layout tree, every one with QA lines."""
    raw = write_demo_tree(root / "raw")
    return write_caption_inputs(get_builder("cholec80_vqa", {"short_side": "0"}), raw, root / "windows", step=step, progress=False).path


def is_judge(body: dict) -> bool:
    system = body["messages"][0]["content"]
    return isinstance(system, str) and system == JUDGE_SYSTEM


def judge_name(body: dict) -> str:
    """The tests name judges after their model: ``model-<name>``."""
    return body["model"].removeprefix("model-")


def default_scores(seed: int, judge: str) -> tuple[int, int, int]:
    """Scores from the candidate's seed: a quarter of the candidates pass 'every score >= 4'; the
    others fail on one judge only (so a mean rule would let them through)."""
    if seed % 4 == 0:
        return (4 + seed % 2, 5, 4 + (seed >> 3) % 2)
    return (5, 5, 3) if judge == "text" else (4 + seed % 2, 5, 5)


class Script:
    """A responder for LocalServer: captions carry their seed, judges score by it."""

    def __init__(
        self,
        scores: Callable[[int, str], tuple[int, int, int]] = default_scores,
        faults: Callable[[str, dict, int], object] | None = None,
        judge_text: Callable[[dict, tuple[int, int, int]], str] | None = None,
    ):
        self.scores = scores
        self.faults = faults
        self.judge_text = judge_text
        self.asked: Counter = Counter()
        self._lock = threading.Lock()

    def __call__(self, body: dict, headers: dict):
        key = headers.get(REQUEST_KEY_HEADER.lower())
        with self._lock:
            seen = self.asked[key]
            self.asked[key] += 1
        if self.faults is not None:
            fault = self.faults(key, body, seen)
            if fault is not None:
                return fault
        if not is_judge(body):
            return Reply(f"[seed {body['seed']}] A grasper retracts the gallbladder while the hook dissects.", 120, 20)
        text = body["messages"][1]["content"]
        text = text if isinstance(text, str) else " ".join(p.get("text", "") for p in text)
        seed = int(SEED_IN_CAPTION.search(text).group(1))
        values = self.scores(seed, judge_name(body))
        if self.judge_text is not None:
            return Reply(self.judge_text(body, values), 200, 30)
        relevance, fluency, accuracy = values
        return Reply(json.dumps({"relevance": relevance, "fluency": fluency, "accuracy": accuracy, "rationale": f"seed {seed}"}), 200, 30)


def endpoint(base_url: str, name: str, **extra) -> EndpointConfig:
    settings = {"backoff_s": 0.01, "max_backoff_s": 0.05, "timeout_s": 5.0, "api_key_env": None}
    return EndpointConfig(name=name, base_url=base_url, model=f"model-{name}", **{**settings, **extra})


def caption_config(base_url: str, *, candidates: int = 2, extra_rounds: int = 1, clip_workers: int = 4, **endpoint_extra) -> CaptionConfig:
    """A generator and two judges ('vision': multimodal, 'text': text-only), all on one server."""
    return CaptionConfig(
        generator=endpoint(base_url, "gen", **endpoint_extra),
        judges=(
            JudgeConfig(endpoint(base_url, "vision", **endpoint_extra), kind="multimodal"),
            JudgeConfig(endpoint(base_url, "text", **endpoint_extra), kind="text", sampling=SamplingConfig(temperature=0.0, top_p=1.0, max_tokens=128)),
        ),
        candidates=candidates,
        extra_rounds=extra_rounds,
        clip_workers=clip_workers,
    )


def captioned_recipe(step: int) -> str:
    """A recipe mixing the generated Cholec80-VQA clips with judged captions of windows every ``step`` frames."""
    return f"""
name: captioned
seed: 0
sources:
  cholec80_vqa:
    take: all
    splits: [train, validation]
    build: {{source: cholec80_vqa, raw: cholec80_vqa, options: {{short_side: "0"}}}}
  cholec80_captions:
    take: all
    splits: [train, validation]
    tasks: [video_caption]
    caption: {{windows_of: cholec80_vqa, raw: cholec80_vqa, options: {{short_side: "0"}}, step: {step}}}
"""
