"""Small PubMedVision copies in the Hugging Face layout, generated into a folder the caller owns.

Rows follow the published VQA row layout (``id``, ``image`` [list],
``conversations`` [{from, value}], ``modality``, ``body_part``). The caption
rows come from the 9 real ``PubMedVision_Original_Caption`` rows vendored in
``data/pubmedvision`` (their ids, image paths, modality and body_part tags and
caption text); the images are generated JPEGs, since none are vendored.

Layout written by :func:`write_tree`::

    PubMedVision_Alignment_VQA.json
    PubMedVision_InstructionTuning_VQA.json
    images/pmc_*.jpg                      (when images go to the folder)
    images_0.zip, images_1.zip, ...       (when they go to zips; members under images/)
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from support.raw_trees import DATA
from support.samples import jpeg

from omnivmed.builders.pubmedvision import ALIGNMENT_JSON, INSTRUCTION_JSON

CAPTION_ROWS = DATA / "pubmedvision" / "original_caption_sample.json"
ALIGNMENT_PROMPT = "Please describe this medical image in detail."


def real_caption_rows() -> list[dict]:
    """The 9 real Original_Caption rows (id, image [a string], modality, body_part, Original_Caption)."""
    return json.loads(CAPTION_ROWS.read_text(encoding="utf-8"))


def vqa_row(row_id: str, images: list[str], turns: list[tuple[str, str]], modality: str, body_part: str) -> dict:
    """One row in the published VQA layout; ``turns`` are (from, value) pairs."""
    return {
        "id": row_id,
        "image": list(images),
        "conversations": [{"from": who, "value": text} for who, text in turns],
        "modality": modality,
        "body_part": body_part,
    }


def alignment_rows_from_captions(with_placeholder: bool = True) -> list[dict]:
    """The real caption rows as Alignment rows: the caption is the answer to a describe prompt."""
    rows = []
    for r in real_caption_rows():
        prompt = f"<image>\n{ALIGNMENT_PROMPT}" if with_placeholder else ALIGNMENT_PROMPT
        rows.append(vqa_row(r["id"], [r["image"]], [("human", prompt), ("gpt", r["Original_Caption"])], r["modality"], r["body_part"]))
    return rows


def image_bytes(names: list[str]) -> dict[str, bytes]:
    """A distinct real JPEG for every image path (seeded by its position in the sorted names)."""
    return {name: jpeg(seed, 24) for seed, name in enumerate(sorted(set(names)))}


def row_images(rows: list[dict]) -> list[str]:
    names = []
    for row in rows:
        value = row.get("image") if isinstance(row, dict) else None
        names.extend([value] if isinstance(value, str) else value or [])
    return names


def write_json(path: Path, rows) -> None:
    """Rows as the published files hold them (indented JSON array); a str is written as it is."""
    text = rows if isinstance(rows, str) else json.dumps(rows, indent=4, ensure_ascii=False)
    path.write_text(text, encoding="utf-8")


def write_tree(
    raw: Path,
    *,
    alignment: list | str | None = None,
    instruction: list | str | None = None,
    images: dict[str, bytes] | None = None,
    zips: int = 0,
) -> Path:
    """Write the JSON files and the images: into images/ (zips=0) or spread over ``zips`` archives."""
    raw.mkdir(parents=True, exist_ok=True)
    if alignment is not None:
        write_json(raw / ALIGNMENT_JSON, alignment)
    if instruction is not None:
        write_json(raw / INSTRUCTION_JSON, instruction)
    images = images or {}
    if zips == 0:
        for name, data in images.items():
            path = raw / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        (raw / "images").mkdir(exist_ok=True)
        return raw
    archives = [zipfile.ZipFile(raw / f"images_{n}.zip", "w", zipfile.ZIP_DEFLATED) for n in range(zips)]
    for number, name in enumerate(sorted(images)):
        archives[number % zips].writestr(name, images[name])
    for archive in archives:
        archive.close()
    return raw
