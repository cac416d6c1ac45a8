"""SLAKE: bilingual radiology VQA with semantic labels (Liu et al., ISBI 2021).

Reads the official layout, which is also the Hugging Face copy once
``imgs.zip`` is unpacked: ``train.json``, ``validate.json`` (the official
name; Hugging Face calls it ``validation.json``), ``test.json`` and
``imgs/<img_name>`` with ``img_name`` like ``xmlab1/source.jpg``.

Only English rows (``q_lang == "en"``) are kept; Chinese rows are skipped, not
rejected. Per language the image splits are disjoint, but the English and
Chinese splits are drawn differently (142 images are in train for one language
and test for the other), so mixing languages would leak test images into train.

Splits are the official files (validate -> ``validation``). SLAKE's own
``modality`` field gives the modality (CT, MRI, X-Ray); its location,
content_type, base_type and knowledge-graph triple are kept as provenance
fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from omnivmed.builders.base import Builder, BuilderItem, DownloadFile, LayoutError, ReadyItems, SourceInfo, Unit, chunks
from omnivmed.builders.vqa2d import (
    RecordError,
    check_record_file,
    json_list_length,
    load_json_list,
    normalise_answer_type,
    reject_from,
    text_field,
    vqa_sample,
)
from omnivmed.data.media import ImageCache, MediaError, unit_image_cache
from omnivmed.data.schema import SchemaError

_HF_BASE = "https://huggingface.co/datasets/BoKelvin/SLAKE/resolve/main"

IMAGE_DIR = "imgs"
TRAIN_JSON = "train.json"
TEST_JSON = "test.json"
# Official name first: when both are present the official file is read.
VALIDATION_JSONS = ("validate.json", "validation.json")

INFO = SourceInfo(
    name="slake",
    description=(
        "SLAKE 1.0: semantically labelled, knowledge-enhanced radiology VQA (CT, MRI, X-ray) on 642 images; "
        "English rows only (train 4,919 / validation 1,053 / test 1,061)."
    ),
    homepage="https://www.med-vqa.com/slake/",
    license="CC-BY-4.0",
    citation=(
        "Liu B, Zhan LM, Xu L, Ma L, Yang Y, Wu XM. SLAKE: A Semantically-Labeled Knowledge-Enhanced Dataset "
        "for Medical Visual Question Answering. IEEE International Symposium on Biomedical Imaging (ISBI) 2021."
    ),
    # Hugging Face serves the three JSONs (validate.json renamed validation.json)
    # and the images as one zip that unpacks to imgs/. Checksums are not pinned yet.
    downloads=(
        DownloadFile(url=f"{_HF_BASE}/train.json", filename="train.json"),
        DownloadFile(url=f"{_HF_BASE}/validation.json", filename="validation.json"),
        DownloadFile(url=f"{_HF_BASE}/test.json", filename="test.json"),
        DownloadFile(url=f"{_HF_BASE}/imgs.zip", filename="imgs.zip", extract=True),
    ),
    hf_repo="BoKelvin/SLAKE",
    known_sha256=(
        ("train.json", "7a9fb81f9d7bb145c3d7e9bc8d3b9016ba18b6539ea5031a53bae8fd3cd991c3"),
        ("validate.json", "32b016440b0c3be11056a78a18eeab46333268407fbb6e6b32f9f4c2debc50f6"),
        ("test.json", "6be8f7b4c5a46cdbc713a5210a25b6ed5aa1fd1574c83cefb4f998131f17c2c3"),
    ),
)

MODALITY_MAP = {"CT": "ct", "MRI": "mri", "X-Ray": "x_ray"}
LANGUAGE = "en"
RECORD_KEYS = ("question", "answer", "img_name")  # every question record of the official layout has them

_KEPT_FIELDS = ("img_id", "qid", "q_lang", "location", "modality", "content_type", "base_type", "triple")


# English records per work unit (one image read each, at most).
RECORDS_PER_UNIT = 64


@dataclass(frozen=True)
class RecordChunk:
    """A work unit: consecutive English records of one split file, with their index in it."""

    split: str
    file: str  # relative to the raw folder
    records: tuple[tuple[int, Any], ...]


def _validation_json(raw: Path) -> Path | None:
    for name in VALIDATION_JSONS:
        if (raw / name).is_file():
            return raw / name
    return None


def split_files(raw: Path) -> list[tuple[str, Path]]:
    """(split, annotation file) in held-out-first order; only files that exist."""
    candidates = [("test", raw / TEST_JSON), ("validation", _validation_json(raw)), ("train", raw / TRAIN_JSON)]
    return [(split, path) for split, path in candidates if path is not None and path.is_file()]


class SlakeBuilder(Builder):
    info = INFO

    def check_layout(self, raw: Path) -> None:
        expected = (
            f"expected {TRAIN_JSON}, validate.json (or validation.json, the Hugging Face name), "
            f"{TEST_JSON} and the {IMAGE_DIR}/ folder (Hugging Face {INFO.hf_repo}: unzip imgs.zip)"
        )
        if not raw.is_dir():
            raise LayoutError(f"{raw}: no such folder ({expected})")
        missing = [name for name in (TRAIN_JSON, TEST_JSON) if not (raw / name).is_file()]
        if _validation_json(raw) is None:
            missing.insert(1, "validate.json|validation.json")
        if missing:
            raise LayoutError(f"{raw}: not a SLAKE copy, missing {', '.join(missing)}: {expected}")
        if not (raw / IMAGE_DIR).is_dir():
            raise LayoutError(f"{raw}: found the SLAKE JSON files but not the {IMAGE_DIR}/ folder ({expected})")
        for _, path in split_files(raw):
            check_record_file(path, RECORD_KEYS, "a JSON array of SLAKE question records (qid, img_name, question, answer, q_lang, ...)")

    def input_files(self, raw: Path) -> list[Path]:
        return [path for _, path in split_files(raw)]

    def estimated_records(self, raw: Path) -> int | None:
        def chinese(record) -> bool:
            return isinstance(record, dict) and record.get("q_lang") == "zh"

        counts = [json_list_length(path, chinese) for _, path in split_files(raw)]
        return None if None in counts else sum(counts)

    def generate(self, raw: Path) -> Iterator[BuilderItem]:
        images = ImageCache(raw / IMAGE_DIR)
        for unit in self._units(raw, chunk=None):
            yield from self._unit_items(raw, unit, images)

    def work_units(self, raw: Path) -> list[Unit]:
        return list(self._units(raw, chunk=RECORDS_PER_UNIT))

    def generate_unit(self, raw: Path, unit: Unit) -> Iterator[BuilderItem]:
        if isinstance(unit, RecordChunk):
            yield from self._unit_items(raw, unit, unit_image_cache(raw / IMAGE_DIR))
        else:
            yield from super().generate_unit(raw, unit)

    def _units(self, raw: Path, chunk: int | None) -> Iterator[RecordChunk | ReadyItems]:
        """Per split file (held-out first): its reject when unreadable, else its English records (in chunks)."""
        for split, path in split_files(raw):
            rel = path.relative_to(raw).as_posix()
            records, reject = load_json_list(path, raw)
            if reject:
                yield ReadyItems((reject,))  # this split is lost; the others are still built
                continue
            # The Chinese half is deliberately left out, not an error.
            english = [(i, r) for i, r in enumerate(records) if not (isinstance(r, dict) and r.get("q_lang") == "zh")]
            for part in chunks(english, chunk) if chunk else [tuple(english)]:
                yield RecordChunk(split, rel, part)

    def _unit_items(self, raw: Path, unit: RecordChunk | ReadyItems, images: ImageCache) -> Iterator[BuilderItem]:
        if isinstance(unit, ReadyItems):
            yield from unit.items
            return
        for index, record in unit.records:
            record_id = f"{unit.file}:{record.get('qid', index) if isinstance(record, dict) else index}"
            try:
                yield self._sample(record, unit.split, record_id, images)
            except (RecordError, MediaError, SchemaError) as err:
                yield reject_from(err, unit.file, record_id)

    def _sample(self, record, split: str, record_id: str, images: ImageCache):
        if not isinstance(record, dict):
            raise RecordError("malformed_record", f"expected an object, found {type(record).__name__}")
        if record.get("q_lang") != LANGUAGE:
            raise RecordError("unknown_language", f"q_lang {record.get('q_lang')!r} is neither 'en' nor 'zh'")
        modality = MODALITY_MAP.get(str(record.get("modality", "")).strip())
        if modality is None:
            raise RecordError(
                "unknown_modality",
                f"modality {record.get('modality')!r} is not one of {', '.join(MODALITY_MAP)}",
            )
        question = text_field(record, "question", "empty_question")
        answer = text_field(record, "answer", "empty_answer")
        answer_type = normalise_answer_type(record.get("answer_type"))
        img_name = text_field(record, "img_name", "missing_image")
        image = images.get(img_name)
        return vqa_sample(
            INFO,
            split=split,
            modality=modality,
            image=image,
            raw_path=f"{IMAGE_DIR}/{img_name}",
            question=question,
            answer=answer,
            answer_type=answer_type,
            record_id=record_id,
            fields={k: record[k] for k in _KEPT_FIELDS if k in record},
        )
