"""Data-card figures as PNG: modalities and tasks (like the paper's Figure 2), tokens and frames per sample.

Drawn with matplotlib's object API on the Agg canvas (no pyplot, no display,
no global state); PNGs carry no software/date metadata, so the same
statistics give the same bytes.
"""

from __future__ import annotations

import io
import math
from collections import Counter
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from omnivmed.data.card_stats import CardStats
from omnivmed.data.fileio import write_if_changed

FIGURES = {
    "modalities_tasks": "modalities_tasks.png",
    "token_lengths": "token_lengths.png",
    "frames_per_sample": "frames_per_sample.png",
}
_DPI = 110


def write_figures(stats: CardStats, folder: Path) -> dict[str, Path]:
    """Write the three figures into ``folder``; returns name -> path."""
    folder = Path(folder)
    drawn = {
        "modalities_tasks": modalities_tasks(stats),
        "token_lengths": token_lengths(stats),
        "frames_per_sample": frames_per_sample(stats),
    }
    paths = {}
    for name, figure in drawn.items():
        paths[name] = folder / FIGURES[name]
        write_if_changed(paths[name], _png(figure))
    return paths


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI, metadata={"Software": None})
    return buffer.getvalue()


def modalities_tasks(stats: CardStats) -> Figure:
    """Two rings: samples by imaging modality and by task, with counts and shares in the legends."""
    figure = Figure(figsize=(12, 5.2))
    for ax, axis, title in zip(figure.subplots(1, 2), ("modality", "task"), ("Modalities", "Tasks")):
        values = sorted(stats.counts.get(axis, {}).items(), key=lambda kv: (-kv[1], kv[0]))
        total = sum(n for _, n in values) or 1
        colours = [_colour(i) for i in range(len(values))]
        ax.pie(
            [n for _, n in values] or [1],
            colors=colours or ["#dddddd"],
            startangle=90,
            counterclock=False,
            wedgeprops={"width": 0.38, "edgecolor": "white"},
        )
        ax.text(0, 0, f"{total:,}\nsamples", ha="center", va="center", fontsize=11)
        ax.set_title(f"{title} ({len(values)})")
        ax.legend(
            [f"{k.replace('_', ' ')}: {n:,} ({100 * n / total:.1f}%)" for k, n in values],
            loc="center left",
            bbox_to_anchor=(0.95, 0.5),
            fontsize=8,
            frameon=False,
        )
    figure.suptitle(f"{stats.name}: samples by modality and task")
    figure.subplots_adjust(left=0.02, right=0.8, wspace=0.75)
    return figure


def token_lengths(stats: CardStats) -> Figure:
    figure = Figure(figsize=(7, 4))
    ax = figure.subplots()
    values, weights = _unzip(stats.tokens)
    if values:
        ax.hist(values, weights=weights, bins=integer_bins(values), color=_colour(0))
        _log_if_spread(ax, weights)
    ax.set_xlabel(f"tokens per sample ({stats.tokens_counted_with})", fontsize=8)
    ax.set_ylabel("samples")
    ax.set_title("Conversation length")
    figure.tight_layout()
    return figure


def frames_per_sample(stats: CardStats) -> Figure:
    """One bar group per visual kind: how many frames (images, slices, video frames) a sample holds."""
    figure = Figure(figsize=(7, 4))
    ax = figure.subplots()
    for i, (kind, counter) in enumerate(sorted(stats.frames.items())):
        values, weights = _unzip(counter)
        ax.bar([v + 0.18 * i for v in values], weights, width=0.18 if len(stats.frames) > 1 else 0.8, label=kind, color=_colour(i))
    _log_if_spread(ax, [n for counter in stats.frames.values() for n in counter.values()])
    ax.set_xlabel("frames per sample")
    ax.set_ylabel("samples" + (" (log scale)" if ax.get_yscale() == "log" else ""))
    ax.set_title("Frames per sample by visual kind")
    if stats.frames:
        ax.legend(fontsize=8, frameon=False)
    figure.tight_layout()
    return figure


MAX_BINS = 40
LOG_SPREAD = 50  # counts that differ by this factor or more go on a log axis


def integer_bins(values: list[int], max_bins: int = MAX_BINS) -> list[float]:
    """Bin edges for integer data: every bin spans the same whole number of integers (no zig-zag).

    Edges sit on half-integers, so each integer falls inside one bin; the width
    is the smallest whole number that keeps the bins at ``max_bins`` or fewer.
    """
    lo, hi = min(values), max(values)
    width = max(1, math.ceil((hi - lo + 1) / max_bins))
    count = math.ceil((hi - lo + 1) / width)
    return [lo - 0.5 + i * width for i in range(count + 1)]


def _log_if_spread(ax, counts: list[int]) -> None:
    """A log count axis when the largest and smallest non-zero counts differ by orders of magnitude."""
    positive = [n for n in counts if n > 0]
    if positive and max(positive) >= LOG_SPREAD * min(positive):
        ax.set_yscale("log")


def _unzip(counter: Counter) -> tuple[list[int], list[int]]:
    items = sorted(counter.items())
    return [v for v, _ in items], [n for _, n in items]


def _colour(i: int) -> str:
    palette = (
        "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
        "#9c755f", "#bab0ac", "#1f77b4", "#aec7e8", "#ffbb78", "#98df8a", "#c5b0d5", "#c49c94",
    )
    return palette[i % len(palette)]
