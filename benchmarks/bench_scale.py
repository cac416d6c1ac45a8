"""Build throughput on one process, on 2 local processes and on Ray with 2 workers, and what it projects.

Per visual kind, one ``build_source(..., force=True)`` into a fresh temporary
folder per run (the real build: work units, the one writer, the manifest):

* **rows** (2D images): the embedded VQA-RAD (``data/vqa_rad``), its records
  repeated ``--rows-repeat`` times under new qids (the images are the same
  315 files; the questions get a copy number, so no record is a duplicate);
* **volumes**: copies of the embedded DICOM CT series (``data/volumes/ct_dicom_series``,
  20 slices of 512x512) as folders of symlinks, through the ``volumes`` builder
  with the M3D preset (``-o preset=m3d``, 32x256x256) and the embedded
  default's provenance options; an ``annotations.csv`` asks one distinct
  question per copy, so every copy is one work unit and one written sample;
* **volumes_npy**: volumes as M3D's prepared ``.npy`` files
  (1x32x256x256 float, tests/support/m3d_trees.py's, as symlinks) through the
  ``m3d_cap`` builder (report generation only: one sample per volume), which
  stores them as they are (quantised to 8-bit PNG slices);
* **clips**: a generated Cholec80-VQA tree (tests/support/surgical_trees.py,
  ``--videos`` videos of 16 index frames, 96x128), clips of 8 frames resized to
  224 and JPEG-encoded; one work unit per video.

Contenders: ``--engine local`` with 1 worker (the baseline: the builder's
``generate`` in this process), ``--engine local --workers 2`` (a spawned
process pool per build: its start-up is inside the timing, as every build
pays it) and ``--engine ray --workers 2`` on a local Ray with 2 CPUs started
once before (its start-up, and a warm-up map that starts its workers, are
timed apart and left out of the throughput). Throughput is items per second
(samples, duplicates dropped and rejects: every item a builder yields);
ratios are against 1 process, measured in one run; each figure is the best
of ``--repeat`` runs.

Also measured: the per-unit overhead of each engine (``ordered_map`` of a
function that does nothing over ``--tasks`` units, wall time per unit), and
the rate of the serial part (the driver's deduplication and writer, fed
items already made), which caps any number of workers.

Projection: from the 1-process rate (items per second per core), the
measured 2-worker efficiency (speed-up / 2, assumed to hold up to 16 and 64
cores: linear scaling, an assumption) and the serial writer's cap, the time
to build the sources of manifests/omnivmed-instruct.yaml (whole sources: a
recipe's draw needs every record built; no downloads, no captioning) and
PubMedVision's stage-1/2 sets. The counts are the published ones (see
``RECIPE_WORK``); volumes count volume encodes (M3D-VQA's rows reuse the
volume of their run), assuming every volume goes through the M3D preset
from slice folders like the measured ones.

Usage::

    python benchmarks/bench_scale.py [--quick] [--repeat N] [--rows-repeat N] [--volumes N] [--npy-volumes N] [--videos N] [--tasks N] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
from harness import machine_facts  # noqa: E402
from omnivmed.build import build_source  # noqa: E402
from omnivmed.builders import get_builder  # noqa: E402
from omnivmed.data.output import OutputWriter, Reject  # noqa: E402
from omnivmed.engines import ordered_map  # noqa: E402

DATA = ROOT / "data"
# As omnivmed/embedded.py builds the embedded volumes (tests/omnivmed/test_engines.py VOLUME_OPTIONS), with the M3D preset.
VOLUME_OPTIONS = {
    "license": "Apache-2.0 (TotalSegmentator repository)",
    "homepage": "https://github.com/wasserth/TotalSegmentator",
    "citation": "Wasserthal J, et al. TotalSegmentator. Radiology: Artificial Intelligence 5(5), e230024 (2023).",
    "preset": "m3d",
}
CONTENDERS = (("local", 1), ("local", 2), ("ray", 2))

# Work of the full build, in the unit each kind's rate is measured in (published counts; see docs/scale.md).
RECIPE_WORK = {
    "rows": (
        ("VQA-RAD", 2_248),
        ("SLAKE (English, all splits)", 7_033),
        ("PathVQA (all splits)", 32_632),
        ("PubMedVision InstructionTuning", 647_031),
        ("MIMIC-CXR reports (studies)", 227_000),
        ("MIMIC-Ext-MIMIC-CXR-VQA", 377_000),
    ),
    "volumes": (
        ("M3D-Cap volumes", 120_092),
        ("M3D-VQA volumes (509,755 rows)", 96_170),
    ),
    "clips": (("surgical VQA clips (the recipe's remainder, about)", 50_000),),
}
PUBMEDVISION_STAGES = (("PubMedVision Alignment + InstructionTuning (stages 1-2)", 1_294_062),)
# (build, {work kind: measured kind}): the recipe with either kind of volume input.
SCENARIOS = (
    ("252K recipe's sources, volumes from slice folders (M3D preset)", RECIPE_WORK, {"volumes": "volumes_slices"}),
    ("252K recipe's sources, volumes from DICOM series (M3D preset)", RECIPE_WORK, {"volumes": "volumes"}),
    ("252K recipe's sources, volumes from M3D's .npy", RECIPE_WORK, {"volumes": "volumes_npy"}),
    ("PubMedVision stages 1-2", {"rows": PUBMEDVISION_STAGES}, {}),
)
CLUSTERS = (("1 x 16 cores", 16), ("4 x 16 cores", 64))


# -- workloads -----------------------------------------------------------------------------------


@dataclass
class Workload:
    kind: str
    source: str
    raw: Path
    options: dict
    what: str


def rows_workload(root: Path, repeat: int) -> Workload:
    raw = root / "vqa_rad"
    raw.mkdir()
    (raw / "VQA_RAD Image Folder").symlink_to(DATA / "vqa_rad" / "VQA_RAD Image Folder")
    records = json.loads((DATA / "vqa_rad" / "VQA_RAD Dataset Public.json").read_text(encoding="utf-8"))
    copies = []
    for copy in range(repeat):
        for record in records:
            if copy:
                record = dict(record, qid=f"{record.get('qid')}-{copy}", question=f"{record['question']} ({copy})")
            copies.append(record)
    (raw / "VQA_RAD Dataset Public.json").write_text(json.dumps(copies), encoding="utf-8")
    return Workload("rows", "vqa_rad", raw, {}, f"VQA-RAD x{repeat}: {len(copies):,} records")


def volumes_workload(root: Path, copies: int) -> Workload:
    raw = root / "volumes"
    series = DATA / "volumes" / "ct_dicom_series"
    lines = ["volume,question,answer"]
    for n in range(copies):
        folder = raw / f"ct_{n:03d}"
        folder.mkdir(parents=True)
        for slice_file in sorted(series.iterdir()):
            (folder / slice_file.name).symlink_to(slice_file)
        lines.append(f"ct_{n:03d},Which organ is shown in copy {n}?,abdomen")
    (raw / "annotations.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    slices = len(list(series.iterdir()))
    return Workload("volumes", "volumes", raw, VOLUME_OPTIONS, f"{copies} CT series of {slices} slices, M3D preset")


SLICES_PER_FOLDER = 100  # about an M3D-Cap series (its slice folders hold tens to hundreds of 512x512 PNGs)


def slice_folder_workload(root: Path, copies: int) -> Workload:
    """M3D-Cap's raw form: folders of 8-bit PNG slices (the DICOM series' 20 slices cycled to 100), symlinked copies."""
    import cv2
    import numpy as np

    from omnivmed.data.volume.discover import classify, read_volume

    voxels = read_volume(classify(DATA / "volumes" / "ct_dicom_series")).voxels
    slices = np.clip((voxels - voxels.min()) / (voxels.max() - voxels.min()) * 255, 0, 255).astype(np.uint8)
    source = root / "slices_source"
    source.mkdir(parents=True)
    for i in range(SLICES_PER_FOLDER):
        cv2.imwrite(str(source / f"{i}.png"), slices[i % len(slices)])
    raw = root / "slice_folders"
    lines = ["volume,question,answer"]
    for n in range(copies):
        folder = raw / f"case_{n:03d}"
        folder.mkdir(parents=True)
        for i in range(SLICES_PER_FOLDER):
            (folder / f"{i}.png").symlink_to(source / f"{i}.png")
        lines.append(f"case_{n:03d},Which organ is shown in copy {n}?,abdomen")
    (raw / "annotations.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Workload("volumes_slices", "volumes", raw, VOLUME_OPTIONS, f"{copies} slice folders of {SLICES_PER_FOLDER} 512x512 PNGs, M3D preset")


def npy_volumes_workload(root: Path, copies: int) -> Workload:
    import numpy as np

    from omnivmed.builders.m3d_cap import INDEX_NAME

    sys.path.append(str(ROOT / "tests"))  # see clips_workload
    try:
        from support.m3d_trees import npy_volume
    finally:
        sys.path.remove(str(ROOT / "tests"))
    raw = root / "m3d_cap"
    (raw / "M3D_Cap_npy").mkdir(parents=True)
    np.save(raw / "volume.npy", npy_volume())
    entries = []
    for n in range(copies):
        case = raw / "M3D_Cap_npy" / "ct_case" / f"{n:06d}"
        case.mkdir(parents=True)
        (case / "Axial_C__portal_venous_phase.npy").symlink_to(raw / "volume.npy")
        (case / "text.txt").write_text(f"study_findings: Finding number {n} of the benchmark.\n", encoding="utf-8")
        entries.append({"image": f"M3D_Cap_npy/ct_case/{n:06d}/Axial_C__portal_venous_phase.npy", "text": f"M3D_Cap_npy/ct_case/{n:06d}/text.txt"})
    (raw / INDEX_NAME).write_text(json.dumps({"train": entries}), encoding="utf-8")
    return Workload("volumes_npy", "m3d_cap", raw, {"tasks": "report_generation"}, f"{copies} M3D .npy volumes (1x32x256x256)")


def clips_workload(root: Path, videos: int) -> Workload:
    # tests/ on the path only for this import: left there, tests/omnivmed would pass for the
    # package in the spawned workers (they start with this process's sys.path).
    sys.path.append(str(ROOT / "tests"))
    try:
        from support.surgical_trees import make_cholec80_tree
    finally:
        sys.path.remove(str(ROOT / "tests"))
    raw = make_cholec80_tree(root / "cholec80", videos=tuple(range(1, videos + 1)))
    return Workload("clips", "cholec80_vqa", raw, {}, f"Cholec80-VQA tree, {videos} videos, 8-frame clips at 224")


# -- measurements --------------------------------------------------------------------------------


def items_of(manifest) -> int:
    return manifest.rows + manifest.duplicates_removed + sum(manifest.rejects.values())


def time_build(work: Workload, engine: str, workers: int, scratch: Path) -> tuple[float, int]:
    out = Path(tempfile.mkdtemp(dir=scratch))
    try:
        start = time.perf_counter()
        result = build_source(get_builder(work.source, work.options), work.raw, out, force=True, progress=False, engine=engine, workers=workers)
        seconds = time.perf_counter() - start
        return seconds, items_of(result.manifest)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def time_writer(work: Workload, scratch: Path) -> float:
    """Items per second through the serial part alone: deduplication and the one writer, items already made."""
    out = Path(tempfile.mkdtemp(dir=scratch))
    try:
        builder = get_builder(work.source, work.options)
        builder.begin(out / "work")
        items = list(builder.generate(work.raw))
        start = time.perf_counter()
        seen: set[str] = set()
        with OutputWriter(out / "staged") as writer:
            for item in items:
                if isinstance(item, Reject) or item.id in seen:
                    continue
                seen.add(item.id)
                writer.write(item)
            writer.close_shards()
        return len(items) / (time.perf_counter() - start)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def nothing(unit: int) -> int:
    return unit


def per_unit_overhead(engine: str, workers: int, tasks: int) -> float:
    """Wall seconds per unit of ``ordered_map`` over a function that does nothing (start-up included for the pool)."""
    start = time.perf_counter()
    assert list(ordered_map(nothing, list(range(tasks)), engine=engine, workers=workers)) == list(range(tasks))
    return (time.perf_counter() - start) / tasks


def start_ray(workers: int) -> tuple[float, float]:
    """Start a local Ray (seconds), then warm its workers with one map (seconds): both left out of throughput."""
    import ray

    start = time.perf_counter()
    ray.init(address="local", num_cpus=workers, include_dashboard=False, logging_level=logging.WARNING)
    started = time.perf_counter() - start
    start = time.perf_counter()
    list(ordered_map(nothing, list(range(4 * workers)), engine="ray", workers=workers))
    return started, time.perf_counter() - start


# -- report --------------------------------------------------------------------------------------


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def projection(kinds: dict) -> list[dict]:
    """Seconds per kind and cluster: the work over (per-core rate x cores x efficiency), at least the writer's cap."""
    rows = []
    for label, cores in CLUSTERS:
        for name, work, measured_as in SCENARIOS:
            total = 0.0
            parts = {}
            for kind, entries in work.items():
                info = kinds.get(measured_as.get(kind, kind))
                if info is None:
                    continue
                count = sum(n for _, n in entries)
                efficiency = min(1.0, info["best_2_worker_speedup"] / 2)
                parallel = count / (info["per_core_rate"] * cores * efficiency)
                serial = count / info["writer_rate"]
                parts[kind] = max(parallel, serial)
                total += parts[kind]
            rows.append({"build": name, "cluster": label, "cores": cores, "seconds": total, "by_kind": parts})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run (figures meaningless)")
    parser.add_argument("--repeat", type=int, default=None, help="runs per contender, best taken (default 2; 1 with --quick)")
    parser.add_argument("--rows-repeat", type=int, default=None, help="copies of VQA-RAD's records (default 8; 1 with --quick)")
    parser.add_argument("--volumes", type=int, default=None, help="copies of the CT series (default 32; 4 with --quick)")
    parser.add_argument("--npy-volumes", type=int, default=None, help="M3D .npy volumes (default 400; 8 with --quick)")
    parser.add_argument("--videos", type=int, default=None, help="videos in the Cholec80-VQA tree, 5 clips each (default 200; 3 with --quick)")
    parser.add_argument("--tasks", type=int, default=None, help="units for the per-unit overhead (default 400; 40 with --quick)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--slice-folders", type=int, default=None, help="PNG slice folders (default 64; 3 with --quick)")
    parser.add_argument("--kinds", default="rows,volumes,volumes_slices,volumes_npy,clips", help="workloads to run, comma separated (default all)")
    parser.add_argument(
        "--volume-threads", default="1",
        help="OMNIVMED_VOLUME_THREADS for every contender (default 1: one process = one core, so the ratios are "
             "per-core scaling; a plain build encodes and decodes volume slices on min(4, cores) threads)",
    )
    args = parser.parse_args()
    os.environ["OMNIVMED_VOLUME_THREADS"] = args.volume_threads  # before Ray starts: its workers inherit it
    wanted = set(args.kinds.split(","))
    quick = args.quick
    repeat = args.repeat or (1 if quick else 2)
    workers = 2

    facts = machine_facts()
    print(f"# bench_scale: {facts['cpus']} CPUs, Python {facts['python']}, {facts['platform']}; OMNIVMED_VOLUME_THREADS={args.volume_threads}")
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        root = Path(tmp)
        (root / "raw").mkdir()
        scratch = root / "out"
        scratch.mkdir()
        makers = {
            "rows": lambda: rows_workload(root / "raw", args.rows_repeat or (1 if quick else 8)),
            "volumes": lambda: volumes_workload(root / "raw", args.volumes or (4 if quick else 32)),
            "volumes_slices": lambda: slice_folder_workload(root / "raw", args.slice_folders or (3 if quick else 64)),
            "volumes_npy": lambda: npy_volumes_workload(root / "raw", args.npy_volumes or (8 if quick else 400)),
            "clips": lambda: clips_workload(root / "raw", args.videos or (3 if quick else 200)),
        }
        workloads = [make() for kind, make in makers.items() if kind in wanted]
        overhead = {
            "in-process": per_unit_overhead("local", 1, args.tasks or (40 if quick else 400)),
            "local pool (2, start-up included)": per_unit_overhead("local", workers, args.tasks or (40 if quick else 400)),
        }
        ray_started, ray_warmed = start_ray(workers)
        overhead["ray (2, warm)"] = per_unit_overhead("ray", workers, args.tasks or (40 if quick else 400))

        kinds: dict[str, dict] = {}
        for work in workloads:
            # Every contender sees the same order in each repetition; the first build warms the page cache.
            time_build(work, "local", 1, scratch)
            runs: dict[tuple[str, int], list[float]] = {c: [] for c in CONTENDERS}
            items = None
            for _ in range(repeat):
                for engine, n in CONTENDERS:
                    seconds, counted = time_build(work, engine, n, scratch)
                    assert items in (None, counted), f"{work.kind}: {engine} x{n} made {counted} items, not {items}"
                    items = counted
                    runs[(engine, n)].append(seconds)
            best = {c: min(v) for c, v in runs.items()}
            base = items / best[("local", 1)]
            kinds[work.kind] = {
                "workload": work.what,
                "items": items,
                "seconds": {f"{e} x{n}": best[(e, n)] for e, n in CONTENDERS},
                "items_per_s": {f"{e} x{n}": items / best[(e, n)] for e, n in CONTENDERS},
                "ratio": {f"{e} x{n}": (items / best[(e, n)]) / base for e, n in CONTENDERS},
                "per_core_rate": base,
                "writer_rate": time_writer(work, scratch),
                "median_seconds": {f"{e} x{n}": statistics.median(runs[(e, n)]) for e, n in CONTENDERS},
            }
            kinds[work.kind]["best_2_worker_speedup"] = max(kinds[work.kind]["ratio"]["local x2"], kinds[work.kind]["ratio"]["ray x2"])
        import ray

        ray.shutdown()

    print("\n## Throughput (items/s; ratio against 1 process; best of", repeat, "run(s); a shared, noisy machine)\n")
    print("| kind | workload | items | 1 process | local, 2 workers | Ray, 2 workers | writer alone |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for kind, k in kinds.items():
        rate, ratio = k["items_per_s"], k["ratio"]
        print(
            f"| {kind} | {k['workload']} | {k['items']:,} | {rate['local x1']:.1f}/s (1.00x) | {rate['local x2']:.1f}/s ({ratio['local x2']:.2f}x) "
            f"| {rate['ray x2']:.1f}/s ({ratio['ray x2']:.2f}x) | {k['writer_rate']:.0f}/s |"
        )
    print(f"\nRay start-up (local, {workers} CPUs): {ray_started:.1f} s, plus {ray_warmed:.1f} s for the first map (workers starting); not in the throughput.")
    print("\n## Per-unit overhead (ordered_map of a function that does nothing)\n")
    print("| engine | ms per unit |")
    print("| --- | ---: |")
    for name, seconds in overhead.items():
        print(f"| {name} | {seconds * 1000:.2f} |")

    plan = projection(kinds)
    print("\n## Projection (no downloads, no captioning)\n")
    print("Per-core rate = the 1-process rate; efficiency = the better 2-worker ratio / 2, assumed to hold at 16 and 64")
    print("cores (linear scaling: an assumption, not measured); each kind takes at least its count / the writer's rate (serial).")
    print("Counts: whole sources as the recipe builds them (rows, volume encodes, clips):")
    for kind, entries in RECIPE_WORK.items():
        print(f"- {kind}: " + "; ".join(f"{name} {n:,}" for name, n in entries))
    print()
    print("| build | cluster | rows | volumes | clips | total |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for row in plan:
        parts = row["by_kind"]
        cells = " | ".join(duration(parts[k]) if k in parts else "-" for k in ("rows", "volumes", "clips"))
        print(f"| {row['build']} | {row['cluster']} | {cells} | {duration(row['seconds'])} |")
    print()
    for row in plan:
        if row["cores"] == 16 and row["build"].startswith("252K"):
            goal = "meets" if row["seconds"] < 1800 else "misses"
            print(f"On 16 cores, {row['build']}: {duration(row['seconds'])} ({goal} the 30-minute goal).")
    if quick:
        print("\n(--quick: a smoke run on tiny workloads; start-up dominates, the figures mean nothing.)")

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"machine": facts, "quick": quick, "repeat": repeat, "kinds": kinds, "overhead_s_per_unit": overhead,
                   "ray_startup_s": ray_started, "ray_warmup_s": ray_warmed, "projection": plan}
        args.json.write_text(json.dumps(payload, indent=1, default=str) + "\n", encoding="utf-8")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
