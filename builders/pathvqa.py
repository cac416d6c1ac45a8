"""PathVQA: pathology VQA from two textbooks and the PEIR library (He et al., 2020).

Reads either of two layouts (parquet wins when both are present):

* the Hugging Face parquet copy ``flaviagiammarino/path-vqa``:
  ``data/{train,validation,test}-*.parquet`` with columns image{bytes,path},
  question, answer;
* the official repository's LXMERT QA files ``pvqa_{train,val,test}.json``
  (one entry per image: ``img_id``, ``sentf.pvqa`` [questions],
  ``labelf.pvqa`` [{answer: score}], aligned by index) beside the images of
  the official Google Drive copy, ``images/{train,val,test}/<img_id>.jpg``
  (``.png`` is accepted too).

PathVQA has no answer_type field: closed means the answer is yes or no
(LLaVA-Med's rule). All images are pathology.

LXMERT label dicts normally hold one answer with score 1. When one holds
several, the answer with the highest score is taken; ties go to the answer
that sorts first as text, so the choice is deterministic. The full label dict
is then kept as the ``answer_scores`` provenance field.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from omnivmed.builders.base import Builder, BuilderItem, LayoutError, ReadyItems, SourceInfo, Unit, chunks
from omnivmed.builders.vqa2d import (
    parquet_file_vqa_samples,
    parquet_vqa_samples,
    RecordError,
    check_record_file,
    parquet_rows,
    closed_if_yes_no,
    load_json_list,
    parquet_files,
    reject_from,
    text_field,
    vqa_sample,
)
from omnivmed.data.media import ImageCache, MediaError, unit_image_cache
from omnivmed.data.schema import SchemaError

IMAGE_DIR = "images"
MODALITY = "pathology"
# (split, LXMERT file, image sub-folder), held-out splits first.
LXMERT_FILES = (
    ("test", "pvqa_test.json", "test"),
    ("validation", "pvqa_val.json", "val"),
    ("train", "pvqa_train.json", "train"),
)
IMAGE_SUFFIXES = (".jpg", ".png")

INFO = SourceInfo(
    name="pathvqa",
    description=(
        "PathVQA: 32,799 QA pairs on 4,998 pathology images from two pathology textbooks and the PEIR "
        "digital library; half yes/no questions."
    ),
    homepage="https://github.com/UCSD-AI4H/PathVQA",
    license="MIT (code); image copyright remains with the textbook publishers and PEIR",
    citation=(
        "He X, Zhang Y, Mou L, Xing E, Xie P. PathVQA: 30000+ Questions for Medical Visual Question "
        "Answering. arXiv:2003.10286, 2020."
    ),
    # The official images sit on Google Drive (no scriptable URL); the Hugging
    # Face parquet copy is the scriptable one.
    downloads=(),
    hf_repo="flaviagiammarino/path-vqa",
    known_sha256=(("pvqa_val.json", "3d95d7f67799b37c0654852e51679b54584c6c239d4e4ff6963dda1905fdc3c6"),),
)


def pick_answer(labels) -> str:
    """The answer of an LXMERT label dict: highest score, ties to the first answer as sorted text."""
    if not isinstance(labels, dict):
        raise RecordError("malformed_record", f"label is {type(labels).__name__}, expected {{answer: score}}")
    if not labels:
        raise RecordError("empty_answer", "label dict is empty")
    for answer, score in labels.items():
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise RecordError("malformed_record", f"score of answer {answer!r} is {score!r}, not a number")
    best = max(labels.values())
    answer = sorted(str(a) for a, s in labels.items() if s == best)[0].strip()
    if not answer:
        raise RecordError("empty_answer", "answer is empty")
    return answer


# LXMERT entries (one image and its ~7 questions each) per work unit.
ENTRIES_PER_UNIT = 16


@dataclass(frozen=True)
class EntryChunk:
    """A work unit: consecutive LXMERT entries of one split file, with their index in it."""

    split: str
    file: str  # relative to the raw folder
    folder: str  # image sub-folder of the split
    entries: tuple[tuple[int, Any], ...]


@dataclass(frozen=True)
class ParquetUnit:
    """A work unit: one split parquet file of the Hugging Face copy (relative to the raw folder)."""

    path: str


def _lxmert_present(raw: Path) -> list[tuple[str, Path, str]]:
    return [(split, raw / name, folder) for split, name, folder in LXMERT_FILES if (raw / name).is_file()]


class PathVqaBuilder(Builder):
    info = INFO

    def check_layout(self, raw: Path) -> None:
        expected = (
            f"expected data/{{train,validation,test}}-*.parquet (Hugging Face {INFO.hf_repo}) "
            f"or pvqa_{{train,val,test}}.json + {IMAGE_DIR}/{{train,val,test}}/<img_id>.jpg "
            "(official repository's LXMERT files beside the Google Drive images)"
        )
        if not raw.is_dir():
            raise LayoutError(f"{raw}: no such folder ({expected})")
        if parquet_files(raw):
            return
        if _lxmert_present(raw):
            if not (raw / IMAGE_DIR).is_dir():
                raise LayoutError(f"{raw}: found pvqa_*.json but not the {IMAGE_DIR}/ folder beside it ({expected})")
            for _, path, _ in _lxmert_present(raw):
                check_record_file(path, ("img_id", "sentf", "labelf"), "a JSON array of LXMERT entries (img_id, sentf.pvqa, labelf.pvqa)")
            return
        raise LayoutError(f"{raw}: not a PathVQA copy: {expected}")

    def input_files(self, raw: Path) -> list[Path]:
        parquets = parquet_files(raw)
        if parquets:
            return parquets
        return [path for _, path, _ in _lxmert_present(raw)]

    def generate(self, raw: Path) -> Iterator[BuilderItem]:
        if parquet_files(raw):
            yield from self._parquet(raw)
        else:
            yield from self._lxmert(raw)

    def estimated_records(self, raw: Path) -> int | None:
        if parquet_files(raw):
            return parquet_rows(raw)
        total = 0
        for _, path, _ in _lxmert_present(raw):
            entries, reject = load_json_list(path, raw)
            for entry in entries or [None]:
                try:
                    total += len(_unpack_entry(entry)[1]) if entry is not None else 1
                except RecordError:
                    total += 1
        return total

    def _parquet(self, raw: Path) -> Iterator[BuilderItem]:
        yield from parquet_vqa_samples(INFO, raw, MODALITY)

    def work_units(self, raw: Path) -> list[Unit]:
        parquets = parquet_files(raw)
        if parquets:
            return [ParquetUnit(p.relative_to(raw).as_posix()) for p in parquets]
        return list(self._lxmert_units(raw, ENTRIES_PER_UNIT))

    def generate_unit(self, raw: Path, unit: Unit) -> Iterator[BuilderItem]:
        if isinstance(unit, ParquetUnit):
            yield from parquet_file_vqa_samples(INFO, raw, raw / unit.path, MODALITY)
        elif isinstance(unit, EntryChunk):
            yield from self._entry_chunk(raw, unit, unit_image_cache(raw / IMAGE_DIR))
        else:
            yield from super().generate_unit(raw, unit)

    def _lxmert(self, raw: Path) -> Iterator[BuilderItem]:
        images = ImageCache(raw / IMAGE_DIR)
        for unit in self._lxmert_units(raw, None):
            if isinstance(unit, ReadyItems):
                yield from unit.items
            else:
                yield from self._entry_chunk(raw, unit, images)

    def _lxmert_units(self, raw: Path, size: int | None) -> Iterator[EntryChunk | ReadyItems]:
        """Per LXMERT file (held-out first): its reject when unreadable, else its entries (in chunks)."""
        for split, path, folder in _lxmert_present(raw):
            rel = path.relative_to(raw).as_posix()
            entries, reject = load_json_list(path, raw)
            if reject:
                yield ReadyItems((reject,))
                continue
            indexed = list(enumerate(entries))
            for part in chunks(indexed, size) if size else [tuple(indexed)]:
                yield EntryChunk(split, rel, folder, part)

    def _entry_chunk(self, raw: Path, unit: EntryChunk, images: ImageCache) -> Iterator[BuilderItem]:
        for entry_index, entry in unit.entries:
            yield from self._lxmert_entry(raw, entry, entry_index, unit.split, unit.folder, unit.file, images)

    def _lxmert_entry(
        self, raw: Path, entry, entry_index: int, split: str, folder: str, rel: str, images: ImageCache
    ) -> Iterator[BuilderItem]:
        try:
            img_id, questions, labels = _unpack_entry(entry)
        except RecordError as err:
            img_id = entry.get("img_id") if isinstance(entry, dict) else None
            yield reject_from(err, rel, str(img_id) if isinstance(img_id, str) and img_id else f"#{entry_index}")
            return
        image_rel = _image_path(raw, folder, img_id)
        for q_index, (question, label) in enumerate(zip(questions, labels)):
            record_id = f"{img_id}:{q_index}"
            try:
                question_text = text_field({"question": question}, "question", "empty_question")
                answer = pick_answer(label)
                fields = {"img_id": img_id, "question_index": str(q_index)}
                if len(label) > 1:
                    fields["answer_scores"] = label
                yield vqa_sample(
                    INFO,
                    split=split,
                    modality=MODALITY,
                    image=images.get(image_rel),
                    raw_path=f"{IMAGE_DIR}/{image_rel}",
                    question=question_text,
                    answer=answer,
                    answer_type=closed_if_yes_no(answer),
                    record_id=record_id,
                    fields=fields,
                )
            except (RecordError, MediaError, SchemaError) as err:
                yield reject_from(err, rel, record_id)


def _unpack_entry(entry) -> tuple[str, list, list]:
    """img_id, questions and label dicts of one LXMERT entry; RecordError when malformed."""
    if not isinstance(entry, dict):
        raise RecordError("malformed_record", f"expected an object, found {type(entry).__name__}")
    img_id = entry.get("img_id")
    if not isinstance(img_id, str) or not img_id.strip():
        raise RecordError("malformed_record", f"img_id {img_id!r} is not a non-empty string")
    try:
        questions = entry["sentf"]["pvqa"]
        labels = entry["labelf"]["pvqa"]
    except (KeyError, TypeError):
        raise RecordError("malformed_record", "expected sentf.pvqa and labelf.pvqa lists") from None
    if not isinstance(questions, list) or not isinstance(labels, list):
        raise RecordError("malformed_record", "sentf.pvqa and labelf.pvqa must be lists")
    if len(questions) != len(labels):
        raise RecordError(
            "malformed_record", f"{len(questions)} questions but {len(labels)} labels for image {img_id}"
        )
    return img_id, questions, labels


def _image_path(raw: Path, folder: str, img_id: str) -> str:
    """Path under images/ of an image: the first suffix that exists, else .jpg (then missing_image)."""
    for suffix in IMAGE_SUFFIXES:
        candidate = f"{folder}/{img_id}{suffix}"
        try:
            if (raw / IMAGE_DIR / candidate).is_file():
                return candidate
        except (OSError, ValueError):  # a name too long or holding NUL: read_image rejects it, naming it
            break
    return f"{folder}/{img_id}{IMAGE_SUFFIXES[0]}"
