"""A small MIMIC-CXR copy in PhysioNet's layout, generated (nothing of MIMIC-CXR is ever shipped).

Layout (MIMIC-CXR-JPG + the MIMIC-CXR reports unzipped into the same files/)::

    mimic-cxr-2.0.0-split.csv.gz          dicom_id,study_id,subject_id,split
    mimic-cxr-2.0.0-metadata.csv.gz       the real 12 columns (ViewPosition among them)
    files/p10/p10000032/s50000001.txt     report text in the real section layout
    files/p10/p10000032/s50000001/<dicom_id>.jpg
    mimiccxrvqa/dataset/{train,valid,test}.json   MIMIC-CXR-VQA rows after its answer script

The report texts are written for these tests (no real report is copied); the
layout follows the published reports: a ``FINAL REPORT`` line, upper-case
headers with a colon, lines indented by one space, de-identified ``___``.

What each study is there for is said in :data:`STUDIES`.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

SPLIT_CSV = "mimic-cxr-2.0.0-split.csv.gz"
METADATA_CSV = "mimic-cxr-2.0.0-metadata.csv.gz"
METADATA_HEADER = (
    "dicom_id",
    "subject_id",
    "study_id",
    "PerformedProcedureStepDescription",
    "ViewPosition",
    "Rows",
    "Columns",
    "StudyDate",
    "StudyTime",
    "ProcedureCodeSequence_CodeMeaning",
    "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
)
VQA_DIR = "mimiccxrvqa/dataset"

FINDINGS = (
    "PA and lateral views of the chest were provided.  The lungs are clear without\n"
    " focal consolidation, effusion or pneumothorax.  The cardiomediastinal\n"
    " silhouette is within normal limits.  No acute osseous abnormality."
)
IMPRESSION = "No acute intrathoracic process."


def report(*sections: tuple[str, str]) -> str:
    """A report in the published layout: header lines, then ``HEADER: text`` sections separated by blank lines."""
    lines = ["                                 FINAL REPORT", " EXAMINATION:  CHEST (PA AND LAT)", " ", " INDICATION:  ___ with cough.", " "]
    for header, text in sections:
        lines += [f" {header}:", " ", f" {text}", " "]
    return "\n".join(lines) + "\n"


def dicom_id(name: str) -> str:
    """A dicom_id in MIMIC-CXR-JPG's form (five groups of eight hex digits), stable per name."""
    digest = hashlib.sha1(name.encode()).hexdigest()
    return "-".join(digest[i : i + 8] for i in range(0, 40, 8))


@dataclass(frozen=True)
class Image:
    name: str
    view: str  # ViewPosition ('' = blank in the metadata)
    on_disk: bool = True
    in_split: bool = True

    @property
    def dicom(self) -> str:
        return dicom_id(self.name)


@dataclass(frozen=True)
class StudySpec:
    subject: str
    study: str
    split: str | None  # split CSV value; None: not in the split CSV at all
    report: str | None  # None: no report file
    images: tuple[Image, ...]
    why: str


REPORT_FULL = report(("COMPARISON", "None."), ("FINDINGS", FINDINGS), ("IMPRESSION", IMPRESSION))
REPORT_IMPRESSION_ONLY = report(("COMPARISON", "Chest radiograph ___."), ("IMPRESSION", "Interval placement of a right PICC line,\n tip in the low SVC."))
REPORT_NO_SECTIONS = report(("COMPARISON", "___."), ("TECHNIQUE", "Portable AP view."), ("NOTE", "Study limited by patient rotation."))
REPORT_TYPO = report(("FINDINGS", "Mild cardiomegaly.  Small left effusion."), ("IMPRESSON", "Small left pleural effusion."))

STUDIES: tuple[StudySpec, ...] = (
    StudySpec("10000032", "50000001", "train", REPORT_FULL,
              (Image("pa1", "PA"), Image("lat1", "LATERAL"), Image("stray1", "PA", in_split=False)),
              "findings + impression; PA preferred over the lateral; a stray image the split CSV lacks"),
    StudySpec("10000032", "50000002", "train", REPORT_IMPRESSION_ONLY, (Image("ap2", "AP"),), "impression only; AP"),
    StudySpec("11000011", "50000003", "validate", REPORT_NO_SECTIONS, (Image("pa3", "PA"),), "no FINDINGS/IMPRESSION"),
    StudySpec("11000011", "50000004", "test", REPORT_FULL, (Image("lat4", "LATERAL"),), "no frontal view"),
    StudySpec("11000011", "50000005", None, REPORT_FULL, (Image("pa5", "PA", in_split=False),), "report and image not in the split CSV"),
    StudySpec("12000022", "50000006", "test", None, (Image("pa6", "PA"),), "no report file"),
    StudySpec("12000022", "50000007", "test", REPORT_FULL,
              (Image("pa7", "PA", on_disk=False), Image("ap7", "AP")), "the PA file is missing: the AP is taken"),
    StudySpec("12000022", "50000008", "validate", REPORT_TYPO, (Image("pa8", "PA"), Image("blank8", "")), "IMPRESSON typo; a blank ViewPosition"),
    StudySpec("12000022", "50000009", "train", REPORT_FULL, (Image("pa9", "PA", on_disk=False),), "its only frontal image is missing"),
)  # fmt: skip


def image_bytes(name: str, shape=(40, 32)) -> bytes:
    """A real grayscale JPEG (as MIMIC-CXR-JPG stores them), distinct per name."""
    seed = int(hashlib.sha1(name.encode()).hexdigest()[:8], 16)
    pixels = np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return buf.tobytes()


def study_dir(spec: StudySpec) -> str:
    return f"files/p{spec.subject[:2]}/p{spec.subject}/s{spec.study}"


def vqa_row(split: str, idx: int, image: tuple[StudySpec, Image], question: str, answer, semantic_type: str, content_type: str) -> dict:
    """A row as MIMIC-CXR-VQA's generate_answer.py writes it (ids as strings: it dumps with default=str)."""
    spec, img = image
    return {
        "subject_id": spec.subject,
        "study_id": spec.study,
        "image_path": f"p{spec.subject[:2]}/p{spec.subject}/s{spec.study}/{img.dicom}.jpg",
        "answer": answer,
        "split": split,
        "idx": idx,
        "image_id": img.dicom,
        "question": question,
        "content_type": content_type,
        "semantic_type": semantic_type,
        "template": "Is there ${attribute} in the ${object}?",
        "template_program": "program_1",
        "template_arguments": {"object": {"0": "left lung"}, "attribute": {"0": "pleural effusion"}, "category": {}, "viewpos": {}, "gender": {}},
    }


def image_of(study: str, name: str) -> tuple[StudySpec, Image]:
    spec = next(s for s in STUDIES if s.study == study)
    return spec, next(i for i in spec.images if i.name == name)


def default_vqa_rows() -> dict[str, list]:
    return {
        "test.json": [vqa_row("test", 0, image_of("50000006", "pa6"), "Is there pleural effusion in the left lung?", ["yes"], "verify", "presence")],
        "valid.json": [vqa_row("valid", 1, image_of("50000008", "pa8"), "Which side has the effusion, left or right?", ["left"], "choose", "attribute")],
        "train.json": [
            vqa_row("train", 2, image_of("50000001", "pa1"), "List all abnormalities in the left lung.", ["atelectasis", "pleural effusion"], "query", "abnormality"),
            vqa_row("train", 3, image_of("50000001", "lat1"), "What abnormalities are seen in the right lung?", [], "query", "abnormality"),
            {k: v for k, v in vqa_row("train", 4, image_of("50000002", "ap2"), "Is the view AP?", ["yes"], "verify", "plane").items() if k != "answer"},
            vqa_row("train", 5, image_of("50000009", "pa9"), "Is there a device?", ["no"], "verify", "presence"),
        ],
    }


def write_mimic_tree(raw: Path, *, vqa: dict[str, list | str] | None = None, gzip_tables: bool = True) -> Path:
    """Write :data:`STUDIES` (and the VQA rows, default :func:`default_vqa_rows`) into ``raw``."""
    raw.mkdir(parents=True, exist_ok=True)
    split_rows, meta_rows = [], []
    for spec in STUDIES:
        folder = raw / study_dir(spec)
        if spec.report is not None:
            folder.parent.mkdir(parents=True, exist_ok=True)
            (raw / f"{study_dir(spec)}.txt").write_text(spec.report, encoding="utf-8")
        for img in spec.images:
            if img.on_disk:
                folder.mkdir(parents=True, exist_ok=True)
                (folder / f"{img.dicom}.jpg").write_bytes(image_bytes(img.name))
            if img.in_split and spec.split is not None:
                split_rows.append((img.dicom, spec.study, spec.subject, spec.split))
            view_code = {"PA": "postero-anterior", "AP": "antero-posterior", "LATERAL": "lateral"}.get(img.view, "")
            meta_rows.append(
                (img.dicom, spec.subject, spec.study, "CHEST (PA AND LAT)", img.view, 40, 32, "21800506", "213014.531", "CHEST (PA AND LAT)", view_code, "Erect")
            )
    split_name, meta_name = (SPLIT_CSV, METADATA_CSV) if gzip_tables else (SPLIT_CSV[:-3], METADATA_CSV[:-3])
    _write_table(raw / split_name, ("dicom_id", "study_id", "subject_id", "split"), split_rows, gzip_tables)
    _write_table(raw / meta_name, METADATA_HEADER, meta_rows, gzip_tables)
    rows = default_vqa_rows() if vqa is None else vqa
    if rows:
        (raw / VQA_DIR).mkdir(parents=True, exist_ok=True)
        for name, content in rows.items():
            text = content if isinstance(content, str) else json.dumps(content, indent=4)
            (raw / VQA_DIR / name).write_text(text, encoding="utf-8")
    return raw


def _write_table(path: Path, header: tuple[str, ...], rows: list[tuple], gzipped: bool) -> None:
    """A CSV as PhysioNet ships it: gzipped (or, as users often keep it, unpacked)."""
    text = io.StringIO(newline="")
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    data = text.getvalue().encode()
    path.write_bytes(gzip.compress(data, mtime=0) if gzipped else data)
