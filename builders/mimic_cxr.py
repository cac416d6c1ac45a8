"""MIMIC-CXR: chest X-ray report generation and VQA from a user's own credentialed copy.

MIMIC-CXR is gated (PhysioNet credentialing and a data use agreement):
nothing of it ships with this toolkit, and shards built from it must not be
shared. The builder reads a local copy laid out as PhysioNet publishes it:

* MIMIC-CXR-JPG: ``files/pXX/pSUBJECT/sSTUDY/<dicom_id>.jpg`` with
  ``mimic-cxr-2.0.0-split.csv(.gz)`` (train / validate / test per image)
  and ``mimic-cxr-2.0.0-metadata.csv(.gz)`` (or ``metadata.csv``; its
  ``ViewPosition`` column);
* the MIMIC-CXR reports, unzipped into the same tree:
  ``files/pXX/pSUBJECT/sSTUDY.txt``;
* optionally MIMIC-Ext-MIMIC-CXR-VQA's JSON with answers (see
  :mod:`omnivmed.builders.mimic_cxr_vqa`).

``-o tasks=report`` (default), ``vqa`` or ``report,vqa``.

Report generation: one Sample per study of the official split (validate ->
``validation``). The image is the study's first frontal view, in the order
of ``-o views=`` (``PA,AP``: PA is the standard projection) and then by
dicom_id; when that file is absent the next one is taken (counted, off the
split table and the file listing: work units run elsewhere). The
answer is the report's FINDINGS and IMPRESSION (``-o sections=``; parsing
in :mod:`omnivmed.builders.mimic_reports`). Rejected: a study without a
report file (``missing_report``), a report with neither section
(``no_findings_impression``), a study without an image in the wanted views
(``no_view``) or whose images are all missing (``missing_image``), and any
image or report in ``files/`` that the split CSV does not list
(``not_in_split_csv``).

Hashed into the manifest: the two tables and the VQA JSON. The 227K
reports and 377K images are not (a fixed release; ``--force`` rebuilds).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from omnivmed.builders.base import (
    HELD_OUT_FIRST,
    Builder,
    BuilderItem,
    BuilderOption,
    BuilderOptionError,
    LayoutError,
    ReadyItems,
    Reject,
    SourceInfo,
    Unit,
    chunks,
)
from omnivmed.builders.mimic_cxr_vqa import VQA_DIRS, VqaRun, vqa_dir, vqa_files, vqa_samples, vqa_unit_samples, vqa_units
from omnivmed.builders.mimic_reports import SECTIONS, report_sections, report_text
from omnivmed.builders.mimic_tables import METADATA_NAMES, SPLIT_NAMES, SplitTable, Study, find_table, read_split, read_view_positions
from omnivmed.data.media import MediaError, read_image
from omnivmed.data.schema import IMAGE_TOKEN, Provenance, SchemaError, Turn, VisualMeta, make_sample

FILES_DIR = "files"
TASKS = ("report", "vqa")

INFO = SourceInfo(
    name="mimic_cxr",
    description=(
        "MIMIC-CXR (your credentialed local copy): report generation from FINDINGS/IMPRESSION on MIMIC-CXR-JPG "
        "frontal views with the official split, and MIMIC-Ext-MIMIC-CXR-VQA questions. Never shipped or shared."
    ),
    homepage="https://physionet.org/content/mimic-cxr-jpg/2.0.0/",
    license="PhysioNet Credentialed Health Data License 1.5.0 (MIMIC-CXR, MIMIC-CXR-JPG, MIMIC-Ext-MIMIC-CXR-VQA); do not share",
    citation=(
        "Johnson AEW, Pollard TJ, Berkowitz SJ, Greenbaum NR, Lungren MP, Deng C, Mark RG, Horng S. MIMIC-CXR, a "
        "de-identified publicly available database of chest radiographs with free-text reports. Scientific Data 6, "
        "317 (2019). Johnson A, Lungren M, Peng Y, Lu Z, Mark R, Berkowitz S, Horng S. MIMIC-CXR-JPG (version 2.0.0), "
        "PhysioNet (2019). Bae S, Kyung D, Ryu J, et al. EHRXQA: A Multi-Modal Question Answering Dataset for "
        "Electronic Health Records with Chest X-ray Images. NeurIPS 2023 Datasets and Benchmarks (MIMIC-CXR-VQA)."
    ),
    gated=True,
)


# Studies per work unit (one report and one image read each).
STUDIES_PER_UNIT = 64


@dataclass(frozen=True)
class StudyChunk:
    """A work unit: consecutive studies in build order, with the files of theirs that are on disk."""

    studies: tuple[tuple[str, Study], ...]
    on_disk: frozenset[str]


# Per process: the metadata table's views, read once rather than shipped with every unit.
_VIEWS: dict[tuple, dict[str, str]] = {}


def _process_views(raw: Path) -> dict[str, str]:
    path = find_table(raw, METADATA_NAMES)
    key = (str(path), path.stat().st_size, path.stat().st_mtime_ns)
    if key not in _VIEWS:
        _VIEWS.clear()
        _VIEWS[key] = read_view_positions(path, raw)
    return _VIEWS[key]


def report_prompt(sections: tuple[str, ...]) -> str:
    named = " and ".join(s for s in sections)
    return f"{IMAGE_TOKEN}\nWrite the {named} section{'s' if len(sections) > 1 else ''} of the radiology report for this chest X-ray."


def report_path(study: Study, study_id: str) -> str:
    return f"{FILES_DIR}/p{study.subject_id[:2]}/p{study.subject_id}/s{study_id}.txt"


def image_path(study: Study, study_id: str, dicom: str) -> str:
    return f"{FILES_DIR}/p{study.subject_id[:2]}/p{study.subject_id}/s{study_id}/{dicom}.jpg"


def _list_option(options: dict[str, str], name: str, allowed: tuple[str, ...] | None, lower: bool = True) -> tuple[str, ...]:
    values = tuple(v.strip().lower() if lower else v.strip() for v in options[name].split(",") if v.strip())
    bad = [v for v in values if allowed is not None and v not in allowed]
    if not values or bad:
        choices = f"; choose from {', '.join(allowed)}" if allowed else ""
        raise BuilderOptionError(f"mimic_cxr: {name}={options[name]!r} is not a comma-separated list{choices}")
    return tuple(dict.fromkeys(values))


class MimicCxrBuilder(Builder):
    info = INFO
    option_specs = (
        BuilderOption("tasks", "report", "report, vqa or report,vqa (vqa needs MIMIC-Ext-MIMIC-CXR-VQA's JSON with answers)"),
        BuilderOption("views", "PA,AP", "ViewPositions a report's image may have, in order of preference"),
        BuilderOption("sections", "findings,impression", "report sections that form the target text: findings, impression or both"),
        BuilderOption("vqa_dir", "", f"folder of the VQA train/valid/test.json inside the raw folder (default: {', '.join(VQA_DIRS)})"),
    )

    def configure(self) -> None:
        self.tasks = _list_option(self.options, "tasks", TASKS)
        self.views = _list_option(self.options, "views", None, lower=False)
        self.sections = tuple(s for s in SECTIONS if s in _list_option(self.options, "sections", SECTIONS))
        self._counts: Counter = Counter()

    def counters(self) -> dict[str, int]:
        return dict(sorted(self._counts.items()))

    # ------------------------------------------------------------ layout

    def check_layout(self, raw: Path) -> None:
        expected = (
            f"expected your MIMIC-CXR-JPG copy ({FILES_DIR}/pXX/pSUBJECT/sSTUDY/*.jpg, {SPLIT_NAMES[0]}, "
            f"{METADATA_NAMES[0]}) with the MIMIC-CXR reports unzipped into {FILES_DIR}/ (credentialed access: {INFO.homepage})"
        )
        if not raw.is_dir():
            raise LayoutError(f"{raw}: no such folder ({expected})")
        if not (raw / FILES_DIR).is_dir():
            raise LayoutError(f"{raw}: no {FILES_DIR}/ folder ({expected})")
        if find_table(raw, METADATA_NAMES) is None:
            raise LayoutError(f"{raw}: no {' / '.join(METADATA_NAMES)} ({expected})")
        if "report" in self.tasks and find_table(raw, SPLIT_NAMES) is None:
            raise LayoutError(f"{raw}: no {' / '.join(SPLIT_NAMES)} ({expected})")
        if "vqa" in self.tasks and vqa_dir(raw, self.options["vqa_dir"]) is None:
            where = self.options["vqa_dir"] or " or ".join(VQA_DIRS)
            raise LayoutError(
                f"{raw}: tasks include vqa but {where} holds no train.json/valid.json/test.json "
                "(run MIMIC-CXR-VQA's build script with your PhysioNet credentials, or pass -o vqa_dir=)"
            )

    def input_files(self, raw: Path) -> list[Path]:
        files = [find_table(raw, METADATA_NAMES)]
        if "report" in self.tasks:
            files.append(find_table(raw, SPLIT_NAMES))
        if "vqa" in self.tasks:
            files += [path for _, path in vqa_files(vqa_dir(raw, self.options["vqa_dir"]))]
        return files

    # ------------------------------------------------------------ samples

    def generate(self, raw: Path) -> Iterator[BuilderItem]:
        views = read_view_positions(find_table(raw, METADATA_NAMES), raw)
        self._counts = Counter()
        if "report" in self.tasks:
            rejects, studies, on_disk = self._report_plan(raw, views)
            yield from rejects
            for study_id, study in studies:
                yield self._report_item(raw, study_id, study, views, on_disk)
        if "vqa" in self.tasks:
            yield from vqa_samples(INFO, raw, vqa_dir(raw, self.options["vqa_dir"]), views)

    def work_units(self, raw: Path) -> list[Unit]:
        """Chunks of ``STUDIES_PER_UNIT`` studies, then runs of VQA rows; the counter is read here."""
        self._counts = Counter()
        units: list[Unit] = []
        if "report" in self.tasks:
            views = read_view_positions(find_table(raw, METADATA_NAMES), raw)
            rejects, studies, on_disk = self._report_plan(raw, views)
            if rejects:
                units.append(ReadyItems(tuple(rejects)))
            for part in chunks(studies, STUDIES_PER_UNIT):
                files = {report_path(study, sid) for sid, study in part}
                files |= {image_path(study, sid, d) for sid, study in part for d in study.dicoms}
                units.append(StudyChunk(part, frozenset(files & on_disk)))
        if "vqa" in self.tasks:
            units += vqa_units(raw, vqa_dir(raw, self.options["vqa_dir"]))
        return units

    def generate_unit(self, raw: Path, unit: Unit) -> Iterator[BuilderItem]:
        if isinstance(unit, StudyChunk):
            views = _process_views(raw)
            for study_id, study in unit.studies:
                yield self._report_item(raw, study_id, study, views, unit.on_disk)
        elif isinstance(unit, VqaRun):
            yield from vqa_unit_samples(INFO, raw, unit, _process_views(raw))
        else:
            yield from super().generate_unit(raw, unit)

    def _report_plan(self, raw: Path, views: dict[str, str]) -> tuple[list[Reject], list[tuple[str, Study]], set[str]]:
        """The split table's and the file scan's rejects, the studies in build order, the files on disk;
        counts the studies whose preferred view is missing (read off the table and the listing)."""
        table = read_split(find_table(raw, SPLIT_NAMES), raw)
        on_disk, extra = _scan_files(raw / FILES_DIR, table)
        order = {split: n for n, split in enumerate(HELD_OUT_FIRST)}
        studies = sorted(table.studies.items(), key=lambda kv: (order[kv[1].split], report_path(kv[1], kv[0])))
        for study_id, study in studies:
            present = [image_path(study, study_id, d) in on_disk for _, d in self._candidates(study, views)]
            if present and not present[0] and any(present):
                self._counts["preferred_image_missing"] += 1
        return [*table.rejects, *extra], studies, on_disk

    def _candidates(self, study: Study, views: dict[str, str]) -> list[tuple[int, str]]:
        """(rank, dicom) of the study's images in the wanted views, preferred first."""
        rank = {view: n for n, view in enumerate(self.views)}
        return sorted((rank[views[d]], d) for d in study.dicoms if views.get(d) in rank)

    def _report_item(self, raw: Path, study_id: str, study: Study, views: dict[str, str], on_disk) -> BuilderItem:
        try:
            return self._report_sample(raw, study_id, study, views, on_disk)
        except _StudyReject as err:
            return err.reject
        except SchemaError as err:
            return Reject(report_path(study, study_id), f"s{study_id}", "schema", str(err))

    def _report_sample(self, raw: Path, study_id: str, study: Study, views: dict[str, str], on_disk: set[str]):
        report_rel = report_path(study, study_id)
        record = f"s{study_id}"
        if report_rel not in on_disk:
            raise _StudyReject(Reject(report_rel, record, "missing_report", f"{report_rel}: no such report"))
        try:
            text = (raw / report_rel).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            why = err.strerror if isinstance(err, OSError) else str(err)
            raise _StudyReject(Reject(report_rel, record, "unreadable_report", f"{report_rel}: cannot read ({why})")) from None
        sections = report_sections(text)
        target = report_text(sections, self.sections)
        if not target:
            wanted = "/".join(s.upper() for s in self.sections)
            raise _StudyReject(Reject(report_rel, record, "no_findings_impression", f"{report_rel}: no {wanted} section"))
        dicom, image, view = self._frontal_image(raw, study_id, study, views, on_disk)
        fields = {
            "subject_id": study.subject_id,
            "study_id": study_id,
            "dicom_id": dicom,
            "ViewPosition": view,
            "sections": ",".join(s for s in self.sections if s in sections),
        }
        return make_sample(
            source=INFO.name,
            split=study.split,
            task="report_generation",
            modality="x_ray",
            visual_kind="image",
            frames=[image.data],
            frame_format=image.format,
            visual_meta=VisualMeta(original_shape=(image.height, image.width)),
            conversations=[Turn("user", report_prompt(self.sections)), Turn("assistant", target)],
            provenance=Provenance(
                raw_paths=(image_path(study, study_id, dicom), report_rel),
                record_id=record,
                license=INFO.license,
                source_url=INFO.homepage,
                fields=tuple(sorted(fields.items())),
            ),
        )

    def _frontal_image(self, raw: Path, study_id: str, study: Study, views: dict[str, str], on_disk: set[str]):
        candidates = self._candidates(study, views)
        record = f"s{study_id}"
        if not candidates:
            found = ", ".join(sorted({views.get(d) or "none" for d in study.dicoms}))
            raise _StudyReject(
                Reject(report_path(study, study_id), record, "no_view", f"s{study_id}: no image with ViewPosition {'/'.join(self.views)} (has {found})")
            )
        for _, dicom in candidates:
            rel = image_path(study, study_id, dicom)
            if rel in on_disk:
                try:
                    return dicom, read_image(raw, rel), views[dicom]
                except MediaError as err:
                    raise _StudyReject(Reject(rel, record, err.reason, err.detail)) from None
        first = image_path(study, study_id, candidates[0][1])
        raise _StudyReject(Reject(first, record, "missing_image", f"{first}: no such image (nor any other {'/'.join(self.views)} view of s{study_id})"))


class _StudyReject(Exception):
    def __init__(self, reject: Reject):
        super().__init__(reject.detail)
        self.reject = reject


def _scan_files(files: Path, table: SplitTable) -> tuple[set[str], list[Reject]]:
    """Report and image paths under files/ (relative to raw), and a reject for each one the split CSV lacks."""
    on_disk: set[str] = set()
    extra: list[Reject] = []
    for group in sorted(os.scandir(files), key=lambda e: e.name):
        if not group.is_dir():
            continue
        for subject in sorted(os.scandir(group.path), key=lambda e: e.name):
            if not subject.is_dir():
                continue
            base = f"{FILES_DIR}/{group.name}/{subject.name}"
            for entry in sorted(os.scandir(subject.path), key=lambda e: e.name):
                if entry.is_file() and entry.name.endswith(".txt") and entry.name.startswith("s"):
                    study = entry.name[1:-4]
                    on_disk.add(f"{base}/{entry.name}")
                    if study not in table.studies and study not in table.conflicting:
                        extra.append(Reject(f"{base}/{entry.name}", f"s{study}", "not_in_split_csv", f"report s{study} is not in the split CSV"))
                elif entry.is_dir() and entry.name.startswith("s"):
                    for image in sorted(os.scandir(entry.path), key=lambda e: e.name):
                        if not (image.is_file() and image.name.endswith(".jpg")):
                            continue
                        rel = f"{base}/{entry.name}/{image.name}"
                        on_disk.add(rel)
                        if image.name[:-4] not in table.image_study:
                            extra.append(Reject(rel, image.name[:-4], "not_in_split_csv", f"{rel}: image is not in the split CSV"))
    return on_disk, extra
