"""Start-up time of the command lines: how long ``--help`` takes, and which imports it pays for.

* Commands: ``omnivmed-data --help``, ``omnivmed-data build --help`` and
  ``omnivmed-train --help``, run through the venv's console scripts (the files
  ``pip install -e`` wrote), each as a fresh subprocess. A command whose
  warm-up run fails (``omnivmed-train`` before its CLI exists) is reported as
  skipped, with its error.
* Timing: one untimed warm-up per command (byte-compiles, warms the page
  cache), then --repeat rounds; a round runs every command once, in turn, so a
  noisy stretch of the machine hits all of them alike. Figures are the median
  and the minimum of ``time.perf_counter`` around ``subprocess.run``, in
  seconds. The goal is a median under 0.5 s.
* Imports: for each entry module (``omnivmed.cli.data``, ``omnivmed.cli.train``),
  one ``python -X importtime -c "import MODULE"``: its cumulative import time,
  the 10 imports with the largest cumulative time, and which heavy libraries
  (pyarrow, pydicom, SimpleITK, PyAV, OpenCV, torch, ...) the import loaded.
* ``--against REF`` measures the tree of git commit REF too (exported with
  ``git archive`` into a temporary folder, laid out as the ``omnivmed``
  namespace by pyproject's package-dir, and put first on PYTHONPATH, so the
  same console scripts import it). Each round then runs REF's commands and
  the working tree's, alternating which goes first; the ratio is working
  tree / REF, of the medians. It also says whether each command's output is
  the same in both trees. Nothing in the checkout changes.

Usage::

    .venv/bin/python benchmarks/bench_startup.py [--repeat 10] [--against HEAD]

Writes benchmarks/results/startup.json (git-ignored).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from importlib import metadata
from pathlib import Path

from harness import machine_facts

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RESULTS = ROOT / "benchmarks" / "results" / "startup.json"
GOAL_S = 0.5
# `python -c` puts the current folder first on sys.path: run everything from one
# that holds no omnivmed, so each tree is imported the way its install says.
NEUTRAL_CWD = Path(tempfile.gettempdir())

# label -> (console script, arguments)
COMMANDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "omnivmed-data --help": ("omnivmed-data", ("--help",)),
    "omnivmed-data build --help": ("omnivmed-data", ("build", "--help")),
    "omnivmed-train --help": ("omnivmed-train", ("--help",)),
}
ENTRY_MODULES = ("omnivmed.cli.data", "omnivmed.cli.train")
HEAVY = (
    "pyarrow",
    "polars",
    "pandas",
    "datasets",
    "numpy",
    "PIL",
    "pydicom",
    "SimpleITK",
    "av",
    "cv2",
    "matplotlib",
    "torch",
    "transformers",
    "openai",
    "rich.table",
    "rich.progress",
)
TOP = 10
UNHOOK_EDITABLE = """import sys
sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
"""


def env_for(pythonpath: Path | None) -> dict[str, str]:
    """The environment of a run: REF's tree first on PYTHONPATH, or no PYTHONPATH (the editable install)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return env


def export_ref(ref: str, dest: Path) -> Path:
    """REF's files under ``dest``, with links that make each package-dir folder its ``omnivmed.*`` name."""
    dest.mkdir()
    archive = subprocess.run(["git", "archive", "--format=tar", ref], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    package_dir = tomllib.loads((dest / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["package-dir"]
    for package, folder in sorted(package_dir.items()):
        link = dest.joinpath(*package.split("."))
        if link != dest / folder and not link.exists():
            link.symlink_to(dest / folder, target_is_directory=True)
    # The editable install's finder would still serve modules REF lacks from the
    # working tree (it runs after PYTHONPATH's entries); site drops it at start-up.
    (dest / "sitecustomize.py").write_text(UNHOOK_EDITABLE, encoding="utf-8")
    return dest


def run_once(script: str, args: tuple[str, ...], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run([str(BIN / script), *args], env=env, capture_output=True, text=True, cwd=NEUTRAL_CWD)
    return time.perf_counter() - start, proc


def which_tree(env: dict[str, str]) -> str:
    """The folder ``omnivmed`` is imported from under ``env`` (checks REF's tree really is the one run)."""
    code = "import omnivmed, pathlib; print(pathlib.Path(omnivmed.__file__).resolve().parent.parent)"
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd=NEUTRAL_CWD
    ).stdout.strip()


def import_profile(module: str, env: dict[str, str]) -> dict:
    """Cumulative import time of ``module``, its top imports, and the heavy libraries it loaded."""
    command = [sys.executable, "-X", "importtime", "-c", f"import {module}"]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, cwd=NEUTRAL_CWD)
    if proc.returncode != 0:
        return {"skipped": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        _, self_us, cumulative_us, name = (part.strip() for part in line.replace("import time:", "|", 1).split("|"))
        rows.append((int(cumulative_us), int(self_us), name))
    entry = next(c for c, _, name in rows if name == module)
    top = sorted(rows, reverse=True)[:TOP]
    probe = f"import json, sys, {module}; print(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))"
    probed = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True, cwd=NEUTRAL_CWD)
    loaded = json.loads(probed.stdout)
    return {
        "import_s": round(entry / 1e6, 4),
        "top_cumulative": [{"module": name, "cumulative_s": round(c / 1e6, 4), "self_s": round(s / 1e6, 4)} for c, s, name in top],
        "heavy_loaded": loaded,
    }


def summary(times: list[float]) -> dict:
    return {"median_s": round(statistics.median(times), 4), "min_s": round(min(times), 4), "runs": len(times)}


def measure(trees: dict[str, dict[str, str]], repeat: int) -> dict:
    """Per tree and command: median/min seconds (or why it was skipped), and its output for comparison."""
    results: dict[str, dict[str, dict]] = {tree: {} for tree in trees}
    outputs: dict[str, dict[str, str]] = {tree: {} for tree in trees}
    times: dict[tuple[str, str], list[float]] = {}
    for tree, env in trees.items():
        for label, (script, args) in COMMANDS.items():
            if not (BIN / script).is_file():
                results[tree][label] = {"skipped": f"no {BIN / script}"}
                continue
            _, proc = run_once(script, args, env)  # warm-up
            if proc.returncode != 0:
                tail = (proc.stderr or proc.stdout).strip().splitlines()
                results[tree][label] = {"skipped": tail[-1] if tail else f"exit {proc.returncode}"}
            else:
                times[tree, label] = []
                outputs[tree][label] = proc.stdout
    order = list(trees)
    for round_ in range(repeat):
        for tree in order[round_ % 2 :] + order[: round_ % 2]:  # alternate which tree goes first
            for label, (script, args) in COMMANDS.items():
                if (tree, label) in times:
                    seconds, _ = run_once(script, args, trees[tree])
                    times[tree, label].append(seconds)
    for (tree, label), values in times.items():
        results[tree][label] = summary(values)
    return {"results": results, "outputs": outputs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=10, help="timed runs of each command (median and min are reported)")
    parser.add_argument("--against", metavar="REF", help="also measure git commit REF's tree (e.g. HEAD) and report the ratio")
    args = parser.parse_args(argv)
    if not (BIN / "omnivmed-data").is_file():
        raise SystemExit(f"no {BIN / 'omnivmed-data'}: run `make install` first")

    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        trees = {"working tree": env_for(None)}
        if args.against:
            ref_root = export_ref(args.against, Path(tmp) / "ref")
            trees[args.against] = env_for(ref_root)
            if Path(which_tree(trees[args.against])) != ref_root.resolve():
                raise SystemExit(f"PYTHONPATH={ref_root} did not take precedence over the editable install")
        measured = measure(trees, args.repeat)
        imports = {tree: {m: import_profile(m, env) for m in ENTRY_MODULES} for tree, env in trees.items()}

    report: dict = {
        "machine": machine_facts(typer=metadata.version("typer"), rich=metadata.version("rich")),
        "repeat": args.repeat,
        "goal_median_s": GOAL_S,
        "startup": measured["results"],
        "imports": imports,
    }
    if args.against:
        ours, ref = measured["results"]["working tree"], measured["results"][args.against]
        report["ratio_working_tree_over_ref"] = {
            label: round(ours[label]["median_s"] / ref[label]["median_s"], 3)
            for label in COMMANDS
            if "median_s" in ours.get(label, {}) and "median_s" in ref.get(label, {})
        }
        outputs = measured["outputs"]
        report["same_output_as_ref"] = {
            label: outputs["working tree"][label] == outputs[args.against][label]
            for label in COMMANDS
            if label in outputs["working tree"] and label in outputs[args.against]
        }
    report["under_goal"] = {
        label: row["median_s"] < GOAL_S for label, row in measured["results"]["working tree"].items() if "median_s" in row
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "machine"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
