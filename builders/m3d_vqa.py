"""M3D-VQA: multiple-choice and open questions on M3D-Cap's CT volumes (Bai et al. 2024).

Layout: ``M3D_VQA_{train,val,test,test5k}.csv`` at the top of the raw folder
or in ``M3D_VQA/`` (``M3D-VQA/`` as M3D's repository names it), and the
M3D-Cap volumes their ``Image Path`` column names, found inside the same raw
folder as M3D-Cap's builder finds them (M3D's ``.npy`` or the raw slice
folders; see :mod:`omnivmed.builders.m3d`).

Columns: ``Image Path, Text, Question Type, Question, Choice A..D, Answer,
Answer Choice``; ``Text`` (the whole report) is not used. Question types:
1 plane, 2 phase, 3 organ, 4 abnormality, 5 location.

Each row gives, per configured form, a ``closed`` sample formatted exactly as
M3D does (the question, a space, ``Choices: A. .. B. .. C. .. D. ..``; the
answer ``X. answer``) and an ``open`` sample (the question and the answer).
Splits: test (``M3D_VQA_test.csv``; ``test5k``, a subset of it, only when the
full test file is absent), validation (``val``), train.
"""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from omnivmed.builders.base import Builder, BuilderItem, BuilderOption, LayoutError, ReadyItems, Reject, Unit, runs
from omnivmed.builders.m3d import comma_list, load_volume, source_info
from omnivmed.builders.volume_samples import (
    EncodedVolumeCache,
    relative,
    volume_option_specs,
    volume_reject,
    volume_sample,
    volume_settings,
)
from omnivmed.data.schema import SchemaError
from omnivmed.data.volume import VolumeError
from omnivmed.data.volume.encode import PNG_ENCODING

FOLDERS = ("", "M3D_VQA", "M3D-VQA")
# (our split, file stems tried in order): test5k is a subset of test, read only without it.
SPLIT_FILES = (
    ("test", ("M3D_VQA_test", "M3D_VQA_test5k")),
    ("validation", ("M3D_VQA_val",)),
    ("train", ("M3D_VQA_train",)),
)
COLUMNS = ("Image Path", "Question Type", "Question", "Choice A", "Choice B", "Choice C", "Choice D", "Answer", "Answer Choice")
QUESTION_TYPES = {1: "plane", 2: "phase", 3: "organ", 4: "abnormality", 5: "location"}
FORMS = ("closed", "open")
LETTERS = ("A", "B", "C", "D")
# The Text column holds a whole report; the csv module's default cap (128 KiB) is lifted for it.
_FIELD_LIMIT = 1 << 24

INFO = source_info(
    "m3d_vqa",
    "M3D-VQA: 510K multiple-choice and open questions (plane, phase, organ, abnormality, location) on M3D-Cap's "
    "CT volumes; from your own copy of the CSVs and the M3D-Cap volumes they name.",
)


@dataclass(frozen=True)
class SplitFile:
    split: str
    path: Path
    m3d_split: str  # test, test5k, val, train


@dataclass(frozen=True)
class VolumeRows:
    """A work unit: one volume, as a run of consecutive rows of one CSV that name it."""

    split_file: SplitFile
    rows: tuple[tuple[int, dict], ...]  # (data row index, row without the unused Text column)


def _image_of(indexed: tuple[int, dict]):
    return indexed[1].get("Image Path")


def split_files(raw: Path) -> list[SplitFile]:
    """The CSVs to read, held-out splits first; per split the first match of FOLDERS x stems."""
    found = []
    for split, stems in SPLIT_FILES:
        for stem in stems:
            path = next((raw / folder / f"{stem}.csv" for folder in FOLDERS if (raw / folder / f"{stem}.csv").is_file()), None)
            if path is not None:
                found.append(SplitFile(split, path, stem.removeprefix("M3D_VQA_")))
                break
    return found


class RowError(ValueError):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def question_type(value: str | None) -> int:
    text = (value or "").strip()
    try:
        number = float(text)
    except ValueError:
        number = float("nan")
    if not number.is_integer() or int(number) not in QUESTION_TYPES:
        raise RowError("bad_question_type", f"Question Type {value!r} is not one of 1-5")
    return int(number)


def _present(row: dict, column: str, reason: str) -> str:
    value = row.get(column)
    if value is None or not value.strip():
        raise RowError(reason, f"{column!r} is empty")
    return value


def closed_form(row: dict) -> tuple[str, str, str]:
    """(question, answer, answer choice) exactly as M3D formats the multiple-choice form."""
    question = _present(row, "Question", "missing_question")
    answer = _present(row, "Answer", "missing_answer")
    choices = [_present(row, f"Choice {letter}", "missing_choice") for letter in LETTERS]
    letter = _present(row, "Answer Choice", "missing_choice").strip()
    if letter not in LETTERS:
        raise RowError("bad_answer_choice", f"Answer Choice {letter!r} is not one of A-D")
    listed = " ".join(f"{x}. {c}" for x, c in zip(LETTERS, choices))
    return f"{question} Choices: {listed}", f"{letter}. {answer}", letter


def open_form(row: dict) -> tuple[str, str]:
    return _present(row, "Question", "missing_question"), str(_present(row, "Answer", "missing_answer"))


class M3dVqaBuilder(Builder):
    info = INFO
    frame_encoding = PNG_ENCODING
    option_specs = (
        *volume_option_specs("m3d"),
        BuilderOption("forms", ",".join(FORMS), "comma list of the question forms to emit per row: closed (multiple choice), open"),
    )

    def configure(self) -> None:
        self.settings = volume_settings(self.options)
        self.forms = comma_list(self.options["forms"], FORMS, "forms", INFO.name)

    def check_layout(self, raw: Path) -> None:
        expected = (
            "expected M3D_VQA_{train,val,test,test5k}.csv (at the top or in M3D_VQA/) and the M3D-Cap volumes they "
            f"name (M3D's .npy files or slice folders) in the same folder; pass your own copy with "
            f"`omnivmed-data download {INFO.name} --from PATH`"
        )
        if not raw.is_dir():
            raise LayoutError(f"{raw}: no such folder ({expected})")
        if not split_files(raw):
            raise LayoutError(f"{raw}: not an M3D-VQA copy: {expected}")

    def input_files(self, raw: Path) -> list[Path]:
        return [f.path for f in split_files(raw)]

    def generate(self, raw: Path) -> Iterator[BuilderItem]:
        cache = EncodedVolumeCache(lambda path: load_volume(raw, path, self.settings))
        for split_file in split_files(raw):
            yield from self._file(raw, split_file, cache)

    def work_units(self, raw: Path) -> list[Unit]:
        """Per CSV (held-out first), runs of rows about one volume; a file's rejects are units of their own.

        The rows are held here (without the report text, which is not used) until their unit is sent.
        """
        units: list[Unit] = []
        for split_file in split_files(raw):
            pending: list[tuple[int, dict]] = []
            for item in [*read_rows(split_file.path, relative(split_file.path, raw)), None]:
                if isinstance(item, tuple):
                    index, row = item
                    pending.append((index, {k: v for k, v in row.items() if k != "Text"}))
                    continue
                units += [VolumeRows(split_file, run) for run in runs(pending, _image_of)]
                pending = []
                if item is not None:
                    units.append(ReadyItems((item,)))
        return units

    def generate_unit(self, raw: Path, unit: Unit) -> Iterator[BuilderItem]:
        if isinstance(unit, VolumeRows):
            cache = EncodedVolumeCache(lambda path: load_volume(raw, path, self.settings), max_items=1)
            rel = relative(unit.split_file.path, raw)
            for index, row in unit.rows:
                yield from self._row(raw, rel, unit.split_file, index, row, cache)
        else:
            yield from super().generate_unit(raw, unit)

    def _file(self, raw: Path, split_file: SplitFile, cache: EncodedVolumeCache) -> Iterator[BuilderItem]:
        rel = relative(split_file.path, raw)
        for item in read_rows(split_file.path, rel):
            if isinstance(item, Reject):
                yield item
            else:
                yield from self._row(raw, rel, split_file, *item, cache)

    def _row(self, raw: Path, rel: str, split_file: SplitFile, index: int, row: dict, cache) -> Iterator[BuilderItem]:
        record = f"{rel}#{index}"
        try:
            image = _present(row, "Image Path", "missing_volume").strip()
            kind = question_type(row.get("Question Type"))
        except RowError as err:
            yield Reject(rel, record, err.reason, f"{record}: {err.detail}")
            return
        forms = []
        for form in self.forms:
            try:
                if form == "closed":
                    question, answer, letter = closed_form(row)
                else:
                    (question, answer), letter = open_form(row), (row.get("Answer Choice") or "").strip()
            except RowError as err:
                yield Reject(rel, f"{record}:{form}", err.reason, f"{record} ({form} form): {err.detail}")
                continue
            forms.append((form, question, answer, letter))
        if not forms:
            return
        try:
            volume, volume_file = cache.get(image)
        except VolumeError as err:
            yield volume_reject(err, raw, record)
            return
        for form, question, answer, letter in forms:
            try:
                yield volume_sample(
                    INFO,
                    split=split_file.split,
                    task="vqa",
                    modality="ct",
                    volume=volume,
                    raw_paths=(volume_file, rel),
                    record_id=f"{record}:{form}",
                    question=question,
                    answer=answer,
                    answer_type=form,
                    fields=(
                        ("question_type", str(kind)),
                        ("question_type_name", QUESTION_TYPES[kind]),
                        ("answer_choice", letter),
                        ("m3d_split", split_file.m3d_split),
                    ),
                )
            except SchemaError as err:
                yield Reject(rel, f"{record}:{form}", "schema", f"{record} ({form} form): {err}")


def read_rows(path: Path, rel: str) -> Iterator[tuple[int, dict] | Reject]:
    """(data row index, row) streamed from a CSV; a file that cannot be read (on) ends in one Reject."""
    if csv.field_size_limit() < _FIELD_LIMIT:
        csv.field_size_limit(min(_FIELD_LIMIT, sys.maxsize))
    index = -1
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
            if missing:
                yield Reject(rel, "-", "malformed_csv", f"{rel}: missing columns {', '.join(missing)}")
                return
            for index, row in enumerate(reader):
                yield index, row
    except (csv.Error, UnicodeDecodeError, OSError) as err:
        where = f"after row {index}" if index >= 0 else "at its start"
        why = getattr(err, "strerror", None) or (str(err).splitlines() or [""])[0]
        yield Reject(rel, f"{rel}#{index + 1}", "malformed_csv", f"{rel}: cannot be read {where} ({err.__class__.__name__}: {why})")
