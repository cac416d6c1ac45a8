"""Small M3D-Cap / M3D-VQA copies in the real layouts, generated into a folder the caller owns.

The M3D-Cap tree (:func:`make_m3d_cap_tree`)::

    M3D_Cap/M3D_Cap.json                      index; every path carries the prefix (default M3D_Cap_npy/)
    M3D_Cap/ct_case/000001/text.txt           findings + discussion
    M3D_Cap/ct_case/000001/Axial_C__portal_venous_phase/0.png .. 11.png
    M3D_Cap/ct_case/000001/Coronal_non_contrasté/0.jpeg .. 7.jpeg     (NFD name; index: ..._contraste.npy)
    M3D_Cap/ct_case/000002/text.txt           findings too short -> discussion
    M3D_Cap/ct_case/000002/Axial_Ç_arterial_phase/0.png .. 19.png      (NFC name; index: Axial_C_...)
    M3D_Cap/ct_quizze/000003/text.txt         no sections -> whole text
    M3D_Cap/ct_quizze/000003/Axial_bone_window/0.png .. 9.png + 10.png of another size
    M3D_Cap_npy/ct_quizze/000004/Sagittal_lung_window.npy   the only copy of that volume
    M3D_Cap_npy/ct_quizze/000004/text.txt

Splits: test = 000003 + 000004, validation = 000002, train = both series of 000001.
"""

from __future__ import annotations

import csv
import json
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from support.volume_files import write_slice_folder

PREFIX = "M3D_Cap_npy/"
INDEX = "M3D_Cap/M3D_Cap.json"

TEXT_SECTIONS = (
    "title: Simple hepatic cyst\n"
    "study_findings:\n"
    "A well-defined hypodense lesion in segment VII of the liver.\n"
    "No enhancement after contrast.\n"
    "discussion:\n"
    "Simple hepatic cysts are common incidental findings.\n"
)
REPORT_SECTIONS = (
    "A well-defined hypodense lesion in segment VII of the liver. No enhancement after contrast. "
    "discussion: Simple hepatic cysts are common incidental findings."
)
# Findings hold fewer than 5 characters besides spaces: the discussion is taken (to the end of the text).
TEXT_SHORT_FINDINGS = (
    "discussion:\nHypervascular lesion in the arterial phase,\nwashout later.\nstudy_findings:\n n/a \n"
)
REPORT_SHORT_FINDINGS = "Hypervascular lesion in the arterial phase, washout later. study_findings:  n/a"
TEXT_PLAIN = "Comminuted fracture of the\ndistal radius\nwith dorsal angulation.\n"
REPORT_PLAIN = "Comminuted fracture of the distal radius with dorsal angulation."
TEXT_NPY = "study_findings: Bilateral ground-glass opacities,\nperipheral.\n"
REPORT_NPY = "Bilateral ground-glass opacities, peripheral."


@dataclass(frozen=True)
class Series:
    group: str  # ct_case / ct_quizze
    case: str
    folder: str | None  # series folder as on disk (may carry diacritics); None: only the .npy exists
    name: str  # the .npy name in the index, without .npy (diacritics removed)
    split: str  # key in M3D_Cap.json
    text: str
    report: str  # what the builder must make of text
    suffix: str = ".png"  # of the slices
    n: int = 10

    def index_image(self, prefix: str = PREFIX) -> str:
        return f"{prefix}{self.group}/{self.case}/{self.name}.npy"

    def index_text(self, prefix: str = PREFIX) -> str:
        return f"{prefix}{self.group}/{self.case}/text.txt"

    @property
    def tail(self) -> str:
        return f"{self.group}/{self.case}/{self.name}.npy"

    @property
    def slice_dir(self) -> str:
        """Relative to raw."""
        return f"M3D_Cap/{self.group}/{self.case}/{self.folder}"

    @property
    def npy_file(self) -> str:
        return f"M3D_Cap_npy/{self.group}/{self.case}/{self.name}.npy"


AXIAL = Series("ct_case", "000001", "Axial_C__portal_venous_phase", "Axial_C__portal_venous_phase", "train", TEXT_SECTIONS, REPORT_SECTIONS, n=12)
CORONAL = Series(
    "ct_case", "000001", unicodedata.normalize("NFD", "Coronal_non_contrasté"), "Coronal_non_contraste", "train",
    TEXT_SECTIONS, REPORT_SECTIONS, suffix=".jpeg", n=8,
)
ARTERIAL = Series(
    "ct_case", "000002", unicodedata.normalize("NFC", "Axial_Ç_arterial_phase"), "Axial_C_arterial_phase", "validation",
    TEXT_SHORT_FINDINGS, REPORT_SHORT_FINDINGS, n=20,
)
BONE = Series("ct_quizze", "000003", "Axial_bone_window", "Axial_bone_window", "test", TEXT_PLAIN, REPORT_PLAIN, n=10)
LUNG_NPY = Series("ct_quizze", "000004", None, "Sagittal_lung_window", "test", TEXT_NPY, REPORT_NPY)
SERIES = (AXIAL, CORONAL, ARTERIAL, BONE, LUNG_NPY)
ODD_SLICE = 10  # BONE's extra slice of another size (M3D keeps the most common shape)


def slice_image(i: int, n: int, rows: int = 64, cols: int = 56) -> np.ndarray:
    """uint8 slice i of n: a gradient and a disc that grows with i, inside a black border (so the crop matters)."""
    y, x = np.mgrid[0:rows, 0:cols]
    image = (40 + (2 * x + 3 * y + 9 * i) % 150).astype(np.float64)
    radius = 4 + 14 * i / max(n - 1, 1)
    image[(y - rows / 2) ** 2 + (x - cols / 2 + i) ** 2 <= radius**2] = 230 - 3 * i
    image[:5, :] = image[-4:, :] = 0
    image[:, :3] = image[:, -6:] = 0
    return image.astype(np.uint8)


def volume_slices(n: int, rows: int = 64, cols: int = 56) -> list[np.ndarray]:
    slices = [slice_image(i, n, rows, cols) for i in range(n)]
    slices[0] = np.zeros_like(slices[0])  # a black first slice: the depth crop matters too
    return slices


def npy_volume(seed: int = 4) -> np.ndarray:
    """(1, 32, 256, 256) float32 in [0, 1], as M3D's preparation writes them.

    Smooth ramps (so the PNGs stay small) with values between the 8-bit levels
    (so rounding is exercised); holds exact 0 and 1.
    """
    z, y, x = np.mgrid[0:32, 0:256, 0:256]
    levels = (3 * x + 5 * y + 7 * z + seed) % 250 + 2
    offset = ((x // 8 + y // 8 + z) % 5 - 2) * 0.2  # -0.4 .. 0.4 of a level
    array = ((levels + offset) / 255.0).astype(np.float32)[None]
    array[0, 0, 0, 0], array[0, -1, -1, -1] = 0.0, 1.0
    return array


def write_series(raw: Path, series: Series) -> None:
    if series.folder is None:
        path = raw / series.npy_file
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, npy_volume())
        return
    folder = raw / series.slice_dir
    write_slice_folder(folder, volume_slices(series.n), suffix=series.suffix)
    if series is BONE:
        write_slice_folder(folder, [slice_image(3, 5, 80, 80)], numbers=[ODD_SLICE])


def write_text(raw: Path, series: Series) -> Path:
    root = "M3D_Cap_npy" if series.folder is None else "M3D_Cap"
    path = raw / root / series.group / series.case / "text.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(series.text, encoding="utf-8")
    return path


def cap_index(series=SERIES, prefix: str = PREFIX) -> dict:
    index = {"train": [], "validation": [], "test": []}
    for s in series:
        index[s.split].append({"image": s.index_image(prefix), "text": s.index_text(prefix)})
    return index


def write_index(raw: Path, index: dict, where: str = INDEX) -> Path:
    path = raw / where
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(index, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def make_m3d_cap_tree(raw: Path, prefix: str = PREFIX, index_at: str = INDEX) -> Path:
    for series in SERIES:
        write_series(raw, series)
        write_text(raw, series)
    write_index(raw, cap_index(prefix=prefix), index_at)
    return raw


# --- M3D-VQA --------------------------------------------------------------------------------------

VQA_COLUMNS = (
    "Image Path", "Text", "Question Type", "Question", "Choice A", "Choice B", "Choice C", "Choice D", "Answer", "Answer Choice",
)
LONG_TEXT = "study_findings:\nA long report, with commas and \"quotes\",\nover several lines.\n" * 20


def vqa_row(image: str, qtype, question: str, choices: tuple[str, str, str, str], letter: str, text: str = LONG_TEXT) -> dict:
    answer = choices["ABCD".index(letter)] if letter in "ABCD" and letter else ""
    return {
        "Image Path": image,
        "Text": text,
        "Question Type": str(qtype),
        "Question": question,
        "Choice A": choices[0],
        "Choice B": choices[1],
        "Choice C": choices[2],
        "Choice D": choices[3],
        "Answer": answer,
        "Answer Choice": letter,
    }


PLANES = ("Axial", "Coronal", "Sagittal", "Oblique")
PHASES = ("Non-contrast", "Arterial phase", "Portal venous phase", "Delayed phase")
ORGANS = ("Liver", "Kidney", "Lung", "Radius")


def default_vqa_rows() -> dict[str, list[dict]]:
    """CSV stem -> rows. Image paths with the npy prefix and without; two adjacent rows per volume."""
    bone = BONE.index_image()
    lung = LUNG_NPY.tail  # no prefix
    return {
        "M3D_VQA_test": [
            vqa_row(bone, 1, "In which plane is this image scanned?", PLANES, "A"),
            vqa_row(bone, 3, "Which organ shows the fracture?", ORGANS, "D"),
            vqa_row(lung, 1, "What is the scanning plane of this image?", PLANES, "C"),
            vqa_row(lung, 4, "What abnormality is seen in the lungs?", ("Ground-glass opacities", "Cyst", "Mass", "Effusion"), "A"),
        ],
        "M3D_VQA_test5k": [
            vqa_row(bone, 1, "In which plane is this image scanned?", PLANES, "A"),
        ],
        "M3D_VQA_val": [
            vqa_row(ARTERIAL.index_image("M3D_Cap/"), 2, "Which phase is this CT?", PHASES, "B"),
            vqa_row(ARTERIAL.index_image("M3D_Cap/"), 5, "Where is the lesion?", ("Liver", "Spleen", "Pancreas", "Kidney"), "A"),
        ],
        "M3D_VQA_train": [
            vqa_row(AXIAL.tail, 2, "What phase is this scan?", PHASES, "C"),
            vqa_row(AXIAL.tail, 3, "Which organ holds the cyst?", ORGANS, "A"),
            vqa_row(CORONAL.index_image(), 1, "Which plane?", PLANES, "B"),
        ],
    }


def write_vqa_csv(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=VQA_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def make_m3d_vqa_tree(raw: Path, rows: dict[str, list[dict]] | None = None, folder: str = "M3D_VQA") -> Path:
    """The M3D-Cap volumes (no M3D_Cap.json needed) and the VQA CSVs in ``folder`` ('' = the top)."""
    for series in SERIES:
        write_series(raw, series)
    for stem, part in (default_vqa_rows() if rows is None else rows).items():
        write_vqa_csv(raw / folder / f"{stem}.csv", part)
    return raw
