"""The data stream of one rank: (epoch, samples seen) -> batches, resumable in O(1).

The epoch's global order is recomputed from (seed, epoch), this rank takes
its equal share, and the DataLoader starts at the samples already seen. A
DataLoader hands whole batches (packed: chunks of ``batch_size`` samples) to
its workers in turn and returns them in order, so the stream is the same for
any number of workers. Each worker memory-maps the shards itself (the reader
is never pickled with its maps), reads rows in place from their record
batches (rows.py: frames as views of the mapped binary column) and decodes,
resizes, prunes and tokenises there.

Padded: ``batch_size`` examples a micro-batch. Packed (``pack=True``,
training's default): examples come one at a time, in the rank's order, and
:func:`packs` closes a micro-batch before an example that would take it over
``token_budget`` tokens, or at ``batch_size`` examples. Both layouts leave
out the same remainder of an epoch (fewer than ``batch_size`` samples), so
with a budget that never binds the packs hold exactly the padded layout's
batches. A pack depends only on where it starts, so resuming at (epoch, seen)
rebuilds the same packs.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from omnivmed.trainer.data.batch import Batch, collate, collate_packed, make_example, packs
from omnivmed.trainer.data.chat import ChatEncoder
from omnivmed.trainer.data.order import Partition, epoch_order
from omnivmed.trainer.data.sources import SampleIndex, ShardReader, TrainDataError
from omnivmed.trainer.data.visual import VisualSpec


@dataclass
class Position:
    """Where a rank's stream stands: the epoch and the samples of it this rank already trained on."""

    epoch: int = 0
    seen: int = 0


def filter_index(index: SampleIndex, visual_kinds=None, tasks=None) -> SampleIndex:
    keep = np.ones(len(index), dtype=bool)
    if visual_kinds is not None:
        keep &= np.isin(index.visual_kind, list(visual_kinds))
    if tasks is not None:
        keep &= np.isin(index.task, list(tasks))
    if not keep.any():
        raise TrainDataError(f"no rows with visual kinds {visual_kinds} and tasks {tasks} in the given shards")
    return index.select(keep)


class _Examples(Dataset):
    def __init__(self, index: SampleIndex, chat: ChatEncoder, spec: VisualSpec, max_visual_tokens: int | None = None):
        self.index, self.chat, self.spec, self.max_visual_tokens = index, chat, spec, max_visual_tokens
        self.reader = ShardReader(index.shards)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int):
        # The row is read in place from its record batch (rows.py): frames are views of the mapped shard.
        row = self.reader.row(int(self.index.shard_of[i]), int(self.index.row_of[i]))
        try:
            return make_example(row, self.chat, self.spec, self.max_visual_tokens)
        except ValueError as err:
            raise TrainDataError(f"{self.index.shards[self.index.shard_of[i]]}: sample {row.id}: {err}") from None


class DataStream:
    def __init__(
        self,
        index: SampleIndex,
        chat: ChatEncoder,
        spec: VisualSpec,
        *,
        batch_size: int,
        partition: Partition,
        seed: int,
        mix: dict[str, float] | None = None,
        num_workers: int = 0,
        pad_id: int,
        pack: bool = False,
        token_budget: int | None = None,
        max_visual_tokens: int | None = None,
    ):
        """``pack``: one packed row of at most ``token_budget`` tokens (default: the length limit) and
        ``batch_size`` samples a micro-batch; else ``batch_size`` padded rows. ``max_visual_tokens``: the
        per-sample cap (batch.make_example)."""
        self.dataset = _Examples(index, chat, spec, max_visual_tokens)
        self.batch_size, self.partition, self.seed = batch_size, partition, seed
        self.mix, self.num_workers, self.pad_id = mix or None, num_workers, pad_id
        self.pack = pack
        self.token_budget = token_budget or chat.max_length
        self.patch_dim = 3 * spec.patch_size**2
        # A set smaller than one global batch (the embedded stage-1 captions) is cycled to fill one.
        self.epoch_length = max(len(index), batch_size * partition.world_size) if len(index) else 0
        try:
            steps = self.steps_per_epoch
        except ValueError as err:  # a --mix source with no rows in this stage's data
            raise TrainDataError(f"--mix: {err}") from None
        if steps < 1:
            raise TrainDataError(f"{len(index)} rows: nothing to train on for this stage (split and stage filters)")

    def rank_order(self, epoch: int) -> np.ndarray:
        return self.partition.take(
            epoch_order(self.dataset.index.source, self.seed, epoch, self.mix, length=self.epoch_length)
        )

    @property
    def steps_per_epoch(self) -> int:
        return len(self.rank_order(0)) // self.batch_size

    def batches(self, start: Position) -> Iterator[tuple[Batch, Position]]:
        """Endless batches from ``start``; each comes with the position after it."""
        if self.pack:
            yield from self._packed_batches(start)
            return
        epoch, seen = start.epoch, start.seen
        while True:
            order = self.rank_order(epoch)
            usable = (len(order) // self.batch_size) * self.batch_size
            loader = DataLoader(
                self.dataset,
                batch_size=self.batch_size,
                sampler=order[seen:usable].tolist(),
                num_workers=self.num_workers,
                collate_fn=self._collate,
                generator=torch.Generator().manual_seed(0),
            )
            for batch in loader:
                seen += len(batch.sample_ids)
                yield batch, Position(epoch, seen)
            epoch, seen = epoch + 1, 0

    def _packed_batches(self, start: Position) -> Iterator[tuple[Batch, Position]]:
        epoch, seen = start.epoch, start.seen
        while True:
            order = self.rank_order(epoch)
            usable = (len(order) // self.batch_size) * self.batch_size  # the samples the padded layout would use
            # Workers make examples a chunk of the order at a time (one hand-off per chunk, not per sample);
            # the rank's process packs them in order, so the packs are the same for any number of workers.
            loader = DataLoader(
                self.dataset,
                batch_size=self.batch_size,
                sampler=order[seen:usable].tolist(),
                num_workers=self.num_workers,
                collate_fn=_as_list,
                generator=torch.Generator().manual_seed(0),
            )
            for pack in packs(itertools.chain.from_iterable(loader), self.token_budget, self.batch_size):
                seen += len(pack)
                yield collate_packed(pack, self.patch_dim), Position(epoch, seen)
            epoch, seen = epoch + 1, 0

    def _collate(self, examples):
        return collate(examples, self.pad_id, self.patch_dim)


def _as_list(examples):
    """The DataLoader's collate for packing: the chunk's Examples as they are (the rank's process packs them)."""
    return examples
