"""Volume throughput and build memory: omnivmed's M3D path against a plain SimpleITK read + resample.

Part 1, throughput, on the real CT in ``data/volumes``: the DICOM series
``ct_dicom_series`` (20 slices of 512x512, JPEG 2000 lossless), which is the
main case, and the CT NIfTI ``example_ct_sm.nii.gz``.

* ours: the work ``read_volume`` + ``encode_volume(volume, PRESETS["m3d"])``
  does, timed in three stages. **read** covers grouping the DICOM headers
  (pydicom), the GDCM decode to float32 and the canonical (LPS) reorientation.
  For NIfTI it also covers the truncation check. **normalise** is min-max,
  crop to the foreground, and the trilinear resize to 32x256x256. **encode**
  is the 32 PNG slices (``PNG_ENCODING``: zlib run-length strategy, Paeth
  filter, on ``volume_threads()`` threads (``OMNIVMED_VOLUME_THREADS``); the bytes do not depend on the
  thread count). The stages call ``read_volume``, ``apply_recipe`` and
  ``encode_normalised``, which are the same calls ``encode_volume`` makes. A
  check run before timing confirms the frames are byte-identical to
  ``encode_volume``'s.
* baseline (the issue's "plain SimpleITK read + resample of the same
  volumes"): for the series, ``sitk.ImageSeriesReader`` over
  ``GetGDCMSeriesFileNames(folder)``; for NIfTI, ``sitk.ReadImage``. Then
  ``sitk.Resample`` to 32x256x256, with a linear interpolator, output spacing
  = input extent / output size, the same origin and direction, and the input
  pixel type. Then ``sitk.GetArrayFromImage``. The baseline does no
  reorientation, no intensity work, no crop and no encoding.

Each contender gets one warm-up, then --repeat timed runs per volume (the
NIfTI gets --nifti-repeat). Each repetition alternates which contender goes
first. Figures are medians of ``time.perf_counter`` spans. The ratio is
throughput ours / throughput baseline, in volumes per second. Stage shares
are each stage's sum over all runs divided by the total.

Part 2, memory: ``build_source`` with the ``volumes`` builder (preset m3d),
on raw folders that hold K copies of the DICOM series. Each copy is a
folder of symlinks; with the empty UIDs, every folder is one series. An
``annotations.csv`` asks one distinct question per copy. Without it, the
copies' samples would share one content id and be dropped as duplicates, so
every one of the K volumes is really written to the shards. Each K runs in a
fresh subprocess, which reports its own peak RSS and its peak RSS after the
imports. With --tracemalloc it also reports the tracemalloc peak of the
build. That counts the Python and numpy allocations, but not SimpleITK's C++
buffers or Arrow's. It adds a few MB of its own and slows the build by about
30%. Peak RSS is VmHWM from /proc/self/status. ``ru_maxrss`` is not used here:
on Linux, a child made by fork + exec starts with its parent's resident size
in ``ru_maxrss``. It is still kept in the JSON. The child imports pandas
before it measures anything. pyarrow imports pandas at the first batch it
builds from rows, which costs about 50 MB once, at whichever K gets there.

The peak is called bounded when the last step in K adds less than 5%:
``peak(Kmax) / peak(Kprev) < 1.05``, where Kprev is the second-largest K.
With 45 -> 90 copies, keeping every stored volume (0.77 MiB each) would add
35 MiB, which is 8% of the peak. ``peak(Kmax) / peak(Kmin)`` is printed too.
It includes the warm-up: the writer's first 16 MiB record batches (about 21
volumes each), which K=5 never fills, grow the allocators once. So the
verdict is only given when Kprev stores at least two batches. Usage::

    python benchmarks/bench_volumes.py [--repeat N] [--nifti-repeat N] [--copies 5 45 90] [--tracemalloc] [--quick] [--no-memory]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from harness import machine_facts, parse_positive_ints, peak_rss_bytes
from omnivmed.data.volume import PRESETS, VolumeInput, encode_volume, read_volume
from omnivmed.data.volume.discover import expand
from omnivmed.data.volume import encode as encode_module
from omnivmed.data.volume.encode import encode_normalised
from omnivmed.data.volume.presets import M3D_SHAPE, apply_recipe

ROOT = Path(__file__).resolve().parents[1]
# A record batch's frame bytes before schema 2 (a build below two of them says nothing about flatness).
DEFAULT_BATCH_BYTES = 16 << 20
VOLUMES = ROOT / "data" / "volumes"
DICOM_SERIES = VOLUMES / "ct_dicom_series"
CT_NIFTI = VOLUMES / "example_ct_sm.nii.gz"
RESULTS = ROOT / "benchmarks" / "results" / "volumes.json"
RECIPE = PRESETS["m3d"]
FLAT_LIMIT = 1.05  # peak RSS at the most copies / at the second most

OUR_STAGES = ("read", "normalise", "encode")
BASE_STAGES = ("read", "resample")


# --------------------------------------------------------------------------- contenders


def run_ours(kind: str, path: Path) -> tuple[dict[str, float], tuple[bytes, ...], float]:
    """Stage times, PNG frames, and (DICOM only) the share of the read spent grouping headers."""
    t0 = time.perf_counter()
    item = VolumeInput(kind, path)
    if kind == "dicom":
        item = expand(item)[0]  # pydicom headers, as read_volume does for an unexpanded folder
    t1 = time.perf_counter()
    volume = read_volume(item)
    t2 = time.perf_counter()
    normalised = apply_recipe(RECIPE, volume, str(path))
    t3 = time.perf_counter()
    encoded = encode_normalised(volume, normalised)
    t4 = time.perf_counter()
    return {"read": t2 - t0, "normalise": t3 - t2, "encode": t4 - t3}, encoded.frames, t1 - t0


def resample_to(image: sitk.Image, shape_dhw: tuple[int, int, int]) -> sitk.Image:
    size = tuple(int(n) for n in reversed(shape_dhw))  # SimpleITK sizes are (x, y, z)
    spacing = tuple(s * n / m for s, n, m in zip(image.GetSpacing(), image.GetSize(), size))
    return sitk.Resample(
        image, size, sitk.Transform(), sitk.sitkLinear, image.GetOrigin(), spacing, image.GetDirection(), 0.0, image.GetPixelID()
    )


def run_baseline(kind: str, path: Path) -> tuple[dict[str, float], np.ndarray]:
    t0 = time.perf_counter()
    if kind == "dicom":
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path)))
        image = reader.Execute()
    else:
        image = sitk.ReadImage(str(path))
    t1 = time.perf_counter()
    array = sitk.GetArrayFromImage(resample_to(image, M3D_SHAPE))
    t2 = time.perf_counter()
    return {"read": t1 - t0, "resample": t2 - t1}, array


# --------------------------------------------------------------------------- part 1: throughput


def check(kind: str, path: Path) -> dict:
    """Staged frames equal encode_volume's; the baseline yields a 32x256x256 array."""
    _, frames, _ = run_ours(kind, path)
    item = expand(VolumeInput(kind, path))[0]  # a NIfTI input comes back as it is
    reference = encode_volume(read_volume(item), RECIPE)
    if frames != reference.frames:
        raise SystemExit(f"{path.name}: staged frames differ from encode_volume's")
    if len(frames) != M3D_SHAPE[0]:
        raise SystemExit(f"{path.name}: {len(frames)} frames, expected {M3D_SHAPE[0]}")
    _, array = run_baseline(kind, path)
    if array.shape != M3D_SHAPE:
        raise SystemExit(f"{path.name}: baseline array {array.shape}, expected {M3D_SHAPE}")
    return {"frames": len(frames), "png_bytes": sum(len(f) for f in frames), "baseline_dtype": str(array.dtype)}


def throughput(name: str, kind: str, path: Path, repeat: int) -> dict:
    checks = check(kind, path)  # also the warm-up of both contenders
    ours: dict[str, list[float]] = {s: [] for s in OUR_STAGES}
    base: dict[str, list[float]] = {s: [] for s in BASE_STAGES}
    ours_total, base_total, headers = [], [], []
    for rep in range(repeat):
        for who in (("ours", "baseline") if rep % 2 == 0 else ("baseline", "ours")):
            if who == "ours":
                stages, _, header_s = run_ours(kind, path)
                headers.append(header_s)
                target, totals = ours, ours_total
            else:
                stages, _ = run_baseline(kind, path)
                target, totals = base, base_total
            for stage, t in stages.items():
                target[stage].append(t)
            totals.append(sum(stages.values()))
    med_ours, med_base = statistics.median(ours_total), statistics.median(base_total)
    result = {
        "volume": name,
        "kind": kind,
        "repeat": repeat,
        "checks": checks,
        "ours": summary(ours_total),
        "baseline": summary(base_total),
        "ratio": med_base / med_ours,  # throughput ours / baseline
        "best_ratio": min(base_total) / min(ours_total),
        "ours_stage_share": {s: sum(v) / sum(ours_total) for s, v in ours.items()},
        "baseline_stage_share": {s: sum(v) / sum(base_total) for s, v in base.items()},
        "ours_stage_median_s": {s: statistics.median(v) for s, v in ours.items()},
        "baseline_stage_median_s": {s: statistics.median(v) for s, v in base.items()},
        "read_ratio": statistics.median(base["read"]) / statistics.median(ours["read"]),
        "times_s": {"ours": ours, "baseline": base},
    }
    if kind == "dicom":
        result["ours_header_share_of_read"] = sum(headers) / sum(ours["read"])
    return result


def summary(times: list[float]) -> dict:
    med = statistics.median(times)
    slow = sum(t > 3 * med for t in times)  # stalls, e.g. BLAS threads fighting for the cores
    return {"median_s": med, "min_s": min(times), "max_s": max(times), "volumes_per_s": 1.0 / med, "runs_over_3x_median": slow}


# --------------------------------------------------------------------------- part 2: memory


def make_raw(raw: Path, copies: int) -> None:
    """``copies`` folders of symlinks to the series, and one distinct question per copy."""
    sources = sorted(p for p in DICOM_SERIES.iterdir() if p.is_file())
    lines = ["volume,question,answer,split"]
    for i in range(copies):
        folder = raw / f"copy_{i:03d}"
        folder.mkdir(parents=True)
        for src in sources:
            (folder / src.name).symlink_to(src)
        lines.append(f"{folder.name},Which imaging modality acquired volume {i}?,CT,train")
    (raw / "annotations.csv").write_text("\n".join(lines) + "\n")




def child(copies: int, workdir: Path, trace: bool) -> int:
    """One build in this process; prints one JSON line with its peaks."""
    import tracemalloc

    from omnivmed.builders import get_builder
    from omnivmed.build import build_source

    try:
        # pyarrow imports pandas the first time a batch is built from Python rows
        # (about 50 MB of RSS). Importing it first keeps that one-time cost out of the
        # build's figures, whichever K reaches its first batch.
        importlib.import_module("pandas")
    except ImportError:
        pass
    builder = get_builder("volumes", {"preset": "m3d"})
    raw, out = workdir / "raw", workdir / "out"
    make_raw(raw, copies)
    hwm_start = peak_rss_bytes()
    if trace:
        tracemalloc.start()
    t0 = time.perf_counter()
    result = build_source(builder, raw, out, progress=False)
    seconds = time.perf_counter() - t0
    traced_peak = tracemalloc.get_traced_memory()[1] if trace else None
    if trace:
        tracemalloc.stop()
    manifest = result.manifest
    print(
        json.dumps(
            {
                "copies": copies,
                "seconds": seconds,
                "volumes_per_s": copies / seconds,
                "peak_rss_bytes": peak_rss_bytes(),
                "rss_after_imports_bytes": hwm_start,
                # Not used: Linux carries the parent's RSS at fork into the child's ru_maxrss across exec.
                "ru_maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                "traced_peak_bytes": traced_peak,
                "samples": sum(s.rows for s in manifest.shards),
                "shard_bytes": sum(s.bytes for s in manifest.shards),
                "shards": len(manifest.shards),
                "duplicates_removed": manifest.duplicates_removed,
                "rejects": manifest.rejects,
            }
        )
    )
    return 0


def memory(copies_list: list[int], tmpdir: Path, trace: bool) -> list[dict]:
    rows = []
    for copies in copies_list:
        work = Path(tempfile.mkdtemp(prefix=f"bench_volumes.{copies}.", dir=tmpdir))
        try:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child-copies", str(copies), "--child-dir", str(work)]
            if trace:
                cmd.append("--tracemalloc")
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if proc.returncode != 0:
                raise SystemExit(f"build of {copies} copies failed:\n{proc.stderr[-4000:]}")
            row = json.loads(proc.stdout.strip().splitlines()[-1])
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if row["samples"] != copies or row["duplicates_removed"] or row["rejects"]:
            raise SystemExit(f"build of {copies} copies wrote {row['samples']} samples, rejects {row['rejects']}")
        traced = f"{row['traced_peak_bytes'] / 2**20:7.1f} MiB traced" if row["traced_peak_bytes"] is not None else ""
        print(
            f"  K={copies:4d}: peak RSS {row['peak_rss_bytes'] / 2**20:7.1f} MiB "
            f"(after imports {row['rss_after_imports_bytes'] / 2**20:.1f})  {traced}  "
            f"{row['seconds']:.1f}s = {row['volumes_per_s']:.2f} vol/s, shards {row['shard_bytes'] / 1e6:.1f} MB",
            flush=True,
        )
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- harness




def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=20, help="timed runs of the DICOM series per contender")
    parser.add_argument("--nifti-repeat", type=int, default=60, help="timed runs of the CT NIfTI per contender")
    parser.add_argument(
        "--copies", nargs="+", default=["5", "45", "90"], help="series copies per build (e.g. 5 45 90 or 5,45,90)"
    )
    parser.add_argument("--tracemalloc", dest="trace", action="store_true", help="also trace Python/numpy peaks (~30%% slower)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 / 10 repeats, copies 2 4 8")
    parser.add_argument("--no-memory", dest="memory", action="store_false", help="part 1 only (throughput)")
    parser.add_argument(
        "--tmpdir", type=Path, default=ROOT / "benchmarks" / "results", help="where the raw folders and shards go (a real disk)"
    )
    parser.add_argument("--json", type=Path, default=RESULTS)
    parser.add_argument("--child-copies", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child_copies is not None:
        return child(args.child_copies, args.child_dir, args.trace)
    if args.quick:
        args.repeat, args.nifti_repeat, args.copies = 3, 10, ["2", "4", "8"]
    copies = parse_positive_ints(args.copies, "--copies")
    for path in (DICOM_SERIES, CT_NIFTI):
        if not path.exists():
            raise SystemExit(f"{path}: missing (the real volumes are vendored in data/volumes)")

    print(f"part 1: throughput, M3D path vs SimpleITK read + resample to {'x'.join(map(str, M3D_SHAPE))}", flush=True)
    volumes = []
    for name, kind, path, repeat in (
        ("ct_dicom_series (20x512x512, JPEG 2000)", "dicom", DICOM_SERIES, args.repeat),
        ("example_ct_sm.nii.gz (30x101x122)", "nifti", CT_NIFTI, args.nifti_repeat),
    ):
        t0 = time.perf_counter()
        volumes.append(throughput(name, kind, path, repeat))
        print(f"  {name}: {repeat} runs each in {time.perf_counter() - t0:.1f}s", flush=True)

    print()
    print(f"{'volume':42}{'contender':11}{'median s':>10}{'vol/s':>9}{'min..max s':>18}")
    for r in volumes:
        for who in ("ours", "baseline"):
            s = r[who]
            print(f"{r['volume']:42}{who:11}{s['median_s']:10.4f}{s['volumes_per_s']:9.2f}{s['min_s']:10.4f}..{s['max_s']:.4f}")
    print()
    for r in volumes:
        shares = ", ".join(f"{s} {v:.0%}" for s, v in r["ours_stage_share"].items())
        base_shares = ", ".join(f"{s} {v:.0%}" for s, v in r["baseline_stage_share"].items())
        print(f"{r['volume']}")
        print(f"  ratio ours/baseline (vol/s): {r['ratio']:.2f} (best runs only: {r['best_ratio']:.2f})")
        print(f"  ours: {shares}; baseline: {base_shares}")
        extra = f"; pydicom header grouping is {r['ours_header_share_of_read']:.0%} of our read" if "ours_header_share_of_read" in r else ""
        print(f"  read alone, ours/baseline (speed): {r['read_ratio']:.2f}{extra}")
        stalls = r["ours"]["runs_over_3x_median"], r["baseline"]["runs_over_3x_median"]
        if any(stalls):
            print(f"  runs over 3x the median: ours {stalls[0]}, baseline {stalls[1]} of {r['repeat']}")

    encoding = {"png_encoding": getattr(encode_module, "PNG_ENCODING", "png-1 (zlib level 3)"),
                "encode_threads": encode_module.volume_threads() if hasattr(encode_module, "volume_threads") else getattr(encode_module, "ENCODE_THREADS", 1)}
    print(f"encoder: {encoding['png_encoding']} on {encoding['encode_threads']} thread(s)")
    if not args.memory:
        result = {"benchmark": "volumes", "recipe": RECIPE.describe(), **encoding, "throughput": volumes, "memory": None,
                  "machine": machine_facts(simpleitk=sitk.Version_VersionString(), numpy=np.__version__)}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"results: {args.json}")
        return 0

    print()
    print("part 2: peak memory of build_source (volumes builder, preset m3d), K copies of the series, one subprocess per K", flush=True)
    args.tmpdir.mkdir(parents=True, exist_ok=True)
    builds = memory(copies, args.tmpdir, args.trace)
    low, prev, high = builds[0], builds[-2] if len(builds) > 1 else builds[0], builds[-1]
    rss_ratio = high["peak_rss_bytes"] / low["peak_rss_bytes"]
    tail_ratio = high["peak_rss_bytes"] / prev["peak_rss_bytes"]
    per_volume_mb = (high["peak_rss_bytes"] - prev["peak_rss_bytes"]) / 2**20 / max(1, high["copies"] - prev["copies"])
    stored_mb = high["shard_bytes"] / 2**20 / high["copies"]
    # Below two record batches the writer's allocators are still warming up.
    conclusive = len(builds) > 1 and prev["shard_bytes"] >= 2 * DEFAULT_BATCH_BYTES
    flat = (tail_ratio < FLAT_LIMIT) if conclusive else None
    verdict = {True: "bounded", False: "NOT bounded", None: "inconclusive: the second-largest K stores under two record batches"}
    print(
        f"peak RSS K={high['copies']} / K={prev['copies']}: {tail_ratio:.3f} "
        f"({verdict[flat]}; limit {FLAT_LIMIT}); "
        f"{per_volume_mb:+.2f} MiB per extra volume, against {stored_mb:.2f} MiB stored per volume"
    )
    print(
        f"peak RSS K={high['copies']} / K={low['copies']}: {rss_ratio:.3f} "
        f"(includes the allocators' warm-up on the first record batches)"
    )
    traced_ratio = None
    if args.trace:
        traced_ratio = high["traced_peak_bytes"] / low["traced_peak_bytes"]
        print(f"tracemalloc peak K={high['copies']} / K={low['copies']}: {traced_ratio:.3f}")

    result = {
        "benchmark": "volumes",
        "recipe": RECIPE.describe(),
        **encoding,
        "throughput": volumes,
        "memory": {
            "builds": builds,
            "peak_rss_ratio_max_over_min": rss_ratio,
            "peak_rss_ratio_max_over_prev": tail_ratio,
            "traced_peak_ratio": traced_ratio,
            "rss_growth_mib_per_volume_prev_to_max": per_volume_mb,
            "stored_mib_per_volume": stored_mb,
            "flat_limit": FLAT_LIMIT,
            "batch_bytes": DEFAULT_BATCH_BYTES,
            "bounded": flat,
        },
        "machine": machine_facts(
            simpleitk=sitk.Version_VersionString(),
            numpy=np.__version__,
            itk_threads=sitk.ProcessObject.GetGlobalDefaultNumberOfThreads(),
            env={k: os.environ[k] for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ},
        ),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
