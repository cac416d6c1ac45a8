"""The Sample record: the one schema every builder writes and the trainer reads.

Everything else imports the Arrow schema, the vocabularies and the version
from here. A Sample holds its visual input as a list of encoded 2D frames
(1 image, N images, D volume slices or T video frames), so one
representation feeds the unified vision encoder.

Vocabularies (closed; a value outside them is a bug in a builder):

* ``MODALITIES`` - the paper counts 14 imaging modalities but prints no list
  in its text. We chose the 14 that cover every label our sources carry
  (VQA-RAD organs are CT/MRI/X-ray, SLAKE's CT/MRI/X-Ray, PathVQA pathology,
  PubMedVision's modality tags, M3D CT, the surgical videos' laparoscopy):
  CT, MRI, X-ray, ultrasound, PET, angiography, mammography, pathology,
  (non-histology) microscopy, endoscopy (laparoscopic surgery included),
  dermoscopy, fundus photography, OCT, clinical/digital photography.
* ``TASKS`` - the paper's 11 clinical tasks as its data section names them:
  medical VQA, report generation, image captioning (alignment captions),
  image-text retrieval, positioning (3D grounding), video captioning,
  surgical VQA, and the four recognition tasks the surgical answer
  vocabularies define (phase, step, instrument, location).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Iterable, Mapping

import pyarrow as pa

# 2.0.0: frames dictionary-encoded, each distinct frame stored once per shard (was list<binary>).
SCHEMA_VERSION = "2.0.0"

MODALITIES: tuple[str, ...] = (
    "ct",
    "mri",
    "x_ray",
    "ultrasound",
    "pet",
    "angiography",
    "mammography",
    "pathology",
    "microscopy",
    "endoscopy",
    "dermoscopy",
    "fundus",
    "oct",
    "digital_photography",
)

# Not one of the 14: for images whose source does not say (e.g. VQA-RAD head
# images with no modality question). An honest blank beats a guessed label.
UNSPECIFIED_MODALITY = "unspecified"

TASKS: tuple[str, ...] = (
    "vqa",
    "report_generation",
    "image_caption",
    "image_text_retrieval",
    "positioning",
    "video_caption",
    "surgical_vqa",
    "phase_recognition",
    "step_recognition",
    "instrument_recognition",
    "location_recognition",
)

VISUAL_KINDS: tuple[str, ...] = ("image", "multi_image", "volume", "video", "none")
SPLITS: tuple[str, ...] = ("train", "validation", "test")
ROLES: tuple[str, ...] = ("system", "user", "assistant")
ANSWER_TYPES: tuple[str, ...] = ("open", "closed")
FRAME_FORMATS: tuple[str, ...] = ("jpeg", "png")

IMAGE_TOKEN = "<image>"
VIDEO_TOKEN = "<video>"

_KEY_VALUE = pa.struct([("key", pa.string()), ("value", pa.string())])

VISUAL_META_TYPE = pa.struct(
    [
        # (z, y, x) for volumes, (y, x) for images; millimetres.
        ("spacing_mm", pa.list_(pa.float64())),
        # Direction cosines (row-major 3x3) of the canonical frame.
        ("orientation", pa.list_(pa.float64())),
        # Shape before any resizing: (D, H, W) or (H, W).
        ("original_shape", pa.list_(pa.int64())),
        ("fps", pa.float64()),
        ("timestamps_s", pa.list_(pa.float64())),
        # Source frame/slice index of every stored frame.
        ("frame_indices", pa.list_(pa.int64())),
    ]
)

PROVENANCE_TYPE = pa.struct(
    [
        # Paths relative to the raw source folder (never absolute: no user paths leak).
        ("raw_paths", pa.list_(pa.string())),
        ("record_id", pa.string()),
        ("license", pa.string()),
        ("source_url", pa.string()),
        # Original fields kept as data (e.g. SLAKE content_type, VQA-RAD question_type).
        ("fields", pa.list_(_KEY_VALUE)),
    ]
)

CONVERSATION_TYPE = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))

_FIELDS = [
    pa.field("id", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("split", pa.string(), nullable=False),
    pa.field("task", pa.string(), nullable=False),
    pa.field("modality", pa.string(), nullable=False),
    pa.field("visual_kind", pa.string(), nullable=False),
    pa.field("frame_format", pa.string()),
    pa.field("frames", pa.list_(pa.dictionary(pa.int32(), pa.binary())), nullable=False),
    pa.field("visual_meta", VISUAL_META_TYPE),
    pa.field("conversations", CONVERSATION_TYPE, nullable=False),
    pa.field("answer_type", pa.string()),
    pa.field("provenance", PROVENANCE_TYPE, nullable=False),
]


def _fingerprint(fields: list[pa.Field]) -> str:
    """sha256 over the schema's canonical text (names, types, nullability)."""
    text = "\n".join(f"{f.name}:{f.type}:{f.nullable}" for f in fields)
    return hashlib.sha256(f"{SCHEMA_VERSION}\n{text}".encode()).hexdigest()


SCHEMA_FINGERPRINT = _fingerprint(_FIELDS)

SCHEMA = pa.schema(
    _FIELDS,
    metadata={
        b"omnivmed.schema_version": SCHEMA_VERSION.encode(),
        b"omnivmed.schema_fingerprint": SCHEMA_FINGERPRINT.encode(),
    },
)


def schema_fingerprint_of(schema: pa.Schema) -> str:
    """Fingerprint of any Arrow schema, comparable with ``SCHEMA_FINGERPRINT``."""
    return _fingerprint(list(schema))


class SchemaError(ValueError):
    """A Sample that breaks the contract (bad vocabulary, placeholder count...)."""


@dataclass(frozen=True)
class Turn:
    role: str
    content: str


@dataclass(frozen=True)
class VisualMeta:
    spacing_mm: tuple[float, ...] | None = None
    orientation: tuple[float, ...] | None = None
    original_shape: tuple[int, ...] | None = None
    fps: float | None = None
    timestamps_s: tuple[float, ...] | None = None
    frame_indices: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Provenance:
    raw_paths: tuple[str, ...]
    record_id: str
    license: str
    source_url: str
    fields: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Sample:
    """One training record. Build it with :func:`make_sample`, which derives the id."""

    id: str
    source: str
    split: str
    task: str
    modality: str
    visual_kind: str
    frame_format: str | None
    frames: tuple[bytes, ...]
    visual_meta: VisualMeta | None
    conversations: tuple[Turn, ...]
    answer_type: str | None
    provenance: Provenance

    def to_row(self) -> dict:
        meta = self.visual_meta
        return {
            "id": self.id,
            "source": self.source,
            "split": self.split,
            "task": self.task,
            "modality": self.modality,
            "visual_kind": self.visual_kind,
            "frame_format": self.frame_format,
            "frames": list(self.frames),
            "visual_meta": None
            if meta is None
            else {
                "spacing_mm": _list_or_none(meta.spacing_mm),
                "orientation": _list_or_none(meta.orientation),
                "original_shape": _list_or_none(meta.original_shape),
                "fps": meta.fps,
                "timestamps_s": _list_or_none(meta.timestamps_s),
                "frame_indices": _list_or_none(meta.frame_indices),
            },
            "conversations": [{"role": t.role, "content": t.content} for t in self.conversations],
            "answer_type": self.answer_type,
            "provenance": {
                "raw_paths": list(self.provenance.raw_paths),
                "record_id": self.provenance.record_id,
                "license": self.provenance.license,
                "source_url": self.provenance.source_url,
                "fields": [{"key": k, "value": v} for k, v in self.provenance.fields],
            },
        }

    @classmethod
    def from_row(cls, row: Mapping) -> "Sample":
        meta = row["visual_meta"]
        prov = row["provenance"]
        return cls(
            id=row["id"],
            source=row["source"],
            split=row["split"],
            task=row["task"],
            modality=row["modality"],
            visual_kind=row["visual_kind"],
            frame_format=row["frame_format"],
            frames=tuple(row["frames"]),
            visual_meta=None
            if meta is None
            else VisualMeta(
                spacing_mm=_tuple_or_none(meta["spacing_mm"]),
                orientation=_tuple_or_none(meta["orientation"]),
                original_shape=_tuple_or_none(meta["original_shape"]),
                fps=meta["fps"],
                timestamps_s=_tuple_or_none(meta["timestamps_s"]),
                frame_indices=_tuple_or_none(meta["frame_indices"]),
            ),
            conversations=tuple(Turn(t["role"], t["content"]) for t in row["conversations"]),
            answer_type=row["answer_type"],
            provenance=Provenance(
                raw_paths=tuple(prov["raw_paths"]),
                record_id=prov["record_id"],
                license=prov["license"],
                source_url=prov["source_url"],
                fields=tuple((kv["key"], kv["value"]) for kv in prov["fields"]),
            ),
        )


def _list_or_none(values):
    return None if values is None else list(values)


def _tuple_or_none(values):
    return None if values is None else tuple(values)


def content_id(source: str, frames: Iterable[bytes], conversations: Iterable[Turn]) -> str:
    """Stable id from what the sample *is*: source, frame bytes and dialogue.

    The split is deliberately left out, so the same content in train and test
    gets the same id and deduplication can see the leak.
    """
    h = hashlib.sha256()
    h.update(source.encode())
    for frame in frames:
        h.update(b"\x00frame")
        h.update(hashlib.sha256(frame).digest())
    for turn in conversations:
        h.update(b"\x00" + turn.role.encode() + b"\x00" + turn.content.encode())
    return h.hexdigest()[:32]


def _placeholder_count(visual_kind: str, turns: Iterable[Turn]) -> tuple[str, int]:
    token = VIDEO_TOKEN if visual_kind == "video" else IMAGE_TOKEN
    return token, sum(t.content.count(token) for t in turns)


def expected_placeholders(visual_kind: str, n_frames: int) -> int:
    """A volume or a video is one visual input; each image of a multi_image is one."""
    if visual_kind == "none":
        return 0
    if visual_kind == "multi_image":
        return n_frames
    return 1


def make_sample(
    *,
    source: str,
    split: str,
    task: str,
    modality: str,
    visual_kind: str,
    frames: Iterable[bytes],
    frame_format: str | None,
    conversations: Iterable[Turn],
    provenance: Provenance,
    answer_type: str | None = None,
    visual_meta: VisualMeta | None = None,
) -> Sample:
    """Validate against the vocabularies and derive the content id."""
    frames = tuple(frames)
    turns = tuple(conversations)
    _check("split", split, SPLITS)
    _check("task", task, TASKS)
    _check("modality", modality, MODALITIES + (UNSPECIFIED_MODALITY,))
    _check("visual_kind", visual_kind, VISUAL_KINDS)
    if answer_type is not None:
        _check("answer_type", answer_type, ANSWER_TYPES)
    if frames:
        _check("frame_format", frame_format, FRAME_FORMATS)
    for turn in turns:
        _check("role", turn.role, ROLES)
        if not turn.content.strip():
            raise SchemaError(f"empty {turn.role} turn")
    if not any(t.role == "assistant" for t in turns):
        raise SchemaError("conversation has no assistant turn")
    if visual_kind == "none" and frames:
        raise SchemaError("visual_kind 'none' cannot carry frames")
    if visual_kind != "none" and not frames:
        raise SchemaError(f"visual_kind {visual_kind!r} needs at least one frame")
    token, found = _placeholder_count(visual_kind, turns)
    wanted = expected_placeholders(visual_kind, len(frames))
    if found != wanted:
        raise SchemaError(f"{found} {token} placeholders for {wanted} visual inputs")
    return Sample(
        id=content_id(source, frames, turns),
        source=source,
        split=split,
        task=task,
        modality=modality,
        visual_kind=visual_kind,
        frame_format=frame_format if frames else None,
        frames=frames,
        visual_meta=visual_meta,
        conversations=turns,
        answer_type=answer_type,
        provenance=provenance,
    )


def _check(name: str, value, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise SchemaError(f"{name} {value!r} is not one of {', '.join(allowed)}")


def vocabulary_json() -> str:
    """The vocabularies as JSON, for data cards and the trainer."""
    return json.dumps(
        {
            "schema_version": SCHEMA_VERSION,
            "modalities": MODALITIES,
            "unspecified_modality": UNSPECIFIED_MODALITY,
            "tasks": TASKS,
            "visual_kinds": VISUAL_KINDS,
            "splits": SPLITS,
        },
        indent=2,
    )

