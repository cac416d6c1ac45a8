"""Prompts of the captioning loop, versioned: change a text, bump its version, and exactly the
cached replies it produced are asked for again (the version is part of every request key).

* caption prompt: a clip's frames (images or one video part) plus the QA lines
  of its frames, asking for one factual caption;
* judge prompt: a rubric asking for JSON ``{relevance, fluency, accuracy:
  integer 1-5, rationale}``; the multimodal judge sees the frames and the
  caption, the text judge the QA lines and the caption;
* parsers: a tolerant one for the judges' JSON (code fences, prose around the
  object, "4" for 4) where out-of-range or missing scores are failures, and
  the caption one (empty replies fail).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from omnivmed.rejection_sampling.chat_request import Media, Message
from omnivmed.rejection_sampling.clip_inputs import ClipInput
from omnivmed.rejection_sampling.config import CRITERIA

CAPTION_PROMPT_VERSION = "caption-v1"
JUDGE_PROMPT_VERSION = "judge-v1"

# The user turn of the caption Samples written to shards (the assistant turn is the caption).
SAMPLE_INSTRUCTION = "Describe what happens in this surgical video clip."

CAPTION_SYSTEM = (
    "You are an expert surgical video annotator. You describe laparoscopic surgery clips precisely and "
    "only state what the frames and the given annotations support."
)

CAPTION_TASK = (
    "Write one caption of this clip in 2-4 sentences: the surgical phase, the instruments that are visible "
    "and what they do, and the anatomy being worked on. Treat the annotations as ground truth, do not "
    "contradict them and do not invent findings. Reply with the caption only."
)

JUDGE_SYSTEM = (
    "You are a strict reviewer of captions for a medical training data set. You score a caption of a "
    "surgical video clip and reply with JSON only."
)

RUBRIC = (
    "Score the caption on three criteria, each an integer from 1 (very poor) to 5 (excellent):\n"
    "- relevance: it describes this clip (phase, instruments, anatomy) and nothing else;\n"
    "- fluency: clear, grammatical, professional English;\n"
    "- accuracy: every statement agrees with the {evidence}; anything invented or contradicted scores low.\n"
    'Reply with one JSON object: {{"relevance": <1-5>, "fluency": <1-5>, "accuracy": <1-5>, '
    '"rationale": "<one sentence>"}}'
)

JUDGE_SCHEMA = {
    "type": "object",
    "properties": {
        **{c: {"type": "integer", "minimum": 1, "maximum": 5} for c in CRITERIA},
        "rationale": {"type": "string"},
    },
    "required": [*CRITERIA, "rationale"],
    "additionalProperties": False,
}


class ParseError(ValueError):
    """A reply that cannot be used; the reason goes into the failure record."""


def qa_text(clip: ClipInput) -> str:
    if not clip.qa:
        return "Annotations: none for this clip."
    lines = [f"- frame {frame}: {question.strip()} {answer.strip()}" for frame, question, answer in clip.qa]
    return "Frame annotations (question and answer):\n" + "\n".join(lines)


def clip_header(clip: ClipInput) -> str:
    """Where the clip sits in its video: the frames' numbers (the annotations refer to them) and times."""
    span = f", frames {clip.frame_indices[0]}-{clip.frame_indices[-1]}" if clip.frame_indices else ""
    if clip.timestamps_s:
        span += f", {clip.timestamps_s[0]:.2f}-{clip.timestamps_s[-1]:.2f} s"
    return f"Clip of video {clip.video} ({len(clip.frames)} frames{span})."


def caption_messages(clip: ClipInput, media: list[Media]) -> tuple[Message, ...]:
    user = (*media, "\n" + clip_header(clip) + "\n" + qa_text(clip) + "\n\n" + CAPTION_TASK)
    return (Message("system", (CAPTION_SYSTEM,)), Message("user", user))


def judge_messages(clip: ClipInput, caption: str, kind: str, media: list[Media]) -> tuple[Message, ...]:
    if kind == "multimodal":
        rubric = RUBRIC.format(evidence="frames")
        user = (*media, f"\n{clip_header(clip)}\nCaption:\n{caption}\n\n{rubric}")
    else:
        rubric = RUBRIC.format(evidence="frame annotations")
        user = (f"{clip_header(clip)}\n{qa_text(clip)}\n\nCaption:\n{caption}\n\n{rubric}",)
    return (Message("system", (JUDGE_SYSTEM,)), Message("user", user))


def judge_response_format(mode: str) -> dict | None:
    """Structured output where the endpoint supports it (vLLM guided decoding takes json_schema)."""
    if mode == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": "caption_scores", "strict": True, "schema": JUDGE_SCHEMA}}
    if mode == "json_object":
        return {"type": "json_object"}
    return None


@dataclass(frozen=True)
class Scores:
    relevance: int
    fluency: int
    accuracy: int
    rationale: str

    def values(self) -> tuple[int, ...]:
        return tuple(getattr(self, c) for c in CRITERIA)


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S | re.I)


def _objects(text: str):
    """Every JSON object embedded in ``text``, in order."""
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            yield value


def _score(value, name: str) -> int:
    if isinstance(value, bool):
        raise ParseError(f"{name} is a boolean, not a score")
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        raise ParseError(f"{name} is {value!r}, not an integer")
    if not 1 <= value <= 5:
        raise ParseError(f"{name} {value} is outside 1-5")
    return value


def parse_scores(text: str) -> Scores:
    """The judge's JSON: tolerant of fences, surrounding prose and key case; strict on the scores."""
    if not text or not text.strip():
        raise ParseError("empty reply")
    fenced = _FENCE.findall(text)
    candidates = [obj for chunk in (fenced or []) + [text] for obj in _objects(chunk)]
    if not candidates:
        raise ParseError("no JSON object in the reply (truncated or prose only)")
    problems = []
    for obj in candidates:
        lowered = {str(k).strip().lower(): v for k, v in obj.items()}
        missing = [c for c in CRITERIA if c not in lowered]
        if missing:
            problems.append(f"missing {', '.join(missing)}")
            continue
        values = {c: _score(lowered[c], c) for c in CRITERIA}
        rationale = lowered.get("rationale", "")
        return Scores(**values, rationale=rationale if isinstance(rationale, str) else json.dumps(rationale))
    raise ParseError("; ".join(problems))


_PREFIX = re.compile(r"^\s*(caption\s*:\s*)", re.I)


def parse_caption(text: str) -> str:
    """The caption itself: a leading 'Caption:' and wrapping quotes dropped; empty replies fail."""
    caption = _PREFIX.sub("", (text or "").strip()).strip()
    if len(caption) >= 2 and caption[0] == caption[-1] and caption[0] in "\"'":
        caption = caption[1:-1].strip()
    if not caption:
        raise ParseError("empty caption")
    return caption
