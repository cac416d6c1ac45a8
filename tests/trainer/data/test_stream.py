"""The rank's stream on real shards: O(1) resume and the same batches for any number of workers."""

from __future__ import annotations

import itertools

import pytest
import torch

from omnivmed.trainer.data.chat import ChatEncoder
from omnivmed.trainer.data.order import Partition
from omnivmed.trainer.data.sources import load_index
from omnivmed.trainer.data.stream import DataStream, Position, filter_index
from omnivmed.trainer.data.visual import VisualSpec

SPEC = VisualSpec(8, (0.5,) * 3, (0.5,) * 3, 4, 32 * 32, 4 * 32 * 32, True, 0.1)


@pytest.fixture(scope="module")
def stream_factory(embedded_manifest, tiny_model):
    index = load_index([embedded_manifest])
    chat = ChatEncoder(tiny_model.tokenizer, 512)

    def make(rank=0, world=1, workers=0, kinds=None):
        return DataStream(
            filter_index(index, kinds), chat, SPEC, batch_size=3, partition=Partition(rank, world), seed=1,
            num_workers=workers, pad_id=tiny_model.tokenizer.pad_token_id,
        )  # fmt: skip

    return make


def ids(stream, start: Position, n: int) -> list[list[str]]:
    return [b.sample_ids for b, _ in itertools.islice(stream.batches(start), n)]


def test_resume_from_a_position_continues_the_same_stream(stream_factory):
    stream = stream_factory(kinds=("volume", "video"))  # 16 train rows: 5 batches per epoch, crosses epochs
    assert stream.steps_per_epoch == 5
    uninterrupted = ids(stream, Position(), 8)
    positions = [p for _, p in itertools.islice(stream.batches(Position()), 8)]
    assert positions[4] == Position(0, 15) and positions[5] == Position(1, 3)
    assert ids(stream, positions[2], 5) == uninterrupted[3:8]
    assert ids(stream, positions[4], 3) == uninterrupted[5:8]


def test_workers_do_not_change_the_stream(stream_factory):
    alone = [b for b, _ in itertools.islice(stream_factory(kinds=("volume", "video")).batches(Position()), 3)]
    pooled = [b for b, _ in itertools.islice(stream_factory(kinds=("volume", "video"), workers=2).batches(Position()), 3)]
    for a, b in zip(alone, pooled):
        assert a.sample_ids == b.sample_ids
        assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.patches, b.patches)


def test_ranks_see_disjoint_samples(stream_factory):
    seen = [set(itertools.chain(*ids(stream_factory(rank=r, world=2), Position(), 20))) for r in range(2)]
    assert len(seen[0]) == len(seen[1]) == 60 and not seen[0] & seen[1]


def test_batches_pack_visual_inputs_with_offsets(stream_factory, tiny_model):
    batch, _ = next(stream_factory(kinds=("volume", "video")).batches(Position()))
    lengths = (batch.cu_seqlens[1:] - batch.cu_seqlens[:-1]).tolist()
    assert sum(lengths) == batch.patches.shape[0] == batch.positions.shape[0]
    image_pad, video_pad = tiny_model.pad_ids
    pads = int(((batch.input_ids == image_pad) | (batch.input_ids == video_pad)).sum())
    assert pads == int(batch.visual_keep.sum())
    assert batch.stats["visual_kept"] and all(
        batch.stats["visual_kept"][k] <= batch.stats["visual_before"][k] for k in batch.stats["visual_kept"]
    )
