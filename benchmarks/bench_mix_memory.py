"""Peak memory of building and mixing does not grow with the number of samples.

For each N (default 10,000 and 100,000) two fresh subprocesses run, each
reporting its own peak RSS (VmHWM):

1. build: ``build_source`` (the real build stage: dedup, counts, rejects
   report, the one shard writer) over a builder that yields N generated
   samples (real 32x32 JPEGs; one in 10 a 6-slice volume, one in 20 an
   8-frame video; 4 modalities x 3 tasks);
2. mix: ``plan_mix`` + ``mix_and_publish`` of a recipe taking half of those
   samples, stratified, plus the whole data card (stats.json, 3 figures,
   preview page).

The ratio peak(max N) / peak(min N) is the figure quoted in benchmarks/README.md;
near 1 means memory is flat in N. Results go to benchmarks/results/.

    python benchmarks/bench_mix_memory.py [--counts 10000,100000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import machine_facts, parse_positive_ints, peak_rss_bytes

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MODALITIES = ("ct", "mri", "x_ray", "pathology")
TASKS = ("vqa", "report_generation", "image_caption")


def generated_builder(n: int):
    """A Builder over n generated samples (made here, so nothing but the build stage is measured)."""
    import cv2
    import numpy as np

    from omnivmed.builders.base import Builder, SourceInfo
    from omnivmed.data.schema import IMAGE_TOKEN, VIDEO_TOKEN, Provenance, Turn, VisualMeta, make_sample

    rng = np.random.default_rng(0)
    # A pool of real JPEGs, reused: content ids stay distinct through the conversation text.
    pool = [cv2.imencode(".jpg", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))[1].tobytes() for _ in range(256)]

    class Generated(Builder):
        info = SourceInfo("generated", "generated samples for the memory benchmark", "https://example.org", "CC0-1.0", "none")

        def check_layout(self, raw):
            pass

        def input_files(self, raw):
            return []

        def estimated_records(self, raw):
            return n

        def generate(self, raw):
            for i in range(n):
                kind = "video" if i % 20 == 0 else "volume" if i % 10 == 5 else "image"
                frames = [pool[(i + k) % len(pool)] for k in range({"image": 1, "volume": 6, "video": 8}[kind])]
                token = VIDEO_TOKEN if kind == "video" else IMAGE_TOKEN
                meta = VisualMeta(fps=8.0, timestamps_s=tuple(k / 8 for k in range(8))) if kind == "video" else None
                yield make_sample(
                    source="generated",
                    split="train",
                    task="surgical_vqa" if kind == "video" else TASKS[i % 3],
                    modality="endoscopy" if kind == "video" else MODALITIES[i % 4],
                    visual_kind=kind,
                    frames=frames,
                    frame_format="jpeg",
                    conversations=[Turn("user", f"{token}\nWhat is finding {i}?"), Turn("assistant", f"Finding {i}: " + "word " * (i % 40))],
                    visual_meta=meta,
                    provenance=Provenance((f"gen/{i}.jpg",), str(i), "CC0-1.0", "https://example.org"),
                )

    return Generated()


def child_build(n: int, work: Path) -> dict:
    from omnivmed.build import build_source

    start = time.perf_counter()
    result = build_source(generated_builder(n), work / "raw", work / "staged" / "generated", progress=False)
    return {"phase": "build", "samples": result.manifest.rows, "seconds": time.perf_counter() - start, "peak_rss_bytes": peak_rss_bytes()}


def child_mix(n: int, work: Path) -> dict:
    from omnivmed.data.mix import mix_and_publish, plan_mix
    from omnivmed.data.recipe import load_recipe

    recipe = work / "bench.yaml"
    recipe.write_text(f"name: bench\nseed: 1\nsources:\n  generated: {{take: {n // 2}}}\n")
    start = time.perf_counter()
    result = mix_and_publish(plan_mix(load_recipe(recipe), work / "staged"), work / "out", progress=False)
    seconds = time.perf_counter() - start
    return {"phase": "mix", "samples": result.manifest.rows, "seconds": seconds, "peak_rss_bytes": peak_rss_bytes()}


def run_child(phase: str, n: int, work: Path) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", phase, "--child-n", str(n), "--child-dir", str(work)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{phase} N={n} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", action="append", default=[], help="Sample counts to compare (default 10000,100000).")
    parser.add_argument("--keep", type=Path, help="Work in this folder and keep it (default: a temporary folder).")
    parser.add_argument("--child", choices=("build", "mix"), help=argparse.SUPPRESS)
    parser.add_argument("--child-n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        row = (child_build if args.child == "build" else child_mix)(args.child_n, args.child_dir)
        print(json.dumps(row))
        return 0

    counts = parse_positive_ints(args.counts or ["10000,100000"], "--counts")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-mix-") as tmp:
        base = args.keep or Path(tmp)
        for n in counts:
            work = base / f"n{n}"
            work.mkdir(parents=True, exist_ok=True)
            for phase in ("build", "mix"):
                row = {"n": n, **run_child(phase, n, work)}
                rows.append(row)
                print(
                    f"  N={n:7d} {phase:5s}: {row['samples']:7d} samples in {row['seconds']:6.1f} s, "
                    f"peak RSS {row['peak_rss_bytes'] / 2**20:7.1f} MiB",
                    flush=True,
                )
    low, high = counts[0], counts[-1]
    peak = {(r["n"], r["phase"]): r["peak_rss_bytes"] for r in rows}
    ratios = {phase: peak[(high, phase)] / peak[(low, phase)] for phase in ("build", "mix")}
    for phase, ratio in ratios.items():
        print(f"{phase}: peak RSS ratio N={high} / N={low} = {ratio:.3f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    report = {"rows": rows, "ratios": ratios, "machine": machine_facts()}
    (RESULTS / "mix_memory.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
