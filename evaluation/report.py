"""``report.md``: the paper's three tables with our numbers beside the published ones, every protocol's
numbers for the same predictions, the overlap beside the scores, and a figure.

Inputs are score folders (``scores.json``, ``breakdowns.json``,
``matching.json`` and the predictor's ``run.json``), one per set of
predictions (a model, a baseline), and optionally ``overlap.json``.

Our row in the paper's tables comes from the ``omnivmed-paper`` protocol
(closed accuracy and open recall as the paper reports them); where a run was
not scored with it, the cells say so. The figure shows, per benchmark, each
protocol's closed-question and open-question headline metric for every run:
how far the same predictions move between harnesses.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from omnivmed.evaluation import paper
from omnivmed.evaluation.benchmarks import BENCHMARKS
from omnivmed.evaluation.errors import EvalInputError
from omnivmed.evaluation.scoring import format_value, load_scores

PAPER_PROTOCOL = "omnivmed-paper"
RUN_NAME = "run.json"
REPORT_NAME = "report.md"
FIGURE_NAME = "scores.png"

# protocol -> (its closed-question accuracy, its open-question recall or nearest figure): what the
# figure and the summary compare. Protocols that report fractions are scaled to percent (SCALE).
HEADLINE: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "omnivmed-paper": (("closed accuracy",), ("open recall",)),
    "llava-med": (("yes/no accuracy",), ("recall",)),
    "medevalkit": (("close/acc",), ("open/recall",)),
    "medevalkit-fixed": (("close/acc",), ("open/recall",)),
    "multimedeval": (("closedQuestionsAccuracy",), ("openQuestionsRecall",)),
    "multimedeval-fixed": (("closedQuestionsAccuracy",), ("openQuestionsRecall",)),
    "lmms-eval": (("slake_closed_accuracy",), ("slake_open_accuracy",)),
    "m3d": (("all/Correct",), ()),
    "m3d-fixed": (("all/Correct",), ()),
    "omnivmed": (("closed accuracy",), ("open recall",)),
}
SCALE = {name: 100.0 for name in ("medevalkit", "medevalkit-fixed", "multimedeval", "multimedeval-fixed", "lmms-eval", "m3d", "m3d-fixed")}
SURGICAL = ("cholec80_vqa", "endovis18_vqa", "psiava_vqa")


@dataclass
class Run:
    label: str
    folder: Path
    scores: dict
    breakdowns: dict
    matching: dict
    info: dict = field(default_factory=dict)

    @classmethod
    def load(cls, folder: Path, label: str | None = None) -> "Run":
        folder = Path(folder)
        scores, breakdowns, matching = load_scores(folder)
        info = {}
        if (folder / RUN_NAME).is_file():
            try:
                info = json.loads((folder / RUN_NAME).read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                raise EvalInputError(f"{folder / RUN_NAME}: not valid JSON ({err.msg})") from None
        return cls(label or folder.name, folder, scores, breakdowns, matching, info)

    def describe(self) -> str:
        parts = [str(self.info[k]) for k in ("predictor", "model", "prompt_version") if self.info.get(k)]
        return ", ".join(parts) or "predictions from a file"


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def pick(metrics: Mapping | None, names: Sequence[str], contains: str = "") -> float | None:
    """The first of ``names`` present as a number; else the first metric whose name holds ``contains``."""
    if not metrics:
        return None
    for name in names:
        if _number(metrics.get(name)) is not None:
            return _number(metrics[name])
    if contains:
        for name, value in metrics.items():
            if contains in name.lower() and _number(value) is not None:
                return _number(value)
    return None


def has_answer_type(run: Run, benchmark: str, answer_type: str) -> bool:
    """Whether the benchmark's scored items include ``answer_type`` (read from any protocol's breakdown)."""
    for by_axis in run.breakdowns.get(benchmark, {}).values():
        groups = by_axis.get("answer_type")
        if groups is not None:
            return answer_type in groups
    return True


def closed_open(run: Run, benchmark: str, protocol: str, question_type: str = "") -> tuple[float | None, float | None]:
    """(closed-question headline, open-question headline) of ``protocol`` on a benchmark, in percent.

    ``omnivmed-paper``: the paper's figures (M3D: per question type, or the mean of the types;
    surgical: accuracy, no open figure). Others: HEADLINE's names, else the first metric naming
    accuracy / recall. None where the benchmark has no question of that kind or the protocol no such figure.
    """
    overall = run.scores.get(benchmark, {}).get(protocol) or {}
    if protocol == PAPER_PROTOCOL:
        if benchmark == "m3d_vqa" or question_type:
            suffix = question_type or "avg"
            return pick(overall, (f"closed accuracy/{suffix}",)), pick(overall, (f"open recall/{suffix}",))
        if benchmark in SURGICAL:
            return pick(overall, ("accuracy",)), None
    if question_type:
        return None, None
    closed_names, open_names = HEADLINE.get(protocol, ((), ()))
    known = protocol in HEADLINE
    closed = pick(overall, closed_names, "" if known else "accuracy") if has_answer_type(run, benchmark, "closed") else None
    opened = pick(overall, open_names, "" if known else "recall") if has_answer_type(run, benchmark, "open") else None
    scale = SCALE.get(protocol, 1.0)
    return (None if closed is None else closed * scale, None if opened is None else opened * scale)


def _cell(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _mean(values: Sequence[float | None]) -> float | None:
    return None if any(v is None for v in values) or not values else sum(values) / len(values)


def table1(runs: Sequence[Run]) -> list[str]:
    head = "| model | " + " | ".join(f"{BENCHMARKS[b].title} open | closed" for b in paper.TABLE1_BENCHMARKS) + " |"
    lines = [f"### {paper.TABLE1_TITLE}", "", f"Published rows quoted from {paper.PAPER}, {paper.TABLE1_TITLE.split(':')[0]}.", "", head]
    lines.append("| --- |" + " --- | --- |" * len(paper.TABLE1_BENCHMARKS))
    for model, values in paper.TABLE1.items():
        lines.append(f"| {model} (published) | " + " | ".join(f"{values[b][0]:.2f} | {values[b][1]:.2f}" for b in paper.TABLE1_BENCHMARKS) + " |")
    for run in runs:
        cells = []
        for b in paper.TABLE1_BENCHMARKS:
            closed, opened = closed_open(run, b, PAPER_PROTOCOL)
            cells.append(f"{_cell(opened)} | {_cell(closed)}")
        lines.append(f"| ours: {run.label} | " + " | ".join(cells) + " |")
    return lines


def table2(runs: Sequence[Run]) -> list[str]:
    lines = [f"### {paper.TABLE2_TITLE}", "", f"Published rows quoted from {paper.PAPER}, {paper.TABLE2_TITLE.split(':')[0]}.", ""]
    for form in ("closed", "open"):
        lines += [f"{'Closed accuracy' if form == 'closed' else 'Open recall'}:", ""]
        lines.append("| model | " + " | ".join(paper.M3D_TYPES) + " | avg |")
        lines.append("| --- |" + " --- |" * (len(paper.M3D_TYPES) + 1))
        for model, values in paper.TABLE2[form].items():
            lines.append(f"| {model} (published) | " + " | ".join(f"{v:.2f}" for v in values) + " |")
        for run in runs:
            values = [closed_open(run, "m3d_vqa", PAPER_PROTOCOL, t)[0 if form == "closed" else 1] for t in paper.M3D_TYPES]
            lines.append(f"| ours: {run.label} | " + " | ".join(_cell(v) for v in values) + f" | {_cell(_mean(values))} |")
        lines.append("")
    return lines[:-1]


def surgical_accuracy(run: Run, benchmark: str) -> float | None:
    return closed_open(run, benchmark, PAPER_PROTOCOL)[0]


def table3(runs: Sequence[Run]) -> list[str]:
    lines = [f"### {paper.TABLE3_TITLE}", "", f"Published rows quoted from {paper.PAPER}, {paper.TABLE3_TITLE.split(':')[0]}.", ""]
    lines.append("| model | " + " | ".join(BENCHMARKS[b].title for b in paper.TABLE3_BENCHMARKS) + " |")
    lines.append("| --- |" + " --- |" * len(paper.TABLE3_BENCHMARKS))
    for model, values in paper.TABLE3.items():
        lines.append(f"| {model} (published) | " + " | ".join(f"{v:.1f}" for v in values) + " |")
    for run in runs:
        lines.append(f"| ours: {run.label} | " + " | ".join(_cell(surgical_accuracy(run, b)) for b in paper.TABLE3_BENCHMARKS) + " |")
    return lines


def benchmarks_of(runs: Sequence[Run]) -> list[str]:
    found = {b for run in runs for b in run.scores}
    return [b for b in BENCHMARKS if b in found] + sorted(found - set(BENCHMARKS))


def protocol_table(runs: Sequence[Run]) -> list[str]:
    """One table per run: a row per (protocol, metric), a column per benchmark."""
    lines: list[str] = []
    benchmarks = benchmarks_of(runs)
    for run in runs:
        present = [b for b in benchmarks if b in run.scores]
        lines += [f"#### {run.label} ({run.describe()})", ""]
        lines.append("| protocol | metric | " + " | ".join(present) + " |")
        lines.append("| --- | --- |" + " --- |" * len(present))
        protocols = list(dict.fromkeys(p for b in present for p in run.scores[b]))
        for protocol in protocols:
            metrics = list(dict.fromkeys(m for b in present for m in run.scores[b].get(protocol, {})))
            for metric in metrics:
                cells = [format_value(run.scores[b].get(protocol, {}).get(metric)) if metric in run.scores[b].get(protocol, {}) else "" for b in present]
                lines.append(f"| {protocol} | {metric} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def overlap_table(runs: Sequence[Run], overlap: Mapping | None) -> list[str]:
    """Per benchmark: questions, each run's closed/open headline (our protocol), and the overlap counts."""
    benchmarks = benchmarks_of(runs) if runs else list((overlap or {}).get("benchmarks", {}))
    lines = []
    if overlap:
        m = overlap.get("method", {})
        lines += [
            f"Overlap: exact = {m.get('exact', 'decoded-pixel sha256')}; perceptual = {m.get('perceptual', 'pHash')}, "
            f"at most {m.get('perceptual_threshold_bits', '?')} of 64 bits apart. Training set: `{overlap.get('train', '-')}`.",
            "",
        ]
    score_heads = [f"{run.label} closed / open" for run in runs]
    lines.append("| benchmark | questions | " + " | ".join(score_heads) + " | test frames | in training set (exact / perceptual) | in own train split (exact / perceptual) | questions on a shared frame (own train) | same image + question (own train) |")
    lines.append("| --- | --- |" + " --- |" * len(score_heads) + " --- | --- | --- | --- | --- |")
    for b in benchmarks:
        scores = []
        questions = ""
        for run in runs:
            closed, opened = closed_open(run, b, PAPER_PROTOCOL)
            scores.append(f"{_cell(closed)} / {_cell(opened)}")
            questions = questions or str(run.matching.get(b, {}).get("questions", ""))
        entry = (overlap or {}).get("benchmarks", {}).get(b, {})
        mix, own = entry.get("train_mix"), entry.get("own_train")
        frames = str((mix or own or {}).get("test_frames", "–"))
        questions = questions or str((mix or own or {}).get("test_questions", ""))
        cell = lambda c: f"{c['frames_shared_exact']} / {c['frames_shared_perceptual']}" if c else "–"  # noqa: E731
        lines.append(
            f"| {b} | {questions} | " + " | ".join(scores) + f" | {frames} | {cell(mix)} | {cell(own)} | "
            f"{own['questions_with_shared_frame_exact'] if own else '–'} | {own['image_question_shared'] if own else '–'} |"
        )
    return lines


def figure_png(runs: Sequence[Run]) -> bytes | None:
    """Bars: per benchmark, each protocol's closed and open headline, per run (PNG bytes; None if nothing to draw)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    benchmarks = benchmarks_of(runs)
    protocols = list(dict.fromkeys(p for run in runs for b in benchmarks for p in run.scores.get(b, {})))
    if not benchmarks or not protocols:
        return None
    series = [(run, form) for run in runs for form in ("closed", "open")]
    figure = Figure(figsize=(max(6.0, 3.2 * len(benchmarks)), 4.6))
    axes = figure.subplots(1, len(benchmarks), squeeze=False)[0]
    width = 0.8 / max(1, len(series))
    colours = ["#4c72b0", "#9ecae1", "#dd8452", "#fdd0a2", "#55a868", "#a1d99b", "#c44e52", "#fcbba1"]
    for ax, b in zip(axes, benchmarks):
        for k, (run, form) in enumerate(series):
            values = []
            for p in protocols:
                closed, opened = closed_open(run, b, p)
                value = closed if form == "closed" else opened
                values.append(float("nan") if value is None else value)
            ax.bar([i + k * width for i in range(len(protocols))], values, width, label=f"{run.label} {form}", color=colours[k % len(colours)])
        ax.set_title(BENCHMARKS[b].title if b in BENCHMARKS else b, fontsize=10)
        ax.set_xticks([i + width * (len(series) - 1) / 2 for i in range(len(protocols))])
        ax.set_xticklabels(protocols, rotation=45, ha="right", fontsize=8)
        ax.set_ylim(0, 100)
    axes[0].set_ylabel("headline metric (%)")
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=len(series), fontsize=8, frameon=False)
    figure.suptitle("Same predictions, different protocols: closed and open headline metric", fontsize=10)
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return buffer.getvalue()


def matching_lines(runs: Sequence[Run]) -> list[str]:
    lines = []
    for run in runs:
        lines.append(f"- **{run.label}**: {run.describe()}")
        for b in benchmarks_of([run]):
            m = run.matching.get(b)
            if m is None:
                continue
            text = f"{m.get('matched', 0)}/{m.get('questions', 0)} answered"
            if m.get("missing"):
                text += f", {m['missing']} missing (scored as empty answers)"
            if m.get("unmatched"):
                text += f", {m['unmatched']} predictions matched no question"
            if m.get("duplicates"):
                text += f", {m['duplicates']} repeated"
            lines.append(f"  - {b}: {text}")
    return lines


def render(runs: Sequence[Run], overlap: Mapping | None = None, figure_name: str | None = FIGURE_NAME) -> str:
    lines = ["# omnivmed-eval report", ""]
    lines += ["Predictions scored:", ""] + matching_lines(runs) + [""]
    lines += ["## Scores beside overlap", "", f"Closed accuracy / open recall from the `{PAPER_PROTOCOL}` protocol.", ""]
    lines += overlap_table(runs, overlap) + [""]
    lines += ["## The paper's tables", ""]
    lines += table1(runs) + [""] + table2(runs) + [""] + table3(runs) + [""]
    lines += ["## Protocol by protocol (same predictions)", ""] + protocol_table(runs)
    if figure_name:
        lines += ["## Figure", "", f"![closed and open headline metric per protocol]({figure_name})", ""]
    return "\n".join(lines).rstrip() + "\n"
