"""Prompts, request keys and the reply parsers."""

from __future__ import annotations

import base64
import io
import json
from dataclasses import replace

import av
import pytest

from omnivmed.rejection_sampling.chat_request import ChatRequest, derived_seed
from omnivmed.rejection_sampling.clip_inputs import read_clips
from omnivmed.rejection_sampling.media_parts import clip_media, pick_frames
from omnivmed.rejection_sampling.prompts import (
    CAPTION_PROMPT_VERSION,
    ParseError,
    caption_messages,
    judge_messages,
    judge_response_format,
    parse_caption,
    parse_scores,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"relevance": 4, "fluency": 5, "accuracy": 3, "rationale": "ok"}', (4, 5, 3, "ok")),
        ('Here you go:\n```json\n{"Relevance": "4", "FLUENCY": 5.0, "accuracy": 2}\n```\nThanks', (4, 5, 2, "")),
        ('Scores {"relevance": 1, "fluency": 1, "accuracy": 1, "rationale": "bad"} as asked.', (1, 1, 1, "bad")),
        ('{"note": "first try"} {"relevance": 5, "fluency": 5, "accuracy": 5, "rationale": "x"}', (5, 5, 5, "x")),
    ],
)
def test_tolerant_parser(text, expected):
    s = parse_scores(text)
    assert (s.relevance, s.fluency, s.accuracy, s.rationale) == expected


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "empty"),
        ('{"relevance": 4, "fluency": 5, "accur', "no JSON object"),  # truncated
        ('{"relevance": 6, "fluency": 5, "accuracy": 3}', "outside 1-5"),
        ('{"relevance": 0, "fluency": 5, "accuracy": 3}', "outside 1-5"),
        ('{"relevance": 4, "fluency": 5}', "missing accuracy"),
        ('{"relevance": 4.5, "fluency": 5, "accuracy": 3}', "not an integer"),
        ('{"relevance": true, "fluency": 5, "accuracy": 3}', "boolean"),
        ("The caption is great, 5/5.", "no JSON object"),
    ],
)
def test_bad_scores_are_parse_failures(text, reason):
    with pytest.raises(ParseError, match=reason):
        parse_scores(text)


def test_caption_parser():
    assert parse_caption('  Caption: "A hook dissects."  ') == "A hook dissects."
    for empty in ("", "   ", 'Caption: ""'):
        with pytest.raises(ParseError, match="empty caption"):
            parse_caption(empty)


def test_caption_prompt_holds_frames_and_qa_text(windows):
    clip = read_clips(windows, limit=1)[0][0]
    media = clip_media(clip, "images", 4)
    wire = caption_messages(clip, media)[1].wire()["content"]
    images = [p for p in wire if p["type"] == "image_url"]
    assert len(images) == 4
    positions = pick_frames(len(clip.frames), 4)
    assert [base64.b64decode(p["image_url"]["url"].split(",", 1)[1]) for p in images] == [clip.frames[i] for i in positions]
    text = wire[-1]["text"]
    for frame, question, answer in clip.qa:
        assert f"frame {frame}: {question} {answer}" in text


def test_video_part_is_a_real_mp4(windows):
    clip = read_clips(windows, limit=1)[0][0]
    (media,) = clip_media(clip, "video", 8)
    part = media.wire()
    assert part["type"] == "video_url" and part["video_url"]["url"].startswith("data:video/mp4;base64,")
    data = base64.b64decode(part["video_url"]["url"].split(",", 1)[1])
    with av.open(io.BytesIO(data)) as container:
        assert sum(1 for _ in container.decode(video=0)) == len(clip.frames)


def test_judges_see_what_they_should(windows):
    clip = read_clips(windows, limit=1)[0][0]
    media = clip_media(clip, "images", 2)
    vision = judge_messages(clip, "A caption.", "multimodal", media)[1].wire()["content"]
    assert sum(p["type"] == "image_url" for p in vision) == 2 and "A caption." in vision[-1]["text"]
    text = judge_messages(clip, "A caption.", "text", media)[1].wire()["content"]
    assert isinstance(text, str) and "A caption." in text and clip.qa[0][1] in text
    schema = judge_response_format("json_schema")["json_schema"]["schema"]
    assert schema["required"] == ["relevance", "fluency", "accuracy", "rationale"]
    assert judge_response_format("none") is None


def _request(clip, media, **changes):
    base = ChatRequest(
        stage="caption", endpoint="gen", model="m", messages=caption_messages(clip, media), temperature=0.7, top_p=0.9,
        max_tokens=64, seed=1, response_format=None, clip_id=clip.clip_id, candidate=0, attempt=0, prompt_version=CAPTION_PROMPT_VERSION,
    )
    return replace(base, **changes)


def test_request_key_covers_everything_that_changes_a_reply(windows):
    clips = read_clips(windows, limit=2)[0]
    media = clip_media(clips[0], "images", 4)
    key = _request(clips[0], media).key
    assert _request(clips[0], clip_media(clips[0], "images", 4)).key == key  # same request, same key
    others = [
        _request(clips[0], media, seed=2),
        _request(clips[0], media, candidate=1),
        _request(clips[0], media, attempt=1),
        _request(clips[0], media, prompt_version="caption-v2"),
        _request(clips[0], media, model="other"),
        _request(clips[0], media, temperature=0.8),
        _request(clips[0], clip_media(clips[0], "images", 3)),
        _request(clips[0], clip_media(clips[0], "video", 4)),
        _request(clips[0], clip_media(clips[1], "images", 4)),  # other frames
    ]
    assert len({key} | {r.key for r in others}) == 1 + len(others)
    # Media enter the key as content hashes, never as base64.
    canonical = json.dumps(_request(clips[0], media).canonical())
    assert "base64" not in canonical and clips[0].frame_hashes[0] in canonical


def test_derived_seed_is_stable():
    # Pinned values: the same on every run, machine and Python version (a seed from hash() would
    # change with PYTHONHASHSEED, which a second call in the same process cannot see).
    assert derived_seed(0, "caption", "abc", 3, 0) == 1979041472
    assert derived_seed(0, "caption", "abc", 4, 0) == 417189873
    assert derived_seed("x") == 762385986
    assert all(0 <= derived_seed(n) < 2**31 for n in range(200))
