"""Any CT/MR collection you hold: DICOM series, NIfTI files or slice folders as volume Samples.

Layout: volumes anywhere under the raw folder, plus an optional annotation
file at its root, ``annotations.csv`` or ``annotations.jsonl`` (or the file
named by ``-o annotations=...``), one row per exchange:

* ``volume`` (required): path relative to the raw folder of a NIfTI file, a
  DICOM series folder or a ``<int>.png`` slice folder; ``folder#2`` picks the
  second series (by SeriesNumber) of a folder that holds several (with
  ``-o four_d=split`` the volumes of a 4D series are numbered the same way, in
  b-value / temporal order);
* either ``question`` and ``answer`` (task vqa; ``answer_type`` open/closed,
  else closed exactly when the answer is yes/no) or ``report`` (task
  report_generation; ``prompt`` optional);
* optional ``split`` (train/validation/test, default ``-o split=``),
  ``modality`` (our vocabulary; else the DICOM Modality, else
  ``-o modality=``), ``task`` (any of the schema's tasks), ``record_id``.

Without an annotation file every volume found gets the questions its headers
answer and nothing else: which modality (DICOM Modality, or ``-o modality=``)
and which acquisition plane (from the direction cosines). Nothing about
findings is ever made up.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

from omnivmed.builders.base import Builder, BuilderOption, BuilderOptionError, LayoutError, Reject, SourceInfo, Unit
from omnivmed.builders.vqa2d import closed_if_yes_no
from omnivmed.builders.volume_samples import (
    EncodedVolumeCache,
    four_d_option,
    relative,
    volume_option_specs,
    volume_reject,
    volume_sample,
    volume_settings,
)
from omnivmed.data.fileio import is_within
from omnivmed.data.schema import MODALITIES, SPLITS, TASKS, UNSPECIFIED_MODALITY, Sample, SchemaError
from omnivmed.data.volume import VolumeError, VolumeInput, encode_volume, find_volume_inputs, read_volume
from omnivmed.data.volume.discover import classify, expand
from omnivmed.data.volume.encode import PNG_ENCODING

ANNOTATION_NAMES = ("annotations.csv", "annotations.jsonl")
DICOM_CODES = {"ct": "CT", "mri": "MR", "pet": "PT"}
MODALITY_NAMES = {"ct": "CT", "mri": "MRI", "pet": "PET", "ultrasound": "ultrasound", "angiography": "angiography"}
DEFAULT_REPORT_PROMPT = "Write the radiology report for this volume."

INFO = SourceInfo(
    name="volumes",
    description="Your own CT/MR volumes (DICOM series, NIfTI, slice folders) with an optional CSV/JSONL of "
    "questions and answers or reports; without one, header-derived modality and plane questions.",
    homepage="",  # the collection's, given with -o homepage=
    license="unstated (give your collection's with -o license=)",
    citation="",
)


@dataclass(frozen=True)
class Row:
    """One exchange about one volume, from the annotation file or derived from headers."""

    volume: str  # as written (relative path, optional #N)
    line: int
    question: str
    answer: str
    task: str
    answer_type: str | None
    split: str
    modality: str | None
    record_id: str


@dataclass(frozen=True)
class AnnotationRejects:
    """A work unit: the annotation rows that could not be read (yielded before any volume)."""

    rejects: tuple[Reject, ...]


@dataclass(frozen=True)
class VolumeRows:
    """A work unit: one volume and a run of annotation rows about it, in build order."""

    volume: str  # as the rows write it
    modality_hint: str | None
    rows: tuple[Row, ...]
    annotations: str  # the annotation file, relative to the raw folder


@dataclass(frozen=True)
class HeaderInput:
    """A work unit without annotations: one volume input found under the raw folder (or why it is unusable)."""

    item: VolumeInput | None
    error: tuple[str, str, str] | None = None  # VolumeError's (reason, file, detail): it does not pickle


class VolumesBuilder(Builder):
    info = INFO
    frame_encoding = PNG_ENCODING
    option_specs = (
        *volume_option_specs("auto"),
        four_d_option(),
        BuilderOption("annotations", "", "annotation file relative to the raw folder (default: annotations.csv/.jsonl if present)"),
        BuilderOption("split", "train", "split of rows that do not name one"),
        BuilderOption("modality", "", "modality of volumes whose headers do not say (NIfTI, slice folders): e.g. ct, mri"),
        BuilderOption("license", "", "license of your collection, written into every sample's provenance"),
        BuilderOption("homepage", "", "where your collection comes from (URL), for provenance and the data card"),
        BuilderOption("citation", "", "how your collection asks to be cited, for the data card"),
    )

    def configure(self) -> None:
        self.settings = volume_settings(self.options)
        if self.options["split"] not in SPLITS:
            raise BuilderOptionError(f"volumes: split {self.options['split']!r} is not one of {', '.join(SPLITS)}")
        modality = self.options["modality"]
        if modality and modality not in MODALITIES:
            raise BuilderOptionError(f"volumes: modality {modality!r} is not one of {', '.join(MODALITIES)}")
        self.info = replace(
            INFO,
            license=self.options["license"] or INFO.license,
            homepage=self.options["homepage"] or INFO.homepage,
            citation=self.options["citation"],
        )

    # -- layout -------------------------------------------------------------------------------

    def annotation_file(self, raw: Path) -> Path | None:
        if self.options["annotations"]:
            path = raw / self.options["annotations"]
            if not path.is_file():
                raise LayoutError(f"{path}: annotation file not found")
            return path
        found = [raw / n for n in ANNOTATION_NAMES if (raw / n).is_file()]
        if len(found) > 1:
            raise LayoutError(f"{raw}: both annotations.csv and annotations.jsonl; name one with -o annotations=FILE")
        return found[0] if found else None

    def check_layout(self, raw: Path) -> None:
        if not raw.is_dir():
            raise LayoutError(f"{raw}: no such folder (expected volumes: DICOM series folders, .nii/.nii.gz, slice folders)")
        if self.annotation_file(raw) is None and not any(isinstance(i, VolumeInput) for i in find_volume_inputs(raw)):
            raise LayoutError(f"{raw}: no DICOM series, NIfTI file or slice folder found and no annotations file")

    def input_files(self, raw: Path) -> list[Path]:
        annotations = self.annotation_file(raw)
        if annotations is None:
            volumes = [i.path for i in find_volume_inputs(raw) if isinstance(i, VolumeInput)]
            return sorted(set(volumes))
        rows, _ = self._read_annotations(raw, annotations)
        volumes = {(raw / r.volume.split("#")[0]) for r in rows}
        return sorted({annotations, *(p for p in volumes if p.exists() and is_within(raw, p))})

    # -- annotations --------------------------------------------------------------------------

    def _read_annotations(self, raw: Path, path: Path) -> tuple[list[Row], list[Reject]]:
        rel = path.relative_to(raw).as_posix()
        rows: list[Row] = []
        rejects: list[Reject] = []
        try:
            records = list(_records(path))
        except (OSError, UnicodeDecodeError, csv.Error) as err:
            raise LayoutError(f"{path}: cannot read the annotation file ({err})") from None
        for line, record in records:
            if isinstance(record, str):
                rejects.append(Reject(rel, f"line {line}", "malformed_record", f"{rel} line {line}: {record}"))
                continue
            try:
                rows.append(self._row(record, line))
            except ValueError as err:
                reason, detail = err.args
                rejects.append(Reject(rel, f"line {line}", reason, f"{rel} line {line}: {detail}"))
        return rows, rejects

    def _row(self, record: dict, line: int) -> Row:
        def text(key: str) -> str:
            value = record.get(key)
            return "" if value is None else str(value).strip()

        volume = text("volume")
        if not volume:
            raise ValueError("missing_volume", "no 'volume' column value")
        question, answer, report = text("question"), text("answer"), text("report")
        if report and (question or answer):
            raise ValueError("malformed_record", "a row has either question/answer or report, not both")
        if report:
            question, answer, task, answer_type = text("prompt") or DEFAULT_REPORT_PROMPT, report, "report_generation", None
        elif question and answer:
            task = "vqa"
            answer_type = text("answer_type").lower() or closed_if_yes_no(answer)
            if answer_type not in ("open", "closed"):
                raise ValueError("bad_answer_type", f"answer_type {answer_type!r} is neither open nor closed")
        else:
            raise ValueError("empty_question_or_answer", "needs question and answer, or report")
        if "<image>" in question or "<video>" in question:
            raise ValueError("placeholder_in_text", "the question already holds a placeholder; omnivmed adds it")
        task = text("task") or task
        if task not in TASKS:
            raise ValueError("bad_task", f"task {task!r} is not one of {', '.join(TASKS)}")
        if task not in ("vqa", "surgical_vqa"):
            answer_type = None  # open/closed is a VQA notion (e.g. a caption row has none)
        split = text("split") or self.options["split"]
        if split not in SPLITS:
            raise ValueError("bad_split", f"split {split!r} is not one of {', '.join(SPLITS)}")
        modality = text("modality") or None
        if modality is not None and modality not in MODALITIES + (UNSPECIFIED_MODALITY,):
            raise ValueError("bad_modality", f"modality {modality!r} is not one of {', '.join(MODALITIES)}")
        record_id = text("record_id") or f"line {line}"
        return Row(volume, line, question, answer, task, answer_type, split, modality, record_id)

    # -- generation ---------------------------------------------------------------------------

    def generate(self, raw: Path) -> Iterator[Sample | Reject]:
        annotations = self.annotation_file(raw)
        if annotations is None:
            yield from self._generate_from_headers(raw)
            return
        rows, rejects = self._read_annotations(raw, annotations)
        yield from rejects
        hints = _modality_hints(rows)
        cache = EncodedVolumeCache(lambda ref: self._encode(raw, ref, hints.get(ref)))
        rel_annotations = annotations.relative_to(raw).as_posix()
        for row in _held_out_first(rows):
            yield from self._annotated_row(raw, row, cache, rel_annotations)

    def work_units(self, raw: Path) -> list[Unit]:
        """One unit per volume: each run of consecutive rows about one volume, or each volume input found."""
        annotations = self.annotation_file(raw)
        if annotations is None:
            return [
                HeaderInput(None, (item.reason, str(item.file), item.detail)) if isinstance(item, VolumeError) else HeaderInput(item)
                for item in find_volume_inputs(raw)
            ]
        rows, rejects = self._read_annotations(raw, annotations)
        hints = _modality_hints(rows)
        rel_annotations = annotations.relative_to(raw).as_posix()
        units: list[Unit] = [AnnotationRejects(tuple(rejects))] if rejects else []
        run: list[Row] = []
        for row in [*_held_out_first(rows), None]:
            if run and (row is None or row.volume != run[0].volume):
                units.append(VolumeRows(run[0].volume, hints.get(run[0].volume), tuple(run), rel_annotations))
                run = []
            if row is not None:
                run.append(row)
        return units

    def generate_unit(self, raw: Path, unit: Unit) -> Iterator[Sample | Reject]:
        if isinstance(unit, VolumeRows):
            cache = EncodedVolumeCache(lambda ref: self._encode(raw, ref, unit.modality_hint), max_items=1)
            for row in unit.rows:
                yield from self._annotated_row(raw, row, cache, unit.annotations)
        elif isinstance(unit, HeaderInput):
            yield from self._header_input(raw, unit.item if unit.error is None else VolumeError(*unit.error))
        elif isinstance(unit, AnnotationRejects):
            yield from unit.rejects
        else:
            yield from super().generate_unit(raw, unit)

    def _annotated_row(self, raw: Path, row: Row, cache: EncodedVolumeCache, rel_annotations: str) -> Iterator:
        try:
            volume = cache.get(row.volume)
        except VolumeError as err:
            yield volume_reject(err, raw, f"{rel_annotations} line {row.line}")
            return
        yield from self._sample(raw, row, volume, rel_annotations)

    def _generate_from_headers(self, raw: Path) -> Iterator:
        for item in find_volume_inputs(raw):
            yield from self._header_input(raw, item)

    def _header_input(self, raw: Path, item: VolumeInput | VolumeError) -> Iterator:
        if isinstance(item, VolumeError):
            yield volume_reject(item, raw, relative(item.file, raw))
            return
        try:
            series_list = expand(item, self.settings.four_d)
        except VolumeError as err:
            yield volume_reject(err, raw, relative(item.path, raw))
            return
        for series in series_list:
            ref = relative(series.path, raw)
            if series.series is not None and series.series.of > 1:
                ref += f"#{series.series.index}"
            try:
                volume = self._encode_input(raw, series)
            except VolumeError as err:
                yield volume_reject(err, raw, ref)
                continue
            rows = list(self._header_rows(ref, volume))
            if not rows:
                yield Reject(ref, ref, "nothing_to_ask", f"{ref}: the headers give neither modality nor plane; add an annotations file")
            for row in rows:
                yield from self._sample(raw, row, volume, None)

    def _header_rows(self, ref: str, volume) -> Iterator[Row]:
        modality = volume.modality or self.options["modality"] or None
        fields = dict(volume.fields)
        base = dict(volume=ref, line=0, task="vqa", split=self.options["split"], modality=modality)
        if modality in MODALITY_NAMES:
            yield Row(question="Which imaging modality acquired this volume?", answer=MODALITY_NAMES[modality],
                      answer_type="open", record_id=f"{ref}:modality", **base)
        plane = fields.get("acquisition_plane")
        if plane in ("axial", "coronal", "sagittal"):
            yield Row(question="In which plane were the slices of this volume acquired?", answer=plane.capitalize(),
                      answer_type="open", record_id=f"{ref}:plane", **base)

    def _encode(self, raw: Path, ref: str, modality_hint: str | None = None):
        path_text, _, series_number = ref.partition("#")
        path = raw / path_text
        if not is_within(raw, path):
            raise VolumeError("path_escapes_raw", path_text, "volume path leaves the raw folder")
        item = classify(path)
        if item.kind == "dicom":
            found = expand(item, self.settings.four_d)
            if series_number:
                if not series_number.isdigit() or not 1 <= int(series_number) <= len(found):
                    raise VolumeError("missing_volume", ref, f"folder holds {len(found)} series; no series #{series_number}")
                item = found[int(series_number) - 1]
            elif len(found) > 1:
                raise VolumeError("ambiguous_series", path_text, f"folder holds {len(found)} series; write {path_text}#N")
            else:
                item = found[0]
        return self._encode_input(raw, item, modality_hint)

    def _encode_input(self, raw: Path, item: VolumeInput, modality_hint: str | None = None):
        volume = read_volume(item, self.settings.limits)
        hint = modality_hint or self.options["modality"]
        if volume.modality is None and hint in DICOM_CODES:
            # Headerless formats: the user's word picks the preset ("auto": CT window for ct).
            volume = replace(volume, modality=DICOM_CODES[hint])
        return encode_volume(volume, self.settings.recipe, relative(item.path, raw))

    def _sample(self, raw: Path, row: Row, volume, annotations: str | None) -> Iterator:
        modality = row.modality or volume.modality or self.options["modality"] or UNSPECIFIED_MODALITY
        raw_paths = (relative(raw / row.volume.split("#")[0], raw),) + ((annotations,) if annotations else ())
        try:
            yield volume_sample(
                self.info,
                split=row.split,
                task=row.task,
                modality=modality,
                volume=volume,
                raw_paths=raw_paths,
                record_id=row.record_id,
                question=row.question,
                answer=row.answer,
                answer_type=row.answer_type,
            )
        except SchemaError as err:
            where = annotations or row.volume
            yield Reject(where, row.record_id, "schema_violation", f"{where} {row.record_id}: {err}")


def _modality_hints(rows: list[Row]) -> dict[str, str]:
    """A modality named in the annotations also picks the "auto" preset for NIfTI files (first row wins)."""
    hints: dict[str, str] = {}
    for row in rows:
        if row.modality and row.modality != UNSPECIFIED_MODALITY:
            hints.setdefault(row.volume, row.modality)
    return hints


def _held_out_first(rows: list[Row]) -> list[Row]:
    """Test rows first, then validation, then train (dedup keeps the held-out copy); stable otherwise."""
    order = {"test": 0, "validation": 1, "train": 2}
    return sorted(rows, key=lambda r: order[r.split])


def _records(path: Path) -> Iterator[tuple[int, dict | str]]:
    """(line, record) from a CSV with a header row or a JSONL file; a bad JSON line gives its error text."""
    if path.suffix.lower() == ".jsonl":
        with open(path, encoding="utf-8") as f:
            for line, text in enumerate(f, start=1):
                if not text.strip():
                    continue
                try:
                    record = json.loads(text)
                except json.JSONDecodeError as err:
                    yield line, f"not valid JSON ({err.msg})"
                    continue
                yield line, record if isinstance(record, dict) else f"a JSON {type(record).__name__}, not an object"
        return
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "volume" not in reader.fieldnames:
            raise csv.Error(f"the header row must name a 'volume' column (found {reader.fieldnames})")
        for record in reader:
            yield reader.line_num, record

