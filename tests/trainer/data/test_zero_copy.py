"""Rows read in place from the mapped record batches give the batches the Sample path gave, tensor for tensor.

The reference is the path the loader used before: every row through pyarrow's ``to_pylist`` into
``Sample.from_row``, then ``make_example`` and the collation, over the stream's own seeded order.
"""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pyarrow as pa
import pytest
import torch

from omnivmed.data.schema import SCHEMA, Sample
from omnivmed.data.shards import open_shard
from omnivmed.trainer.data.batch import collate, collate_packed, make_example, packs
from omnivmed.trainer.data.chat import ChatEncoder
from omnivmed.trainer.data.order import Partition
from omnivmed.trainer.data.rows import BatchColumns
from omnivmed.trainer.data.sources import ShardReader, TrainDataError, load_index
from omnivmed.trainer.data.stream import DataStream, Position, filter_index
from omnivmed.trainer.data.visual import VisualSpec, decode_frame

SPEC = VisualSpec(8, (0.5,) * 3, (0.5,) * 3, 4, 32 * 32, 4 * 32 * 32, True, 0.1)


@pytest.fixture(scope="module")
def index(embedded_manifest):
    return load_index([embedded_manifest])


@pytest.fixture(scope="module")
def reference_samples(index):
    """Every indexed row as the old path built it: the whole row through ``to_pylist`` into a Sample."""
    rows = {n: open_shard(path).to_pylist() for n, path in enumerate(index.shards)}
    return [Sample.from_row(rows[int(s)][int(r)]) for s, r in zip(index.shard_of, index.row_of)]


def make_stream(index, tiny_model, *, kinds=None, pack=False, workers=0, budget=None):
    return DataStream(
        filter_index(index, kinds), ChatEncoder(tiny_model.tokenizer, 512), SPEC, batch_size=3,
        partition=Partition(0, 1), seed=1, num_workers=workers, pad_id=tiny_model.tokenizer.pad_token_id,
        pack=pack, token_budget=budget,
    )  # fmt: skip


def reference_batches(stream, samples_of_index, tiny_model, epochs: int):
    """The old path over the stream's order: Samples -> make_example -> collate (padded) / packs (packed)."""
    chat, patch_dim = stream.dataset.chat, stream.patch_dim
    for epoch in range(epochs):
        order = stream.rank_order(epoch)
        usable = len(order) // stream.batch_size * stream.batch_size
        examples = (make_example(samples_of_index[i], chat, SPEC) for i in order[:usable])
        if stream.pack:
            yield from (collate_packed(p, patch_dim) for p in packs(examples, stream.token_budget, stream.batch_size))
        else:
            chunks = iter(lambda: list(itertools.islice(examples, stream.batch_size)), [])
            yield from (collate(c, tiny_model.tokenizer.pad_token_id, patch_dim) for c in chunks)


def assert_same_batch(new, old):
    assert vars(new).keys() == vars(old).keys()
    for name, value in vars(old).items():
        if isinstance(value, torch.Tensor):
            other = getattr(new, name)
            assert other.dtype == value.dtype and torch.equal(other, value), name
        else:
            assert getattr(new, name) == value, name


def filtered_samples(stream, index, reference_samples):
    """The reference Samples in the filtered index's numbering."""
    where = {(int(s), int(r)): n for n, (s, r) in enumerate(zip(index.shard_of, index.row_of))}
    sub = stream.dataset.index
    return [reference_samples[where[(int(s), int(r))]] for s, r in zip(sub.shard_of, sub.row_of)]


def test_a_row_view_holds_what_the_sample_holds(index, reference_samples):
    reader = ShardReader(index.shards)
    for n, sample in enumerate(reference_samples):
        row = reader.row(int(index.shard_of[n]), int(index.row_of[n]))
        assert (row.id, row.source, row.visual_kind) == (sample.id, sample.source, sample.visual_kind)
        assert all(isinstance(f, memoryview) for f in row.frames)  # views of the mapped shard, not copies
        assert [bytes(f) for f in row.frames] == list(sample.frames)
        assert row.conversations == sample.conversations


@pytest.mark.parametrize("kinds", [None, ("volume", "video")], ids=["every-kind", "volume-video"])
def test_padded_batches_equal_the_sample_path(index, reference_samples, tiny_model, kinds):
    stream = make_stream(index, tiny_model, kinds=kinds)
    samples = filtered_samples(stream, index, reference_samples)
    count = 7 if kinds is None else stream.steps_per_epoch + 2  # volume/video: past the epoch boundary
    new = [b for b, _ in itertools.islice(stream.batches(Position()), count)]
    old = list(itertools.islice(reference_batches(stream, samples, tiny_model, epochs=2), count))
    if kinds:
        assert {k for b in new for k in b.stats["visual_kept"]} == set(kinds)
    for a, b in zip(new, old, strict=True):
        assert_same_batch(a, b)


def test_packed_batches_equal_the_sample_path_with_workers(index, reference_samples, tiny_model):
    """A binding token budget (packs of 1 to 3 samples), two workers handing chunks back in order."""
    stream = make_stream(index, tiny_model, kinds=("volume", "video"), pack=True, workers=2, budget=400)
    samples = filtered_samples(stream, index, reference_samples)
    pairs = list(itertools.islice(stream.batches(Position()), 8))
    old = list(itertools.islice(reference_batches(stream, samples, tiny_model, epochs=3), 8))
    assert {len(b.sample_ids) for b, _ in pairs} != {3}  # the budget binds
    for (a, _), b in zip(pairs, old, strict=True):
        assert_same_batch(a, b)
    resumed = [b for b, _ in itertools.islice(stream.batches(pairs[3][1]), 4)]
    for a, b in zip(resumed, old[4:], strict=True):
        assert_same_batch(a, b)


def test_a_sliced_record_batch_reads_at_its_offsets(index, reference_samples):
    table = open_shard(index.shards[0])
    batch = table.to_batches()[0]
    part = batch.slice(2, 5)
    columns = BatchColumns(part)
    for i, row in enumerate(part.to_pylist()):
        view = columns.row(i)
        sample = Sample.from_row(row)
        assert [bytes(f) for f in view.frames] == list(sample.frames) and view.conversations == sample.conversations
        assert view.id == sample.id
    with pytest.raises(IndexError):
        columns.row(5)


@pytest.mark.parametrize(
    "frames_type", [pa.binary(), pa.dictionary(pa.int32(), pa.binary())], ids=["plain", "dictionary"]
)
def test_both_frame_layouts_read_the_same_bytes(index, frames_type):
    """Frames as list<binary> (schema 1) and dictionary-encoded (each distinct frame once a batch, schema 2)."""
    rows = open_shard(index.shards[0]).to_pylist()[:6]
    rows.append({**rows[0], "frames": rows[0]["frames"] * 3})  # a repeated frame: one dictionary entry
    schema = SCHEMA.set(SCHEMA.get_field_index("frames"), pa.field("frames", pa.list_(frames_type), nullable=False))
    batch = pa.RecordBatch.from_pylist(rows, schema=schema)
    columns = BatchColumns(batch.slice(1))
    for i, row in enumerate(rows[1:]):
        view = columns.row(i)
        assert [bytes(f) for f in view.frames] == row["frames"] and view.id == row["id"]


def test_a_null_turn_is_refused_naming_the_column():
    batch = pa.RecordBatch.from_pylist([_first_row_with_null_content()], schema=SCHEMA)
    with pytest.raises(ValueError, match="column conversations.content has 1 null values"):
        BatchColumns(batch)


def _first_row_with_null_content() -> dict:
    return {
        "id": "x", "source": "s", "split": "train", "task": "t", "modality": "m", "visual_kind": "none",
        "frame_format": None, "frames": [], "visual_meta": None,
        "conversations": [{"role": "user", "content": None}], "answer_type": None,
        "provenance": {"raw_paths": [], "record_id": "r", "license": "l", "source_url": "u", "fields": []},
    }  # fmt: skip


def test_a_row_past_the_shard_is_named(index):
    reader = ShardReader(index.shards)
    with pytest.raises(TrainDataError, match=r"\.arrow: row 99999 outside its \d+ rows"):
        reader.row(0, 99999)


def _decode_before(data: bytes) -> np.ndarray:
    """decode_frame as it was written before the single-pass division (the reference)."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    scale = 65535.0 if image.dtype == np.uint16 else 255.0
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    else:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return image.astype(np.float32) / scale


def test_decoding_equals_the_cast_then_divide_it_replaces(reference_samples):
    rng = np.random.default_rng(0)
    frames = [s.frames[0] for s in reference_samples[::97] if s.frames]
    frames += [
        cv2.imencode(".png", rng.integers(0, 65535, (37, 41), dtype=np.uint16))[1].tobytes(),
        cv2.imencode(".png", rng.integers(0, 255, (37, 41, 4), dtype=np.uint8))[1].tobytes(),
        cv2.imencode(".png", rng.integers(0, 255, (37, 41), dtype=np.uint8))[1].tobytes(),
        cv2.imencode(".jpg", rng.integers(0, 255, (37, 41, 3), dtype=np.uint8))[1].tobytes(),
    ]
    for data in frames:
        new, old = decode_frame(memoryview(data)), _decode_before(data)
        assert new.dtype == old.dtype == np.float32 and np.array_equal(new, old)
