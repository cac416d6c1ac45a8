"""One training example per Sample, and the collation of examples into a micro-batch.

Two text layouts for the LLM, one visual layout:

- packed (training's default, :func:`collate_packed`): the examples' tokens
  concatenated into one (1, total) row with no padding, position ids that
  restart at 0 for each example, and the examples' offsets (``cu_seqlens_text``)
  from which the model builds its block-diagonal causal attention; the first
  label of each example is IGNORE, so no example predicts the next one's start.
  :func:`packs` groups an ordered stream of examples greedily under a token
  budget and a sample count.
- padded (:func:`collate`): a right-padded (batch, length) tensor and its mask.

The visual patches of every input of the micro-batch are packed into one
sequence with ``cu_seqlens`` offsets for the varlen vision encoder. When the
length limit cut some pad tokens off, ``visual_keep`` drops their features.

What does not fit (:func:`make_example`): a sample whose kept visual tokens
exceed ``max_visual_tokens``, or do not leave room for its text under the
length limit, is re-encoded with fewer frames (evenly spread, pruned again)
and then, if still over, with fewer pixels a frame, until it fits; it is
counted as capped. Only a text longer than the limit on its own is cut (and
counted as cut). No sample is skipped.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Iterable, Iterator

import torch

from omnivmed.data.schema import Sample
from omnivmed.trainer.data.chat import IGNORE, ChatEncoder, Encoded
from omnivmed.trainer.data.visual import PRUNED_KINDS, VisualInput, VisualSpec, visual_inputs


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
    capped: bool = False  # visual tokens reduced to fit max_visual_tokens / the length limit


def visual_tokens(visuals: list[VisualInput]) -> int:
    return sum(len(v.positions) for v in visuals)


def _encode(chat: ChatEncoder, sample: Sample, visuals: list[VisualInput], *, text_only: bool = False) -> Encoded:
    return chat.encode(sample.conversations, [(sample.visual_kind, 0 if text_only else len(v.positions)) for v in visuals])


def fit_visuals(sample: Sample, spec: VisualSpec, budget: int, visuals: list[VisualInput]) -> list[VisualInput]:
    """``visuals`` re-encoded to at most ``budget`` kept tokens (at least one patch an input remains).

    A volume or clip first loses frames: the frame count drops (evenly spread over the whole input, as
    ``max_frames`` picks them) and pruning runs again on the new neighbours. Then, for any kind, the pixels a
    frame shrink (aspect kept), down to one patch."""
    budget = max(1, budget)
    count = visual_tokens(visuals)
    kind = sample.visual_kind
    if kind in PRUNED_KINDS:
        frames = visuals[0].frames
        while count > budget and frames > 1:
            frames = max(1, min(frames - 1, frames * budget // count))
            visuals = visual_inputs(sample.frames, kind, replace(spec, max_frames=frames))
            count = visual_tokens(visuals)
        spec = replace(spec, max_frames=frames)
    one_patch = spec.patch_size**2
    pixels = max(v.grid[0] * v.grid[1] for v in visuals) * one_patch
    while count > budget and pixels > one_patch:
        pixels = max(one_patch, min(pixels - one_patch, int(pixels * budget / count)))
        visuals = visual_inputs(sample.frames, kind, replace(spec, max_pixels=pixels))
        count = visual_tokens(visuals)
    return visuals


def make_example(sample: Sample, chat: ChatEncoder, spec: VisualSpec, max_visual_tokens: int | None = None) -> Example:
    """``sample``: a Sample or a RowView read in place from a shard (rows.py); only its id, source, visual_kind,
    frames and conversations are read. ``max_visual_tokens``: None leaves the visual tokens as pruning left them
    (they still shrink to leave room for the text under the length limit)."""
    visuals = visual_inputs(sample.frames, sample.visual_kind, spec)
    encoded = _encode(chat, sample, visuals)
    capped = False
    count = visual_tokens(visuals)
    over_cap = max_visual_tokens is not None and count > max_visual_tokens
    if visuals and (over_cap or encoded.cut):
        room = chat.max_length - len(_encode(chat, sample, visuals, text_only=True).input_ids)
        budget = min(room, max_visual_tokens if max_visual_tokens is not None else count)
        if count > budget:
            visuals = fit_visuals(sample, spec, budget, visuals)
            encoded = _encode(chat, sample, visuals)
            capped = True
    return Example(
        sample.id, sample.source, sample.visual_kind, encoded.input_ids, encoded.labels, visuals,
        encoded.cut, encoded.supervised, encoded.visual_in_text, capped,
    )  # fmt: skip


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, S); packed: (1, total)
    attention_mask: torch.Tensor | None  # (B, S); packed: None (the model builds the block-diagonal mask)
    labels: torch.Tensor  # like input_ids, IGNORE where not supervised
    patches: torch.Tensor  # (L, 3 * p * p)
    positions: torch.Tensor  # (L, 3)
    cu_seqlens: torch.Tensor  # (inputs + 1,) int32
    grids: torch.Tensor  # (inputs, 2)
    visual_keep: torch.Tensor  # (L,) bool: features that have a pad token in the text
    sample_ids: list[str]
    stats: dict = field(default_factory=dict)
    position_ids: torch.Tensor | None = None  # packed: (1, total), restarting at 0 for each example
    cu_seqlens_text: torch.Tensor | None = None  # packed: (examples + 1,) int32 offsets into the row
    max_seqlen_text: int = 0  # packed: the longest example (flash-attn's max_seqlen)

    @property
    def packed(self) -> bool:
        return self.position_ids is not None

    def to(self, device) -> "Batch":
        moved = {
            k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in vars(self).items()
        }
        return Batch(**moved)


def packs(examples: Iterable[Example], token_budget: int, max_samples: int) -> Iterator[list[Example]]:
    """Consecutive examples, in order, grouped greedily: a pack closes before an example that would take it over
    ``token_budget`` tokens, or at ``max_samples`` examples. An example longer than the budget goes alone."""
    pack: list[Example] = []
    tokens = 0
    for example in examples:
        n = len(example.input_ids)
        if pack and tokens + n > token_budget:
            yield pack
            pack, tokens = [], 0
        pack.append(example)
        tokens += n
        if len(pack) >= max_samples:
            yield pack
            pack, tokens = [], 0
    if pack:
        yield pack


def _visual_part(examples: list[Example], patch_dim: int) -> tuple[dict, Counter, Counter]:
    patches, positions, lengths, grids, keep = [], [], [], [], []
    kept, before = Counter(), Counter()
    for e in examples:
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
    part = dict(
        patches=torch.cat(patches) if patches else torch.zeros((0, patch_dim)),
        positions=torch.cat(positions) if positions else torch.zeros((0, 3), dtype=torch.long),
        cu_seqlens=offsets,
        grids=torch.tensor(grids, dtype=torch.long).view(-1, 2),
        visual_keep=torch.cat(keep) if keep else torch.zeros(0, dtype=torch.bool),
    )
    return part, kept, before


def _stats(examples: list[Example], tokens: int, supervised: int, padding: int, kept, before) -> dict:
    return {
        "samples": len(examples),
        "tokens": tokens,
        "padding": padding,
        "supervised": supervised,
        "cut": sum(e.cut for e in examples),
        "capped": sum(e.capped for e in examples),
        "unsupervised": sum(e.supervised == 0 for e in examples),
        "visual_kept": dict(kept),
        "visual_before": dict(before),
        "sources": dict(Counter(e.source for e in examples)),
    }


def collate(examples: list[Example], pad_id: int, patch_dim: int) -> Batch:
    """Padded: one right-padded row per example."""
    longest = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), longest), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), longest), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), longest), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    visual, kept, before = _visual_part(examples, patch_dim)
    tokens = int(mask.sum())
    stats = _stats(examples, tokens, int((labels != IGNORE).sum()), mask.numel() - tokens, kept, before)
    return Batch(
        input_ids=ids, attention_mask=mask, labels=labels, **visual, sample_ids=[e.sample_id for e in examples],
        stats=stats,
    )  # fmt: skip


def collate_packed(examples: list[Example], patch_dim: int) -> Batch:
    """Packed: every example's tokens in one row, position ids restarting per example, no padding."""
    lengths = [len(e.input_ids) for e in examples]
    ids = torch.tensor([t for e in examples for t in e.input_ids], dtype=torch.long)
    labels = torch.tensor([t for e in examples for t in e.labels], dtype=torch.long)
    offsets = torch.zeros(len(examples) + 1, dtype=torch.int32)
    offsets[1:] = torch.cumsum(torch.tensor(lengths, dtype=torch.int32), 0)
    labels[offsets[:-1].long()] = IGNORE  # an example's first token is never a target (as in the padded layout)
    positions = torch.cat([torch.arange(n) for n in lengths])
    visual, kept, before = _visual_part(examples, patch_dim)
    stats = _stats(examples, len(ids), int((labels != IGNORE).sum()), 0, kept, before)
    return Batch(
        input_ids=ids[None], attention_mask=None, labels=labels[None], **visual,
        sample_ids=[e.sample_id for e in examples], stats=stats, position_ids=positions[None],
        cu_seqlens_text=offsets, max_seqlen_text=max(lengths),
    )  # fmt: skip
