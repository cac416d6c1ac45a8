import datasets
import polars as pl
import pyarrow as pa
import pytest
from support.fresh_process import run_python
from support.samples import samples

from omnivmed.data.schema import SCHEMA, Sample
from omnivmed.data.shards import ShardSchemaError, ShardWriter, iter_samples, open_shard


def write(out, items, **kwargs):
    with ShardWriter(out, **kwargs) as writer:
        for s in items:
            writer.write(s)
        return writer.close()


def test_round_trip_keeps_every_sample_in_order(tmp_path):
    items = samples(10) + samples(3, split="test")
    shards = write(tmp_path, items)
    assert [s.path for s in shards] == ["test/test-00000.arrow", "train/train-00000.arrow"]
    read = [x for shard in shards for x in iter_samples(tmp_path / shard.path)]
    assert read == items[10:] + items[:10]


def test_size_rollover_preserves_global_order(tmp_path):
    items = samples(50, size=64)
    shards = write(tmp_path, items, max_shard_bytes=20_000, batch_rows=4)
    assert len(shards) > 3
    assert [s.path for s in shards] == sorted(s.path for s in shards)
    assert sum(s.rows for s in shards) == 50
    read = [x.id for shard in shards for x in iter_samples(tmp_path / shard.path)]
    assert read == [s.id for s in items]
    assert not list(tmp_path.rglob("*.tmp"))


def test_same_input_gives_identical_bytes_in_another_process(tmp_path):
    a = write(tmp_path / "a", samples(30), max_shard_bytes=30_000, batch_rows=5)
    # The same samples written by a fresh interpreter (another hash seed, another moment).
    run_python(
        "import sys; from pathlib import Path; from support.samples import samples; from omnivmed.data.shards import ShardWriter\n"
        "with ShardWriter(Path(sys.argv[1]), max_shard_bytes=30_000, batch_rows=5) as w:\n"
        "    [w.write(s) for s in samples(30)]\n"
        "    w.close()\n",
        str(tmp_path / "b"),
    )
    assert len(a) > 1
    assert sorted(p.relative_to(tmp_path / "b").as_posix() for p in (tmp_path / "b").rglob("*.arrow")) == [s.path for s in a]
    for shard in a:
        assert (tmp_path / "a" / shard.path).read_bytes() == (tmp_path / "b" / shard.path).read_bytes()


def test_failure_inside_writer_leaves_no_partial_shard(tmp_path):
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path, batch_rows=2) as writer:
            for s in samples(5):
                writer.write(s)
            raise RuntimeError("crash mid-build")
    assert not list(tmp_path.rglob("*.arrow"))
    assert not list(tmp_path.rglob("*.tmp"))


def test_shards_open_in_pyarrow_polars_and_datasets(tmp_path):
    items = samples(7)
    shard = write(tmp_path, items)[0]
    path = tmp_path / shard.path

    table = pa.ipc.open_stream(pa.memory_map(str(path))).read_all()
    assert table.schema.equals(SCHEMA, check_metadata=True)
    assert table.column("id").to_pylist() == [s.id for s in items]

    frame = pl.read_ipc_stream(path)
    assert frame.height == 7
    assert frame["frames"].to_list()[3] == [items[3].frames[0]]

    ds = datasets.Dataset.from_file(str(path))  # memory-mapped, no conversion
    assert ds.num_rows == 7
    assert Sample.from_row(ds[2]) == items[2]

    by_split = datasets.load_dataset("arrow", data_dir=str(tmp_path), cache_dir=str(tmp_path / "hf-cache"))
    assert by_split["train"].num_rows == 7


def test_open_shard_refuses_another_schema(tmp_path):
    other = pa.schema([pa.field("id", pa.string())])
    path = tmp_path / "foreign.arrow"
    with pa.ipc.new_stream(str(path), other) as w:
        w.write_table(pa.table({"id": ["x"]}, schema=other))
    with pytest.raises(ShardSchemaError, match="foreign.arrow"):
        open_shard(path)
