"""The numbers behind a data card: counts and cross-counts, tokens and frames per sample.

Read in one pass over the shards, batch by batch (omnivmed.data.batches),
decoding only the label columns, the conversations and the frame-list
offsets (never the frame bytes); distributions are kept as value -> count tables, so memory does not
grow with the number of samples. Written as ``stats.json``.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.compute as pc

from omnivmed.data.batches import stream_batches
from omnivmed.data.manifest import COUNT_AXES, Manifest, shard_path
from omnivmed.data.token_counts import conversation_texts, count_tokens

CROSS = (("source", "split"), ("task", "modality"), ("visual_kind", "modality"), ("source", "task"))
WORD_PIECES = re.compile(r"\w+|[^\w\s]")
WORD_PIECES_NAME = r"word pieces (regex \w+|[^\w\s], no tokenizer given)"
_LABELS = ("source", "split", "task", "modality", "visual_kind")


@dataclass
class CardStats:
    name: str
    rows: int
    counts: dict[str, dict[str, int]]
    cross: dict[str, Counter] = field(default_factory=dict)  # "source,split" -> Counter of (a, b)
    tokens: Counter = field(default_factory=Counter)  # tokens per sample (all turns) -> samples
    tokens_counted_with: str = WORD_PIECES_NAME
    frames: dict[str, Counter] = field(default_factory=dict)  # visual kind -> Counter of frames per sample

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "rows": self.rows,
            "counts": self.counts,
            "by": {
                key: [dict(zip(key.split(","), pair), samples=n) for pair, n in sorted(counter.items())]
                for key, counter in self.cross.items()
            },
            "tokens_per_sample": {"counted_with": self.tokens_counted_with, **summary(self.tokens)},
            "frames_per_sample": {kind: summary(c) for kind, c in sorted(self.frames.items())},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def summary(values: Counter) -> dict:
    """Mean, median, 95th percentile, min, max and the value -> count table of a distribution."""
    total = sum(values.values())
    if not total:
        return {"samples": 0}
    ordered = sorted(values.items())
    return {
        "samples": total,
        "mean": round(sum(v * n for v, n in ordered) / total, 3),
        "median": _quantile(ordered, total, 0.5),
        "p95": _quantile(ordered, total, 0.95),
        "min": ordered[0][0],
        "max": ordered[-1][0],
        "values": {str(v): n for v, n in ordered},
    }


def _quantile(ordered: list[tuple[int, int]], total: int, q: float) -> int:
    rank, seen = q * (total - 1), 0
    for value, n in ordered:
        seen += n
        if seen > rank:
            return value
    return ordered[-1][0]


def collect_stats(manifest_path: Path, manifest: Manifest, tokenizer=None) -> CardStats:
    """``tokenizer``: a ``tokenizers.Tokenizer`` or the name of an offline tokenizer (``qwen2.5``, as a
    recipe's token filter names it) to count real tokens; else word pieces (named in the output)."""
    stats = CardStats(manifest.name, manifest.rows, {axis: dict(manifest.counts.get(axis, {})) for axis in COUNT_AXES})
    stats.cross = {",".join(pair): Counter() for pair in CROSS}
    if isinstance(tokenizer, str):
        stats.tokens_counted_with = f"{tokenizer} tokenizer"
    elif tokenizer is not None:
        stats.tokens_counted_with = "tokenizer given to the data card"
    for shard in manifest.shards:
        for batch in stream_batches(shard_path(manifest_path, shard)):
            columns = {name: batch.column(name).to_pylist() for name in _LABELS}
            texts = conversation_texts(batch.column("conversations"))
            for pair in CROSS:
                stats.cross[",".join(pair)].update(zip(columns[pair[0]], columns[pair[1]]))
            stats.tokens.update(_count_tokens(texts, tokenizer))
            for kind, n in zip(columns["visual_kind"], pc.list_value_length(batch.column("frames")).to_pylist()):
                stats.frames.setdefault(kind, Counter())[n] += 1
    return stats


def _count_tokens(texts: list[str], tokenizer) -> list[int]:
    if tokenizer is None:
        return [len(WORD_PIECES.findall(text)) for text in texts]
    if isinstance(tokenizer, str):
        return count_tokens(texts, tokenizer).tolist()
    return [len(e.ids) for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
