"""The embedded default: real VQA-RAD, SLAKE and CT/MR volume samples vendored in ``data/``, plus
generated surgical clips in the real Cholec80-VQA layout.

``make instruct-dataset`` falls back to these on a fresh clone without sources:
it builds them without network into ``<out>-sources/staged/`` and mixes them
with the committed recipe ``manifests/omnivmed-embedded.yaml``, so the whole
path (build, recipe mix, manifest, verify, data card, figures, preview) runs on real files. The SLAKE
copy holds the official JSON files but only 9 of its 642 image folders, so
the embedded build first derives a raw folder with the official rows of those
9 images (rows unchanged, both languages; the builder keeps English).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from omnivmed.builders import get_builder
from omnivmed.build import build_source
from omnivmed.data.fileio import write_if_changed
from omnivmed.data.manifest import Manifest
from omnivmed.data.mix import MixResult, mix_and_publish, plan_mix
from omnivmed.data.recipe import load_recipe
from omnivmed.engines.stages import engine_session, unit_mapper
from omnivmed.surgical_demo import write_demo_tree

EMBEDDED_NAME = "omnivmed-embedded"
RECIPE_FILE = "omnivmed-embedded.yaml"  # stage 3, the main mix
# The progressive schedule's earlier stages, mixed beside it (out/<name>/ for each).
STAGE_RECIPES = {1: "omnivmed-embedded-stage1.yaml", 2: "omnivmed-embedded-stage2.yaml", 3: RECIPE_FILE}
SLAKE_FILES = ("train.json", "validate.json", "test.json")

# What the data card says about the embedded sources (every embedded mix's card).
NOTES = [
    "Embedded default of omnivmed: the full official VQA-RAD release (CC0-1.0), the official "
    "SLAKE rows of the 9 image folders vendored in data/slake (CC-BY-4.0), English only, and 3 real volumes.",
    "VQA-RAD split: phrase_type test_* is test. SLAKE: official train/validate/test files.",
    "Exact duplicates (same image bytes, question and answer) are removed; a train row that "
    "repeats a test row is the copy dropped.",
    "Volumes: TotalSegmentator's test files (Apache-2.0): a CT DICOM series (20 slices, JPEG 2000 lossless) "
    "and two NIfTI volumes (CT, MR), stored as PNG slices in the LPS frame (CT window soft tissue, MR "
    "0.5-99.5 percentile). Their questions and acquisition captions (data/volumes/annotations.csv) are read "
    "from the headers only: modality, plane, contrast given, size and spacing; no finding is claimed.",
    "Surgical video: GENERATED frames (drawn by omnivmed/surgical_demo.py: a reddish field with moving "
    "grey bars) in the REAL Cholec80-VQA layout (Classification/<video>/<frame>.txt question|answer lines, "
    "cropped_image/<video>/<frame>.png, frames that are multiples of 100, video 5 held out), cut into clips of "
    "8 neighbouring frames; the answers are Cholec80-VQA classes but depict nothing real. They show the "
    "video path only; no surgical knowledge is in them.",
]


def embedded_data_dir() -> Path:
    """``data/`` of the source tree (the sample is not shipped inside wheels)."""
    here = Path(__file__).resolve().parents[1] / "data"
    if not (here / "vqa_rad").is_dir():
        raise FileNotFoundError(
            f"{here}: the embedded sample lives in the omnivmed source tree's data/ folder; "
            "run from a clone or pass --data DIR"
        )
    return here


def prepare_slake_sample(official: Path, into: Path) -> Path:
    """Write the official SLAKE rows whose image folder is vendored, with those images."""
    present = {p.parent.name for p in (official / "imgs").glob("*/source.jpg")}
    for name in SLAKE_FILES:
        rows = json.loads((official / name).read_text(encoding="utf-8"))
        kept = [r for r in rows if str(r.get("img_name", "")).split("/")[0] in present]
        write_if_changed(into / name, json.dumps(kept, ensure_ascii=False, indent=1).encode())
    for folder in sorted(present):
        src = official / "imgs" / folder / "source.jpg"
        dst = into / "imgs" / folder / "source.jpg"
        if not dst.is_file() or dst.stat().st_size != src.stat().st_size:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
    return into


def embedded_recipe_path(stage: int = 3) -> Path:
    """The committed recipe of the embedded default for ``stage`` (``manifests/`` of the source tree)."""
    return Path(__file__).resolve().parents[1] / "manifests" / STAGE_RECIPES[stage]


def sources_dir(out: Path) -> Path:
    """Raw copies and staged builds of the embedded sources: beside the output, not inside it (a
    ``datasets.load_dataset("arrow", data_dir=out)`` must see only the mixed shards)."""
    return Path(out).parent / f"{Path(out).name}-sources"


def build_embedded(
    out: Path, data_dir: Path | None = None, *, manifests_dir: Path | None = None, progress: bool = True
) -> Manifest:
    return mix_embedded(out, data_dir, manifests_dir=manifests_dir, progress=progress).manifest


def mix_embedded(
    out: Path,
    data_dir: Path | None = None,
    *,
    manifests_dir: Path | None = None,
    progress: bool = True,
    engine: str = "local",
    workers: int = 1,
) -> MixResult:
    """Build the vendored sources (staged beside ``out``); mix stage 3 into ``out``, stages 1 and 2 beside it.

    ``out-stage1/`` and ``out-stage2/`` hold the earlier stages' mixes; every mix is published to
    ``manifests_dir`` (``<recipe name>.manifest.json``) with its data card beside its shards. The
    builds and mixes run on ``engine`` with ``workers`` (the same bytes whatever they are).
    """
    with engine_session(engine, workers, progress=progress):  # one Ray for every build and mix
        return _mix_embedded(out, data_dir, manifests_dir=manifests_dir, progress=progress, engine=engine, workers=workers)


def _mix_embedded(out: Path, data_dir: Path | None, *, manifests_dir: Path | None, progress: bool, engine: str, workers: int) -> MixResult:
    map_units = unit_mapper(engine, workers, progress=progress)
    data_dir = Path(data_dir) if data_dir else embedded_data_dir()
    out = Path(out)
    work = sources_dir(out)
    raws = {
        "vqa_rad": data_dir / "vqa_rad",
        "slake": prepare_slake_sample(data_dir / "slake", work / "raw" / "slake"),
        # A real CT DICOM series and CT/MR NIfTI volumes with header-derived questions.
        "volumes": data_dir / "volumes",
        # No surgical video has an open license: generated frames in the real Cholec80-VQA layout.
        "cholec80_vqa": write_demo_tree(work / "raw" / "cholec80_vqa"),
    }
    options = {
        "cholec80_vqa": {"short_side": "0"},  # the generated frames are already small (120x160)
        "volumes": {
            "license": "Apache-2.0 (TotalSegmentator repository)",
            "homepage": "https://github.com/wasserth/TotalSegmentator",
            "citation": "Wasserthal J, Breit HC, Meyer MT, et al. TotalSegmentator: Robust Segmentation of 104 "
            "Anatomic Structures in CT Images. Radiology: Artificial Intelligence 5(5), e230024 (2023). "
            "doi:10.1148/ryai.230024",
        }
    }
    for name, raw in raws.items():
        build_source(get_builder(name, options.get(name)), raw, work / "staged" / name, progress=progress, engine=engine, workers=workers)
    # Stages 1 and 2 beside the main (stage-3) mix, so `omnivmed-train --shards manifests/` runs all three.
    for stage in (1, 2):
        recipe = load_recipe(embedded_recipe_path(stage))
        plan = plan_mix(recipe, work / "staged")
        mix_and_publish(
            plan, out.parent / f"{out.name}-stage{stage}", manifests_dir=manifests_dir, progress=progress, notes=NOTES, map_units=map_units
        )
    plan = plan_mix(load_recipe(embedded_recipe_path(3)), work / "staged")
    return mix_and_publish(plan, out, manifests_dir=manifests_dir, progress=progress, notes=NOTES, map_units=map_units)
