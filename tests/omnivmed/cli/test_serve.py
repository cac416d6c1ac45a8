"""omnivmed-serve: the trained model as an OpenAI-compatible endpoint, asked through the openai client and the
project's own evaluator; API keys; the console script started as a subprocess."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import openai
import pytest
from support.tiny_stage import write_tiny_stage

from omnivmed.serve import API_KEY_ENV, ModelServer, RequestError
from omnivmed.trainer.inference import Query, Runner, Settings, Visual, question_turns, read_clip, read_images, read_volume

REPO = Path(__file__).resolve().parents[3]
IMAGE = sorted((REPO / "data" / "vqa_rad" / "VQA_RAD Image Folder").glob("*.jpg"))[0]
VOLUME = REPO / "data" / "volumes" / "ct_dicom_series"


@pytest.fixture(scope="module")
def stage(tmp_path_factory) -> Path:
    return write_tiny_stage(tmp_path_factory.mktemp("stage"))


@pytest.fixture(scope="module")
def runner(stage) -> Runner:
    return Runner.load(stage)


@pytest.fixture(scope="module")
def server(runner):
    with ModelServer(runner, port=0) as running:
        yield running


def client(server, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0, timeout=60)


def data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def image_part(data: bytes) -> dict:
    mime = "image/png" if data.startswith(b"\x89PNG") else "image/jpeg"
    return {"type": "image_url", "image_url": {"url": data_url(data, mime)}}


def ask(server, model: str, parts: list, **options) -> str:
    messages = [{"role": "user", "content": parts}]
    reply = client(server).chat.completions.create(model=model, messages=messages, **options)
    return reply.choices[0].message.content


HOT = dict(temperature=1.0, seed=5, max_tokens=8)  # sampled: a random tiny model's greedy text is one repeated token


def expected(runner, question: str, visual: Visual) -> str:
    (answer,) = runner.generate([Query(question_turns(question, visual), visual)], Settings(8, 1.0, 1.0, 5))
    return answer.text


def test_an_image_through_the_openai_client_gives_generates_text(server, runner):
    visual = read_images([IMAGE])
    text = ask(server, "stage3", [image_part(IMAGE.read_bytes()), {"type": "text", "text": "What is shown?"}], **HOT)
    assert text == expected(runner, "What is shown?", visual) and text.strip()
    listed = [m.id for m in client(server).models.list()]
    assert listed == ["stage3", "stage3:volume", "stage3:video"]
    greedy = client(server).chat.completions.create(
        model="stage3", max_tokens=3, messages=[{"role": "user", "content": "Is a CT scan an x-ray?"}]
    )
    assert greedy.choices[0].finish_reason == "length" and greedy.usage.completion_tokens == 3


def test_a_volume_and_a_clip_sent_as_images_or_as_an_mp4(server, runner, tmp_path):
    from omnivmed.rejection_sampling.media_parts import encode_mp4
    from support.video_files import write_index_video

    volume = read_volume(VOLUME)
    parts = [image_part(f) for f in volume.frames] + [{"type": "text", "text": "Which organ?"}]
    assert ask(server, "stage3:volume", parts, **HOT) == expected(runner, "Which organ?", volume)
    clip = read_clip(write_index_video(tmp_path / "clip.mp4", 30), start=0.0, end=1.0)
    parts = [image_part(f) for f in clip.frames] + [{"type": "text", "text": "Which phase?"}]
    assert ask(server, "stage3:video", parts, **HOT) == expected(runner, "Which phase?", clip)
    mp4 = encode_mp4(clip.frames, 8.0)  # the captioner's video part
    (tmp_path / "sent.mp4").write_bytes(mp4)
    sent = read_clip(tmp_path / "sent.mp4", frames=runner.spec.max_frames)
    part = {"type": "video_url", "video_url": {"url": data_url(mp4, "video/mp4")}}
    assert ask(server, "stage3", [part, {"type": "text", "text": "Which phase?"}], **HOT) == expected(runner, "Which phase?", sent)


@pytest.mark.parametrize(
    "model, parts, options, error, message",
    [
        ("stage9", ["hi"], {}, openai.NotFoundError, "model 'stage9' is not served"),
        ("stage3", [{"type": "image_url", "image_url": {"url": "https://example.org/x.png"}}], {}, openai.BadRequestError, "only data: URLs"),
        ("stage3", [{"type": "image_url", "image_url": {"url": "data:image/png;base64,bm90IGFuIGltYWdl"}}], {}, openai.BadRequestError, "not an image"),
        ("stage3", [{"type": "input_audio"}], {}, openai.BadRequestError, "is not text, image_url or video_url"),
        ("stage3", ["hi"], {"n": 2}, openai.BadRequestError, "n must be 1"),
        ("stage3", ["<image> hi"], {}, openai.BadRequestError, "1 <image> placeholders for 0 visual inputs"),
    ],
)
def test_bad_requests_are_4xx_with_the_reason(server, model, parts, options, error, message):
    content = parts[0] if isinstance(parts[0], str) else parts
    with pytest.raises(error, match=message):
        client(server).chat.completions.create(model=model, messages=[{"role": "user", "content": content}], **options)


def test_the_api_key_is_checked(runner):
    with ModelServer(runner, port=0, api_key="s3cret", name="m") as guarded:
        with pytest.raises(openai.AuthenticationError):
            client(guarded, "wrong").chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(openai.AuthenticationError):
            client(guarded, "wrong").models.list()
        reply = client(guarded, "s3cret").chat.completions.create(
            model="m", max_tokens=2, messages=[{"role": "user", "content": "hi"}]
        )
        assert reply.usage.completion_tokens == 2


def test_a_host_other_than_loopback_needs_a_key(runner, stage, monkeypatch, capsys):
    with pytest.raises(RequestError, match=API_KEY_ENV):
        ModelServer(runner, host="0.0.0.0", port=0)
    from omnivmed.cli.serve import main

    monkeypatch.delenv(API_KEY_ENV, raising=False)
    with pytest.raises(SystemExit) as stopped:
        main([str(stage), "--host", "0.0.0.0", "--port", "0"])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and err.count("\n") == 1 and API_KEY_ENV in err and "Traceback" not in err


class Recording:
    """The runner, recording the queries the server builds from the requests it gets."""

    def __init__(self, runner):
        self.runner, self.queries = runner, []

    def __getattr__(self, name):
        return getattr(self.runner, name)

    def generate(self, queries, settings):
        self.queries += queries
        return self.runner.generate(queries, settings)


def test_the_evaluator_asks_the_served_model_like_any_endpoint(runner, tmp_path):
    """omnivmed-eval's endpoint predictor (the captioner's client and cache) against the served model: the server
    rebuilds exactly the query generate would be given for the record's image and prompt."""
    from omnivmed.eval_predict import EndpointPredictor, EndpointSettings
    from omnivmed.evaluation.benchmarks import frames_of, get_benchmark, read_ground_truth
    from omnivmed.evaluation.predictors import requests_for
    from omnivmed.evaluation.prompts import get_template
    from support.eval_fixtures import build_eval_staged

    staged = build_eval_staged(tmp_path / "gt")
    benchmark = get_benchmark("vqa_rad")
    records = read_ground_truth(benchmark, staged / benchmark.source)[:3]
    requests = requests_for(benchmark, records, get_template("llava-med"))
    recording = Recording(runner)
    with ModelServer(recording, port=0) as served:
        settings = EndpointSettings(base_url=served.base_url, model="stage3", api_key_env=None, max_tokens=6)
        outcome = EndpointPredictor(settings, tmp_path / "requests.sqlite").predict(requests)
    assert not outcome.failures and outcome.sent == 3
    by_prompt = {q.turns[-1].content.split("\n", 1)[1]: q for q in recording.queries}
    by_id = {p.question_id: p.text for p in outcome.predictions}
    for record, request in zip(records, requests):
        (frame,) = frames_of(record)
        visual = Visual("image", (frame,), "jpeg" if frame.startswith(b"\xff\xd8") else "png")
        query = Query(question_turns(request.prompt, visual), visual)
        assert by_prompt[request.prompt] == query
        (answer,) = runner.generate([query], Settings(6))
        assert by_id[record.question_id] == answer.text.strip()


@pytest.mark.slow
def test_the_console_script_serves_on_a_free_port(stage):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop(API_KEY_ENV, None)
    command = [sys.executable, "-m", "omnivmed.cli.serve", str(stage), "--port", "0", "--name", "tiny"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        base_url = process.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1"), process.stderr.read()
        with urllib.request.urlopen(base_url + "/models", timeout=30) as response:
            assert [m["id"] for m in json.load(response)["data"]] == ["tiny", "tiny:volume", "tiny:video"]
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_help_and_a_bad_folder_answer_without_torch(tmp_path):
    probe = (
        "import sys, json\nfrom omnivmed.cli.serve import main\n"
        "for args in (['--help'], [sys.argv[1], '--port', '0']):\n"
        "    try:\n        main(args)\n    except SystemExit as stop:\n        print('exit', stop.code)\n"
        "print(json.dumps([m for m in ('torch', 'transformers', 'cv2', 'pyarrow') if m in sys.modules]))"
    )
    run = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and API_KEY_ENV in run.stdout and "exit 0" in run.stdout and "exit 2" in run.stdout
    assert run.stderr == f"omnivmed-serve: {tmp_path}: not a model folder (no config.json; a stage writes OUT/stageN/model)\n"
    assert json.loads(run.stdout.strip().splitlines()[-1]) == []
