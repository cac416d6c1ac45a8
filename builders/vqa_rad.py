"""VQA-RAD: radiology VQA on 315 MedPix images (Lau et al., Sci Data 2018).

Reads the official OSF layout (``VQA_RAD Dataset Public.json`` +
``VQA_RAD Image Folder/``) or the Hugging Face parquet copy
(``data/{train,test}-*.parquet``, where answer_type is lost: closed = yes/no).

Split: ``phrase_type`` starting with ``test_`` is test, the rest train (the
official rule; LLaVA-Med's ``data_RAD/test.json`` is the same 451 rows).

Modality: the JSON has no modality field. The data set's paper draws chest
images from X-ray and abdominal images from axial CT; head images are CT or
MRI, decided here by the image's own modality questions ("What kind of scan
is this? CT", "Is this an MRI? yes"). Head images without such a question are
``unspecified`` rather than guessed.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from omnivmed.builders.base import Builder, BuilderItem, LayoutError, Reject, SourceInfo, Unit
from omnivmed.builders.vqa2d import (
    parquet_file_vqa_samples,
    parquet_vqa_samples,
    RecordError,
    check_record_file,
    json_list_length,
    parquet_rows,
    load_json_list,
    normalise_answer_type,
    parquet_files,
    reject_from,
    text_field,
    vqa_sample,
)
from omnivmed.data.media import ImageCache, MediaError, unit_image_cache
from omnivmed.data.schema import UNSPECIFIED_MODALITY, SchemaError

JSON_NAME = "VQA_RAD Dataset Public.json"
IMAGE_DIR = "VQA_RAD Image Folder"

INFO = SourceInfo(
    name="vqa_rad",
    description="VQA-RAD: 2,248 clinician-written QA pairs on 315 radiology images (head CT/MRI, chest X-ray, abdominal CT).",
    homepage="https://osf.io/89kps/",
    license="CC0-1.0",
    citation=(
        "Lau JJ, Gayen S, Ben Abacha A, Demner-Fushman D. A dataset of clinically generated visual questions "
        "and answers about radiology images. Scientific Data 5, 180251 (2018). doi:10.1038/sdata.2018.251"
    ),
    # The OSF project serves files behind per-file ids; the Hugging Face mirror is
    # the scriptable copy (it drops answer_type and 4 duplicate rows).
    hf_repo="flaviagiammarino/vqa-rad",
    downloads=(),
    known_sha256=((JSON_NAME, "948b7156059b864cf72344fb10669233526b175c243e5a046d20d4201d297a95"),),
)

ORGAN_PRIOR = {"CHEST": "x_ray", "ABD": "ct"}
_OPEN_EVIDENCE = (
    (re.compile(r"\bmri?\b|\bt1\b|\bt2\b|t1-|t2-|flair|diffusion|\bdwi\b"), "mri"),
    (re.compile(r"\bct\b|computed tomography"), "ct"),
    (re.compile(r"x-ray|x ray|xray|\bcxr\b|radiograph|plain film"), "x_ray"),
)
_YES_NO_EVIDENCE = (
    (re.compile(r"\bmri?\b"), "mri"),
    (re.compile(r"\bct\b"), "ct"),
    (re.compile(r"x-ray|x ray|xray|\bcxr\b"), "x_ray"),
)
_ASKS_MODALITY = re.compile(r"type|kind|modality|how was|imaging|scan")


def modality_evidence(question: str, answer: str) -> str | None:
    """The modality a QA pair asserts about its image, if any."""
    q, a = question.lower(), answer.strip().lower()
    if re.search(r"\bnot\b", q):
        return None
    if a in ("yes", "no"):
        if a == "no":
            return None
        hits = {mod for pattern, mod in _YES_NO_EVIDENCE if pattern.search(q)}
        return hits.pop() if len(hits) == 1 else None
    if not _ASKS_MODALITY.search(q):
        return None
    hits = {mod for pattern, mod in _OPEN_EVIDENCE if pattern.search(a)}
    return hits.pop() if len(hits) == 1 else None


def image_modalities(records: list) -> dict[str, str]:
    """image_name -> modality, by organ prior, else by the image's modality QA."""
    evidence: dict[str, set[str]] = defaultdict(set)
    organs: dict[str, str] = {}
    for r in records:
        if not isinstance(r, dict):
            continue
        name = str(r.get("image_name", ""))
        organs.setdefault(name, str(r.get("image_organ", "")).strip().upper())
        found = modality_evidence(str(r.get("question", "")), str(r.get("answer", "")))
        if found:
            evidence[name].add(found)
    result = {}
    for name, organ in organs.items():
        if organ in ORGAN_PRIOR:
            result[name] = ORGAN_PRIOR[organ]
        elif len(evidence[name]) == 1:
            result[name] = next(iter(evidence[name]))
        else:
            result[name] = UNSPECIFIED_MODALITY
    return result


def split_of(phrase_type: str) -> str:
    return "test" if phrase_type.strip().lower().startswith("test_") else "train"


_KEPT_FIELDS = (
    "qid_linked_id",
    "phrase_type",
    "image_organ",
    "image_case_url",
    "question_type",
    "question_rephrase",
    "question_relation",
    "question_frame",
    "evaluation",
)


# Records of the official JSON per work unit (a few hundred KB of images each).
RECORDS_PER_UNIT = 64


@dataclass(frozen=True)
class RecordChunk:
    """A work unit: consecutive records in build order, with their images' modalities (decided over the whole file)."""

    records: tuple[tuple[int, Any], ...]  # (index in the JSON array, record)
    modalities: dict[str, str]


@dataclass(frozen=True)
class ParquetUnit:
    """A work unit: one split parquet file of the Hugging Face copy (relative to the raw folder)."""

    path: str


@dataclass(frozen=True)
class FileReject:
    """A work unit: the annotation file could not be read; its one reject."""

    reject: Reject


class VqaRadBuilder(Builder):
    info = INFO

    def check_layout(self, raw: Path) -> None:
        if not raw.is_dir():
            raise LayoutError(f"{raw}: no such folder (expected the VQA-RAD download)")
        if (raw / JSON_NAME).is_file():
            if not (raw / IMAGE_DIR).is_dir():
                raise LayoutError(f"{raw}: found '{JSON_NAME}' but not the '{IMAGE_DIR}/' folder beside it")
            check_record_file(
                raw / JSON_NAME,
                ("question", "answer", "image_name"),
                "a JSON array of VQA-RAD question records (qid, image_name, question, answer, answer_type, ...)",
            )
            return
        if parquet_files(raw):
            return
        raise LayoutError(
            f"{raw}: not a VQA-RAD copy: expected '{JSON_NAME}' + '{IMAGE_DIR}/' (official OSF layout) "
            f"or data/{{train,test}}-*.parquet (Hugging Face {INFO.hf_repo})"
        )

    def input_files(self, raw: Path) -> list[Path]:
        if (raw / JSON_NAME).is_file():
            return [raw / JSON_NAME]
        return parquet_files(raw)

    def generate(self, raw: Path) -> Iterator[BuilderItem]:
        if (raw / JSON_NAME).is_file():
            yield from self._official(raw)
        else:
            yield from self._parquet(raw)

    def estimated_records(self, raw: Path) -> int | None:
        if (raw / JSON_NAME).is_file():
            return json_list_length(raw / JSON_NAME)
        return parquet_rows(raw)

    def work_units(self, raw: Path) -> list[Unit]:
        if not (raw / JSON_NAME).is_file():
            return [ParquetUnit(p.relative_to(raw).as_posix()) for p in parquet_files(raw)]
        records, reject = load_json_list(raw / JSON_NAME, raw)
        if reject:
            return [FileReject(reject)]
        modalities = image_modalities(records)
        ordered = _held_out_first(records)
        units = []
        for start in range(0, len(ordered), RECORDS_PER_UNIT):
            chunk = tuple(ordered[start : start + RECORDS_PER_UNIT])
            names = {str(r.get("image_name", "")) for _, r in chunk if isinstance(r, dict)}
            units.append(RecordChunk(chunk, {n: modalities[n] for n in sorted(names) if n in modalities}))
        return units

    def generate_unit(self, raw: Path, unit: Unit) -> Iterator[BuilderItem]:
        if isinstance(unit, RecordChunk):
            yield from self._official_records(unit.records, unit.modalities, unit_image_cache(raw / IMAGE_DIR))
        elif isinstance(unit, ParquetUnit):
            yield from parquet_file_vqa_samples(INFO, raw, raw / unit.path, UNSPECIFIED_MODALITY)
        elif isinstance(unit, FileReject):
            yield unit.reject
        else:
            yield from super().generate_unit(raw, unit)

    def _official(self, raw: Path) -> Iterator[BuilderItem]:
        records, reject = load_json_list(raw / JSON_NAME, raw)
        if reject:
            yield reject
            return
        yield from self._official_records(_held_out_first(records), image_modalities(records), ImageCache(raw / IMAGE_DIR))

    def _official_records(self, ordered, modalities: dict[str, str], images: ImageCache) -> Iterator[BuilderItem]:
        for index, record in ordered:
            record_id = str(record.get("qid", index)) if isinstance(record, dict) else str(index)
            try:
                yield self._official_sample(record, images, modalities)
            except (RecordError, MediaError, SchemaError) as err:
                yield reject_from(err, JSON_NAME, record_id)

    def _official_sample(self, record, images: ImageCache, modalities: dict[str, str]):
        if not isinstance(record, dict):
            raise RecordError("malformed_record", f"expected an object, found {type(record).__name__}")
        image_name = text_field(record, "image_name", "missing_image")
        question = text_field(record, "question", "empty_question")
        answer = text_field(record, "answer", "empty_answer")
        image = images.get(image_name)
        return vqa_sample(
            INFO,
            split=split_of(str(record.get("phrase_type", ""))),
            modality=modalities.get(image_name, UNSPECIFIED_MODALITY),
            image=image,
            raw_path=f"{IMAGE_DIR}/{image_name}",
            question=question,
            answer=answer,
            answer_type=normalise_answer_type(record.get("answer_type")),
            record_id=str(record.get("qid", "")),
            fields={k: record[k] for k in _KEPT_FIELDS if k in record},
        )

    def _parquet(self, raw: Path) -> Iterator[BuilderItem]:
        yield from parquet_vqa_samples(INFO, raw, UNSPECIFIED_MODALITY)


def _held_out_first(records: list) -> list[tuple[int, Any]]:
    """(index, record): test rows, then train rows, each in file order (see builders.base)."""
    indexed = list(enumerate(records))
    return [x for x in indexed if _is_test(x[1])] + [x for x in indexed if not _is_test(x[1])]


def _is_test(record) -> bool:
    return isinstance(record, dict) and split_of(str(record.get("phrase_type", ""))) == "test"
