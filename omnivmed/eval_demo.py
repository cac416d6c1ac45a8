"""``make eval-demo``: the evaluator end to end, offline, on the embedded default's held-out splits.

1. the embedded default is built when missing (``omnivmed.embedded``: its
   staged sources hold VQA-RAD's test split, SLAKE's test split of the 9
   vendored image folders and the generated Cholec80-VQA layout's held-out video);
2. two baselines answer them: ``majority`` (the train split's most common
   answer per answer type and question type) and ``blind`` (SmolLM2-135M-Instruct,
   a DEMO model, text-only, answering without the image through a loopback
   OpenAI-compatible server, the captioner's client and cache);
3. every registered protocol scores both; ``overlap`` checks the test frames
   against the embedded training mix and each source's own train split;
4. ``report.md`` and ``scores.png`` put it together.

A second run asks the demo model nothing (every answer is in the cache), so it
does not even load it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from omnivmed.evaluation.benchmarks import get_benchmark
from omnivmed.eval_pipeline import DemoServer, PredictOptions, overlap, overlap_lines, predict, report, resolve_protocols, score

DEMO_BENCHMARKS = ("vqa_rad", "slake", "cholec80_vqa")
BLIND_MAX_TOKENS = 8  # yes/no fits; open answers are cut short (the model rambles)


def ensure_embedded(embedded: Path, note: Callable[[str], None]) -> Path:
    """The staged root of the embedded default, building it first when a part is missing."""
    from omnivmed.embedded import sources_dir

    embedded = Path(embedded)
    staged = sources_dir(embedded) / "staged"
    wanted = [staged / get_benchmark(b).source / "manifest.json" for b in DEMO_BENCHMARKS] + [embedded / "manifest.json"]
    if not all(p.is_file() for p in wanted):
        from omnivmed.embedded import mix_embedded

        note(f"building the embedded default into {embedded} (about 20 s)")
        mix_embedded(embedded, progress=False)
    return staged


def run_demo(
    out: Path, embedded: Path = Path("out/omnivmed-embedded"), note: Callable[[str], None] = lambda _: None, demo: DemoServer | None = None
) -> list[str]:
    """Run the demo into ``out``; returns the lines to print (the table and where things went).

    ``demo``: the server of the blind baseline's model (default: SmolLM2, loaded only on a cache miss)."""
    from omnivmed.evaluation.report import PAPER_PROTOCOL, closed_open, Run

    out = Path(out)
    staged = ensure_embedded(embedded, note)
    benchmarks = [get_benchmark(b) for b in DEMO_BENCHMARKS]
    protocols = resolve_protocols("all")
    runs = {
        "majority": PredictOptions(baseline="majority"),
        "blind": PredictOptions(baseline="blind", max_tokens=BLIND_MAX_TOKENS),
    }
    lines: list[str] = []
    demo = demo or DemoServer()
    try:
        for label, options in runs.items():
            folder = out / label
            for result in predict(benchmarks, {}, staged, options, folder, note, demo):
                if result.outcome.failures:
                    raise RuntimeError(f"{label}: {len(result.outcome.failures)} questions of {result.benchmark} failed")
                score(get_benchmark(result.benchmark), result.records, result.path, protocols, None, folder)
                lines.append(
                    f"{label} {result.benchmark}: {len(result.outcome.predictions)} answers"
                    + (f" ({result.outcome.sent} asked, {result.outcome.cached} from the cache)" if label == "blind" else "")
                )
    finally:
        demo.close()
    found = overlap(Path(embedded) / "manifest.json", benchmarks, {}, staged, out, note)
    lines += overlap_lines(found)
    path = report([out / label for label in runs], out / "overlap.json", out)
    loaded = [Run.load(out / label) for label in runs]
    lines += ["", "closed / open headline per protocol (closed: accuracy-type metric, open: recall-type metric)"]
    header = f"{'benchmark':<14}{'protocol':<20}" + "".join(f"{run.label:>18}" for run in loaded)
    lines += [header, "-" * len(header)]
    for b in DEMO_BENCHMARKS:
        for protocol in protocols:
            cells = []
            for run in loaded:
                closed, opened = closed_open(run, b, protocol.name)
                cells.append(f"{_fmt(closed)} / {_fmt(opened)}".rjust(18))
            lines.append(f"{b:<14}{protocol.name:<20}" + "".join(cells))
    lines += ["", f"paper-table figures come from the {PAPER_PROTOCOL} protocol; every metric of every protocol is in scores.json"]
    lines += [f"-> {out / label / 'scores.json'}" for label in runs] + [f"-> {path}"]
    return lines


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.1f}"
