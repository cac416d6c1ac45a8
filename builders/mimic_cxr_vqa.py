"""MIMIC-Ext-MIMIC-CXR-VQA rows (Bae et al.) into VQA Samples over MIMIC-CXR-JPG images.

The published JSON (``train.json``, ``valid.json``, ``test.json``) carries
answers only after its build script ran with the user's PhysioNet
credentials (``dataset_builder/generate_answer.py``); the pre-release
``_train.json`` files without answers are not read. A row is ``{split, idx,
image_id, question, content_type, semantic_type, template,
template_program, template_arguments, answer: [..], subject_id, study_id,
image_path}`` with ``image_path`` relative to MIMIC-CXR-JPG's ``files/``.

The answer is a list (lower-cased by the script): its items are joined with
", ". An empty list (the program found nothing) is rejected rather than
turned into an invented "none". ``verify`` and ``choose`` questions are
closed, ``query`` questions open. The data set's own split (from Chest
ImaGenome) is kept; it is not the official MIMIC-CXR split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from omnivmed.builders.base import BuilderItem, ReadyItems, Reject, SourceInfo
from omnivmed.builders.json_stream import json_rows, json_rows_at, json_rows_with_offsets
from omnivmed.builders.vqa2d import RecordError, reject_from, text_field, vqa_sample
from omnivmed.data.media import ImageCache, MediaError, unit_image_cache
from omnivmed.data.schema import SchemaError

# (split, file) held-out first.
VQA_FILES = (("test", "test.json"), ("validation", "valid.json"), ("train", "train.json"))
# Where a copy keeps them: the GitHub build output, the PhysioNet release, or the files themselves.
VQA_DIRS = ("mimiccxrvqa/dataset", "MIMIC-Ext-MIMIC-CXR-VQA/dataset", "mimic-cxr-vqa/dataset")
ANSWER_TYPES = {"verify": "closed", "choose": "closed", "query": "open"}
_KEPT_FIELDS = ("idx", "image_id", "subject_id", "study_id", "content_type", "semantic_type", "template", "template_program", "template_arguments")
# Images are 2-3K pixel JPEGs of 1-2 MB: a few questions per image in a row, so a short cache.
_CACHE_ITEMS = 32


# Rows per work unit.
ROWS_PER_UNIT = 256


@dataclass(frozen=True)
class VqaRun:
    """A work unit: ``count`` consecutive rows of one VQA file, from the one at ``start_byte``."""

    split: str
    file: str  # relative to the raw folder
    first_index: int
    start_byte: int
    count: int


def vqa_dir(raw: Path, option: str) -> Path | None:
    """The folder holding the VQA JSON: ``-o vqa_dir=`` or the first usual place that has a file."""
    candidates = (option,) if option else VQA_DIRS
    for rel in candidates:
        folder = raw / rel
        if any((folder / name).is_file() for _, name in VQA_FILES):
            return folder
    return None


def vqa_files(folder: Path) -> list[tuple[str, Path]]:
    return [(split, folder / name) for split, name in VQA_FILES if (folder / name).is_file()]


def answer_text(value) -> str:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise RecordError("missing_answer", "no answer list: build the answers with MIMIC-CXR-VQA's script and your PhysioNet credentials")
    items = [str(v).strip() for v in value if str(v).strip()]
    if not items:
        raise RecordError("empty_answer", "the answer list is empty")
    return ", ".join(items)


def vqa_samples(info: SourceInfo, raw: Path, folder: Path, views: dict[str, str]) -> Iterator[BuilderItem]:
    images = ImageCache(raw / "files", max_items=_CACHE_ITEMS)
    for split, path in vqa_files(folder):
        rel = path.relative_to(raw).as_posix()
        for item in json_rows(path, raw):
            if isinstance(item, Reject):
                yield item
                continue
            index, row = item
            yield _row_item(info, row, index, split, rel, images, views)


def vqa_units(raw: Path, folder: Path) -> list[VqaRun | ReadyItems]:
    """The rows of every VQA file as runs of ``ROWS_PER_UNIT`` by byte offset; a file's break is a unit of its reject."""
    units: list[VqaRun | ReadyItems] = []
    for split, path in vqa_files(folder):
        rel = path.relative_to(raw).as_posix()
        run: list[tuple[int, int]] = []
        for item in [*json_rows_with_offsets(path, raw), None]:
            if isinstance(item, tuple):
                run.append((item[0], item[2]))
            if run and (len(run) == ROWS_PER_UNIT or not isinstance(item, tuple)):
                units.append(VqaRun(split, rel, run[0][0], run[0][1], len(run)))
                run = []
            if isinstance(item, Reject):
                units.append(ReadyItems((item,)))
    return units


def vqa_unit_samples(info: SourceInfo, raw: Path, unit: VqaRun, views: dict[str, str]) -> Iterator[BuilderItem]:
    images = unit_image_cache(raw / "files", max_items=_CACHE_ITEMS)
    for index, row in enumerate(json_rows_at(raw / unit.file, unit.start_byte, unit.count), start=unit.first_index):
        yield _row_item(info, row, index, unit.split, unit.file, images, views)


def _row_item(info: SourceInfo, row, index: int, split: str, rel: str, images: ImageCache, views: dict[str, str]) -> BuilderItem:
    record_id = f"{rel}:{row.get('idx', f'#{index}') if isinstance(row, dict) else f'#{index}'}"
    try:
        return _sample(info, row, split, record_id, images, views)
    except (RecordError, MediaError, SchemaError) as err:
        return reject_from(err, rel, record_id)


def _sample(info: SourceInfo, row, split: str, record_id: str, images: ImageCache, views: dict[str, str]):
    if not isinstance(row, dict):
        raise RecordError("malformed_record", f"expected an object, found {type(row).__name__}")
    question = text_field(row, "question", "empty_question")
    answer = answer_text(row.get("answer"))
    image_path = text_field(row, "image_path", "missing_image")
    image = images.get(image_path)
    fields = {k: row[k] for k in _KEPT_FIELDS if row.get(k) is not None}
    view = views.get(str(row.get("image_id", "")))
    if view:
        fields["ViewPosition"] = view
    fields["answer"] = row.get("answer")
    return vqa_sample(
        info,
        split=split,
        modality="x_ray",
        image=image,
        raw_path=f"files/{image_path}",
        question=question,
        answer=answer,
        answer_type=ANSWER_TYPES.get(str(row.get("semantic_type", "")).strip(), "open"),
        record_id=record_id,
        fields=fields,
    )
