"""Paths of the vendored real data and small raw trees built from it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
DATA = PROJECT / "data"
VQA_RAD = DATA / "vqa_rad"
VQA_RAD_JSON = "VQA_RAD Dataset Public.json"
VQA_RAD_IMAGES = "VQA_RAD Image Folder"


def make_vqa_rad_subset(raw: Path, n_rows: int) -> Path:
    rows = json.loads((VQA_RAD / VQA_RAD_JSON).read_text())[:n_rows]
    (raw / VQA_RAD_IMAGES).mkdir(parents=True)
    for name in {r["image_name"] for r in rows}:
        shutil.copyfile(VQA_RAD / VQA_RAD_IMAGES / name, raw / VQA_RAD_IMAGES / name)
    write_vqa_rad_json(raw, rows)
    return raw


def write_vqa_rad_json(raw: Path, rows: list) -> None:
    (raw / VQA_RAD_JSON).write_text(json.dumps(rows))


def read_rejects(out: Path) -> list[dict]:
    path = out / "rejects.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line]
