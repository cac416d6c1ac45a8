"""Score matched predictions with several protocols, overall and broken down, and keep the results.

A score folder holds three JSON files, each keyed by benchmark first, so
scoring one benchmark after another into the same folder merges them:

* ``scores.json``: ``{benchmark: {protocol: {metric: value}}}`` on every question;
* ``breakdowns.json``: ``{benchmark: {protocol: {axis: {value: {"n": questions, "metrics": {...}}}}}}``
  along the answer type, the modality, the question type, and answer type x
  question type (M3D's per-type closed accuracy and open recall);
* ``matching.json``: ``{benchmark: {questions, predictions, matched, missing, unmatched, ...}}``.

A protocol is run on each group exactly as on the whole set (the same
function, fewer items); axes whose items all carry one empty value are left out.
Values that are not finite numbers (NaN, infinity) are written as null.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from omnivmed.data.fileio import atomic_write_bytes
from omnivmed.evaluation.errors import EvalInputError
from omnivmed.evaluation.items import EvalItem

SCORES_NAME = "scores.json"
BREAKDOWNS_NAME = "breakdowns.json"
MATCHING_NAME = "matching.json"
AXES: dict[str, Callable[[EvalItem], str]] = {
    "answer_type": lambda item: item.answer_type,
    "modality": lambda item: item.modality,
    "question_type": lambda item: item.question_type,
    "answer_type/question_type": lambda item: f"{item.answer_type}/{item.question_type}" if item.question_type else "",
}


@dataclass
class BenchmarkScores:
    overall: dict[str, dict]  # protocol -> metrics
    breakdowns: dict[str, dict]  # protocol -> axis -> value -> {"n", "metrics"}


def clean(value):
    """JSON-safe metric values: non-finite floats become None; nested dicts are cleaned too."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def groups(items: Sequence[EvalItem], axis: str) -> dict[str, list[EvalItem]]:
    key = AXES[axis]
    found: dict[str, list[EvalItem]] = {}
    for item in items:
        found.setdefault(key(item) or "unknown", []).append(item)
    if set(found) == {"unknown"}:
        return {}
    return dict(sorted(found.items()))


def score_items(items: Sequence[EvalItem], protocols: Sequence, candidates: Sequence[str] | None = None) -> BenchmarkScores:
    """Every protocol on all items and on each group of every axis."""
    if not items:
        raise EvalInputError("nothing to score: no questions")
    overall, breakdowns = {}, {}
    split = {axis: groups(items, axis) for axis in AXES}
    for protocol in protocols:
        overall[protocol.name] = clean(dict(protocol(items, candidates=candidates)))
        breakdowns[protocol.name] = {
            axis: {value: {"n": len(group), "metrics": clean(dict(protocol(group, candidates=candidates)))} for value, group in by_value.items()}
            for axis, by_value in split.items()
            if by_value
        }
    return BenchmarkScores(overall, breakdowns)


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise EvalInputError(f"{path}: not valid JSON ({err.msg}); remove it or pick another --out") from None
    if not isinstance(data, dict):
        raise EvalInputError(f"{path}: expected a JSON object")
    return data


def _merge(path: Path, benchmark: str, value) -> None:
    data = _read_json(path)
    data[benchmark] = value
    # Metrics keep the order their protocol gives them (no sort_keys): the report lists them so.
    atomic_write_bytes(path, (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode())


def save_scores(out: Path, benchmark: str, scores: BenchmarkScores, matching: Mapping | None = None) -> Path:
    """Merge one benchmark's results into ``out``'s three files; returns scores.json's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _merge(out / SCORES_NAME, benchmark, scores.overall)
    _merge(out / BREAKDOWNS_NAME, benchmark, scores.breakdowns)
    if matching is not None:
        _merge(out / MATCHING_NAME, benchmark, dict(matching))
    return out / SCORES_NAME


def load_scores(folder: Path) -> tuple[dict, dict, dict]:
    """(scores, breakdowns, matching) of a score folder; a folder without scores.json is bad input."""
    folder = Path(folder)
    if not (folder / SCORES_NAME).is_file():
        raise EvalInputError(f"{folder}: no {SCORES_NAME} (run `omnivmed-eval score` or `run` into it first)")
    return _read_json(folder / SCORES_NAME), _read_json(folder / BREAKDOWNS_NAME), _read_json(folder / MATCHING_NAME)


def format_value(value) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) >= 1:
            return str(int(value))
        return f"{value:.4f}" if abs(value) < 1 else f"{value:.2f}"
    return str(value)


def table_lines(scores: Mapping[str, Mapping[str, Mapping]]) -> list[str]:
    """A plain-text table: one row per benchmark, protocol and metric."""
    rows = [("benchmark", "protocol", "metric", "value")]
    for benchmark, by_protocol in scores.items():
        for protocol, metrics in by_protocol.items():
            for metric, value in metrics.items():
                rows.append((benchmark, protocol, metric, format_value(value)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) if i < 3 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines
