"""Shared pieces of the 2D VQA builders (VQA-RAD, SLAKE, PathVQA).

One place turns (image, question, answer) into a Sample, normalises the
sources' answer_type quirks and reads Hugging Face parquet copies, so the
builders only know their own layouts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pyarrow.parquet as pq

from omnivmed.builders.base import LayoutError, Reject, SourceInfo
from omnivmed.data.media import EncodedImage, MediaError, encode_image_bytes, stable_error_text
from omnivmed.data.schema import IMAGE_TOKEN, Provenance, Sample, SchemaError, Turn, VisualMeta, make_sample

YES_NO = frozenset({"yes", "no"})


class RecordError(ValueError):
    """One annotation record that cannot become a Sample."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def normalise_answer_type(value) -> str:
    """'OPEN', 'CLOSED', 'CLOSED ' (VQA-RAD has two) -> 'open' / 'closed'."""
    text = str(value or "").strip().lower()
    if text not in ("open", "closed"):
        raise RecordError("bad_answer_type", f"answer_type {value!r} is neither OPEN nor CLOSED")
    return text


def closed_if_yes_no(answer: str) -> str:
    """For sources without answer_type: closed means a yes/no answer (LLaVA-Med's rule)."""
    return "closed" if answer.strip().lower() in YES_NO else "open"


def text_field(record: dict, key: str, reason: str) -> str:
    """A question or answer as text; numbers (VQA-RAD has int answers) become strings."""
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        if value is None or value == "":
            raise RecordError(reason, f"{key} is missing or empty")
        raise RecordError("malformed_record", f"{key} has type {type(value).__name__}")
    text = str(value).strip()
    if not text:
        raise RecordError(reason, f"{key} is empty")
    return text


def vqa_sample(
    info: SourceInfo,
    *,
    split: str,
    modality: str,
    image: EncodedImage,
    raw_path: str,
    question: str,
    answer: str,
    answer_type: str,
    record_id: str,
    fields: dict | None = None,
) -> Sample:
    return make_sample(
        source=info.name,
        split=split,
        task="vqa",
        modality=modality,
        visual_kind="image",
        frames=[image.data],
        frame_format=image.format,
        visual_meta=VisualMeta(original_shape=(image.height, image.width)),
        conversations=[Turn("user", f"{IMAGE_TOKEN}\n{question}"), Turn("assistant", answer)],
        answer_type=answer_type,
        provenance=Provenance(
            raw_paths=(raw_path,),
            record_id=record_id,
            license=info.license,
            source_url=info.homepage,
            fields=tuple(sorted((k, _as_text(v)) for k, v in (fields or {}).items())),
        ),
    )


def _as_text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)


def reject_from(error: Exception, file: str, record: str) -> Reject:
    """Turn a record-level failure into a Reject (the pipeline goes on)."""
    if isinstance(error, (RecordError, MediaError)):
        return Reject(file, record, error.reason, error.detail)
    if isinstance(error, SchemaError):
        return Reject(file, record, "schema", str(error))
    raise error


def load_json(path: Path, raw: Path, expected: type = list) -> tuple[list | dict | None, Reject | None]:
    """Read a JSON array (or object); a malformed file becomes one Reject instead of a crash."""
    rel = path.relative_to(raw).as_posix()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        return None, Reject(rel, "-", "malformed_json", f"{rel}: not valid JSON ({err})")
    except (OSError, UnicodeDecodeError) as err:
        why = err.strerror if isinstance(err, OSError) else str(err)  # an OSError's text holds the absolute path
        return None, Reject(rel, "-", "malformed_json", f"{rel}: cannot read ({why})")
    if not isinstance(data, expected):
        what = "a JSON array" if expected is list else "a JSON object"
        return None, Reject(rel, "-", "malformed_json", f"{rel}: expected {what}, found {type(data).__name__}")
    return data, None


def check_record_file(path: Path, keys: tuple[str, ...], expected: str) -> None:
    """Stop with one :class:`LayoutError` when an annotation JSON is empty or in a foreign layout.

    ``keys`` are fields every question record of the expected layout holds;
    ``expected`` says what the file should be. A file that does not parse is
    left to the build (it becomes a ``malformed_json`` reject naming the file);
    a list or a single record-less object is left to the build too. Stopped
    here: an empty file, a list none of whose first records hold ``keys``
    (another mirror's layout, e.g. questions grouped per image), and an object
    grouping such records under image names.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return  # the build names the file and the reason
    if not text.strip():
        raise LayoutError(f"{path}: empty file; expected {expected}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return
    if isinstance(data, list):
        records = [r for r in data[:50] if isinstance(r, dict)]
        if records and not any(all(k in r for k in keys) for r in records):
            found = sorted({k for r in records for k in r})[:8]
            raise LayoutError(
                f"{path}: foreign layout: expected {expected}; found records with keys {', '.join(found)} "
                "(a copy from another mirror? use the official files)"
            )
    elif isinstance(data, dict) and data and _holds_nested_records(data, keys):
        raise LayoutError(
            f"{path}: foreign layout: expected {expected}; found an object of {len(data)} groups keyed by "
            f"{next(iter(data))!r}... (questions grouped per image, from another mirror?)"
        )


def _holds_nested_records(data: dict, keys: tuple[str, ...]) -> bool:
    for value in list(data.values())[:20]:
        inner = value if isinstance(value, list) else list(value.values()) if isinstance(value, dict) else []
        if isinstance(value, dict) and any(k in value for k in keys):
            return True
        if any(isinstance(r, dict) and any(k in r for k in keys) for r in inner[:20]):
            return True
    return False


def load_json_list(path: Path, raw: Path) -> tuple[list | None, Reject | None]:
    return load_json(path, raw, list)


def iter_parquet_vqa(path: Path, raw: Path) -> Iterator[tuple[int, dict | None, EncodedImage | Reject]]:
    """Rows of a Hugging Face VQA parquet (image{bytes,path}, question, answer).

    Yields (row index, record, image or Reject). Read one row group at a time so
    a multi-GB parquet never sits in memory whole.
    """
    rel = path.relative_to(raw).as_posix()
    try:
        parquet = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises several types for a broken file
        yield -1, None, Reject(rel, "-", "malformed_parquet", f"{rel}: cannot read parquet ({stable_error_text(err)})")
        return
    missing = {"image", "question", "answer"} - set(parquet.schema_arrow.names)
    if missing:
        yield -1, None, Reject(rel, "-", "malformed_parquet", f"{rel}: missing columns {sorted(missing)}")
        return
    index = 0
    for group in range(parquet.num_row_groups):
        for row in parquet.read_row_group(group, columns=["image", "question", "answer"]).to_pylist():
            image = row.get("image") or {}
            try:
                encoded = encode_image_bytes(image.get("bytes") or b"", f"{rel}[{index}]")
            except MediaError as err:
                encoded = Reject(rel, str(index), err.reason, err.detail)
            yield index, row, encoded
            index += 1


def parquet_rows(raw: Path) -> int | None:
    """Rows of every split parquet from the files' footers (no data read), for a progress bar."""
    try:
        return sum(pq.ParquetFile(path).metadata.num_rows for path in parquet_files(raw))
    except Exception:  # a broken parquet: no total, the build reports the file
        return None


def json_list_length(path: Path, skip=None) -> int | None:
    """Elements of a JSON array file (those ``skip`` does not drop), for a progress bar; None when unreadable."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return 1  # the build yields one reject for the file
    if not isinstance(data, list):
        return 1
    return sum(1 for r in data if not (skip and skip(r)))


def parquet_split(path: Path) -> str | None:
    """HF parquet files are named <split>-NNNNN-of-NNNNN[-hash].parquet."""
    name = path.name.split("-")[0].lower()
    return {"train": "train", "validation": "validation", "val": "validation", "test": "test"}.get(name)


def parquet_files(raw: Path) -> list[Path]:
    """Parquet files of an HF dataset copy, held-out splits first, then by name."""
    order = {"test": 0, "validation": 1, "train": 2}
    files = [p for p in raw.rglob("*.parquet") if parquet_split(p) is not None]
    return sorted(files, key=lambda p: (order[parquet_split(p)], p.relative_to(raw).as_posix()))


def parquet_vqa_samples(info: SourceInfo, raw: Path, modality: str) -> Iterator[Sample | Reject]:
    """Samples of a Hugging Face VQA parquet copy (no answer_type there: closed = yes/no)."""
    for path in parquet_files(raw):
        yield from parquet_file_vqa_samples(info, raw, path, modality)


def parquet_file_vqa_samples(info: SourceInfo, raw: Path, path: Path, modality: str) -> Iterator[Sample | Reject]:
    """Samples of one split parquet file of a Hugging Face VQA copy."""
    rel = path.relative_to(raw).as_posix()
    split = parquet_split(path)
    for index, row, image in iter_parquet_vqa(path, raw):
        if isinstance(image, Reject):
            yield image
            continue
        try:
            question = text_field(row, "question", "empty_question")
            answer = text_field(row, "answer", "empty_answer")
            source_path = (row.get("image") or {}).get("path")
            yield vqa_sample(
                info,
                split=split,
                modality=modality,
                image=image,
                raw_path=f"{rel}#{index}",
                question=question,
                answer=answer,
                answer_type=closed_if_yes_no(answer),
                record_id=f"{rel}#{index}",
                fields={"image_path": source_path} if source_path else None,
            )
        except (RecordError, SchemaError) as err:
            yield reject_from(err, rel, str(index))
