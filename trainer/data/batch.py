"""One training example per Sample, and the collation of examples into a batch.

Text goes into a right-padded (batch, length) tensor for the LLM; the
visual patches of every input of the batch are packed into one sequence
with ``cu_seqlens`` offsets for the varlen vision encoder. When the length
limit cut some pad tokens off, ``visual_keep`` drops their features.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch

from omnivmed.data.schema import Sample
from omnivmed.trainer.data.chat import IGNORE, ChatEncoder
from omnivmed.trainer.data.visual import VisualInput, VisualSpec, visual_inputs


@dataclass
class Example:
    sample_id: str
    source: str
    kind: str
    input_ids: list[int]
    labels: list[int]
    visuals: list[VisualInput]
    cut: bool
    supervised: int
    visual_in_text: int


def make_example(sample: Sample, chat: ChatEncoder, spec: VisualSpec) -> Example:
    visuals = visual_inputs(sample.frames, sample.visual_kind, spec)
    encoded = chat.encode(sample.conversations, [(sample.visual_kind, len(v.positions)) for v in visuals])
    return Example(
        sample.id, sample.source, sample.visual_kind, encoded.input_ids, encoded.labels, visuals,
        encoded.cut, encoded.supervised, encoded.visual_in_text,
    )  # fmt: skip


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, S)
    attention_mask: torch.Tensor  # (B, S)
    labels: torch.Tensor  # (B, S), IGNORE where not supervised
    patches: torch.Tensor  # (L, 3 * p * p)
    positions: torch.Tensor  # (L, 3)
    cu_seqlens: torch.Tensor  # (inputs + 1,) int32
    grids: torch.Tensor  # (inputs, 2)
    visual_keep: torch.Tensor  # (L,) bool: features that have a pad token in the text
    sample_ids: list[str]
    stats: dict = field(default_factory=dict)

    def to(self, device) -> "Batch":
        moved = {
            k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in vars(self).items()
        }
        return Batch(**moved)


def collate(examples: list[Example], pad_id: int, patch_dim: int) -> Batch:
    longest = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), longest), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), longest), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), longest), dtype=torch.long)
    patches, positions, lengths, grids, keep = [], [], [], [], []
    kept, before = Counter(), Counter()
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
        in_text = e.visual_in_text
        for v in e.visuals:
            patches.append(v.patches)
            positions.append(v.positions)
            lengths.append(len(v.positions))
            grids.append(v.grid)
            kept[e.kind] += len(v.positions)
            before[e.kind] += v.tokens_before
            take = min(in_text, len(v.positions))
            keep.append(torch.arange(len(v.positions)) < take)
            in_text -= take
    offsets = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    offsets[1:] = torch.cumsum(torch.tensor(lengths, dtype=torch.int32), 0)
    stats = {
        "samples": len(examples),
        "tokens": int(mask.sum()),
        "supervised": int((labels != IGNORE).sum()),
        "cut": sum(e.cut for e in examples),
        "unsupervised": sum(e.supervised == 0 for e in examples),
        "visual_kept": dict(kept),
        "visual_before": dict(before),
        "sources": dict(Counter(e.source for e in examples)),
    }
    return Batch(
        input_ids=ids,
        attention_mask=mask,
        labels=labels,
        patches=torch.cat(patches) if patches else torch.zeros((0, patch_dim)),
        positions=torch.cat(positions) if positions else torch.zeros((0, 3), dtype=torch.long),
        cu_seqlens=offsets,
        grids=torch.tensor(grids, dtype=torch.long).view(-1, 2),
        visual_keep=torch.cat(keep) if keep else torch.zeros(0, dtype=torch.bool),
        sample_ids=[e.sample_id for e in examples],
        stats=stats,
    )

