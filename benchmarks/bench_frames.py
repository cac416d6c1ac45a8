"""Bytes on disk against the distinct frame bytes: frames stored once per shard, or once per build.

Two sets, each built through the real builder and writer (``build_source``) in both
frame layouts: ``per-shard`` (the default: self-contained shards, each distinct frame
once per shard) and ``shared`` (``--frames shared``: each distinct frame once for the
whole build, in a frame table the splits' shards reference):

* **VQA-RAD**: the embedded ``data/vqa_rad`` (315 images, 2,244 questions: each
  image is asked about 7 times);
* **M3D-VQA-shaped**: the generated M3D-Cap volumes (tests/support/m3d_trees.py)
  with ``--questions`` questions per volume, as M3D-VQA asks about 5 per CT
  volume; every volume goes through the M3D preset (32 PNG slices of 256x256).

Figures per build: the bytes on disk (shards and frame table); the frame bytes a
row-per-copy layout (schema 1) stores (every row its own frames); the distinct frame
bytes of each split (what self-contained split shards must hold at least); the
distinct frame bytes of the whole set. Ratios: disk / distinct per split, and
disk / distinct over the set (per-shard: an image both in train and test is stored
once per split, as each split's shards stand alone).

Usage::

    python benchmarks/bench_frames.py [--questions 5] [--json PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

from omnivmed.build import build_source
from omnivmed.builders import get_builder
from omnivmed.data.manifest import Manifest, shard_path
from omnivmed.data.shards import open_shard

ROOT = Path(__file__).resolve().parents[1]
# For support.m3d_trees; only after the package is imported (tests/omnivmed would shadow it).
sys.path.append(str(ROOT / "tests"))


def measure(manifest_path: Path) -> dict:
    manifest = Manifest.load(manifest_path)
    disk = per_copy = 0
    distinct_by_split: dict[str, dict[str, int]] = {}
    distinct_all: dict[str, int] = {}
    disk += sum(f.bytes for f in manifest.frame_table)
    for shard in manifest.shards:
        path = shard_path(manifest_path, shard)
        disk += path.stat().st_size
        table = open_shard(path)  # the rows' frames, from the frame table when the build has one
        for frames in table.column("frames").to_pylist():
            for frame in frames:
                key = hashlib.blake2b(frame, digest_size=16).hexdigest()
                per_copy += len(frame)
                distinct_by_split.setdefault(shard.split, {})[key] = len(frame)
                distinct_all[key] = len(frame)
    split_bytes = sum(sum(d.values()) for d in distinct_by_split.values())
    all_bytes = sum(distinct_all.values())
    return {
        "rows": manifest.rows,
        "disk_bytes": disk,
        "per_copy_frame_bytes": per_copy,
        "distinct_per_split_bytes": split_bytes,
        "distinct_bytes": all_bytes,
        "disk_vs_distinct_per_split": round(disk / split_bytes, 3),
        "disk_vs_distinct": round(disk / all_bytes, 3),
        "per_copy_vs_distinct": round(per_copy / all_bytes, 3),
    }


def m3d_vqa_rows(questions: int) -> dict[str, list[dict]]:
    from support import m3d_trees as t

    volumes = {
        "M3D_VQA_train": [t.AXIAL.tail, t.CORONAL.index_image()],
        "M3D_VQA_val": [t.ARTERIAL.index_image("M3D_Cap/")],
        "M3D_VQA_test": [t.BONE.index_image(), t.LUNG_NPY.tail],
    }
    return {
        stem: [
            t.vqa_row(image, 1 + q % 5, f"Question {q} about this scan?", t.PLANES, "ABCD"[q % 4])
            for image in images
            for q in range(questions)
        ]
        for stem, images in volumes.items()
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=5, help="questions per volume in the M3D-VQA-shaped set (default 5)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    from support.m3d_trees import make_m3d_vqa_tree

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        raw = {"vqa_rad": ROOT / "data" / "vqa_rad", "m3d_vqa": make_m3d_vqa_tree(tmp / "m3d_raw", rows=m3d_vqa_rows(args.questions))}
        for source, name in (("vqa_rad", "vqa_rad"), ("m3d_vqa", "m3d_vqa_shaped")):
            for layout in ("per-shard", "shared"):
                out = tmp / f"{source}-{layout}"
                built = build_source(
                    get_builder(source), raw[source], out, progress=False, force=True, shared_frames=layout == "shared"
                )
                results[f"{name} ({layout})"] = measure(built.manifest_path)
    print("| set (frames) | rows | on disk | frames, one copy per row | distinct per split | distinct | disk / distinct per split | disk / distinct |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, r in results.items():
        mib = lambda n: f"{n / 2**20:.2f} MiB"  # noqa: E731
        print(f"| {name} | {r['rows']:,} | {mib(r['disk_bytes'])} | {mib(r['per_copy_frame_bytes'])} | {mib(r['distinct_per_split_bytes'])} | "
              f"{mib(r['distinct_bytes'])} | {r['disk_vs_distinct_per_split']} | {r['disk_vs_distinct']} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
