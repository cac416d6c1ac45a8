"""Frames shared across splits (``--frames shared``): written once, read back as the same rows by every reader."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
from support.samples import jpeg, samples

from omnivmed.data.batches import stream_batches
from omnivmed.data.combine import combine_manifests
from omnivmed.data.frame_table import FRAME_TABLE_DIR, REFS_FIELD
from omnivmed.data.lookup import find_sample
from omnivmed.data.manifest import SHARED_FRAMES_FORMAT, Manifest, verify_manifest
from omnivmed.data.output import OutputWriter
from omnivmed.data.schema import SCHEMA, Provenance, Turn, make_sample
from omnivmed.data.shards import ShardSchemaError, iter_samples, map_shard, open_shard


SIZE = 128  # frames of about 16 KB: what is stored dominates the files' own overhead


def _overlapping_splits():
    """Train and test asking about the same images (as VQA-RAD's test set does), plus some of test's own."""
    test = [
        make_sample(
            source="synthetic", split="test", task="vqa", modality="x_ray", visual_kind="image", frames=[jpeg(i, SIZE)],
            frame_format="jpeg", conversations=[Turn("user", f"<image>\nIs {i} normal?"), Turn("assistant", "yes")],
            answer_type="closed", provenance=Provenance((f"img{i}.jpg",), f"t{i}", "CC0-1.0", "https://example.org"),
        )
        for i in range(8)
    ]  # fmt: skip
    return samples(12, size=SIZE) + test + samples(3, split="validation", size=SIZE)


def _write(out: Path, items, **kwargs) -> Manifest:
    with OutputWriter(out, **kwargs) as writer:
        for sample in items:
            writer.write(sample)
        return writer.finish(Manifest(name="synthetic"))


def _rows(out: Path, manifest: Manifest) -> list[dict]:
    return [row for shard in manifest.shards for row in open_shard(out / shard.path).to_pylist()]


def test_a_frame_in_several_splits_is_stored_once(tmp_path):
    items = _overlapping_splits()
    distinct = {f for s in items for f in s.frames}
    shared = _write(tmp_path / "shared", items, shared_frames=True)
    per_shard = _write(tmp_path / "per_shard", items)
    assert [f.path for f in shared.frame_table] == [f"{FRAME_TABLE_DIR}/frames-00000.arrow"]
    assert shared.frame_table[0].frames == len(distinct) == 12
    assert per_shard.frame_table == []

    def disk(folder: Path) -> int:
        return sum(p.stat().st_size for p in folder.rglob("*.arrow"))

    distinct_bytes = sum(map(len, distinct))
    assert disk(tmp_path / "shared") < 1.3 * distinct_bytes < disk(tmp_path / "per_shard")
    assert verify_manifest(tmp_path / "shared" / "manifest.json") == []


def test_every_reader_gives_the_rows_of_self_contained_shards(tmp_path):
    items = _overlapping_splits()
    shared = _write(tmp_path / "shared", items, shared_frames=True)
    per_shard = _write(tmp_path / "per_shard", items)
    expected = _rows(tmp_path / "per_shard", per_shard)
    assert [s.path for s in shared.shards] == [s.path for s in per_shard.shards]
    assert _rows(tmp_path / "shared", shared) == expected
    streamed = [r for s in shared.shards for b in stream_batches(tmp_path / "shared" / s.path) for r in b.to_pylist()]
    assert streamed == expected
    assert [x for s in shared.shards for x in iter_samples(tmp_path / "shared" / s.path)] == [
        x for s in per_shard.shards for x in iter_samples(tmp_path / "per_shard" / s.path)
    ]
    assert open_shard(tmp_path / "shared" / shared.shards[0].path).schema.equals(SCHEMA)
    found = find_sample(tmp_path / "shared" / "manifest.json", items[15].id)
    assert found.row == items[15].to_row()


def test_plain_pyarrow_and_polars_see_the_refs(tmp_path):
    shared = _write(tmp_path, _overlapping_splits(), shared_frames=True)
    test_shard = next(s for s in shared.shards if s.split == "test")
    table = pa.ipc.open_stream(pa.memory_map(str(tmp_path / test_shard.path))).read_all()
    assert table.schema.field("frame_refs") == REFS_FIELD and "frames" not in table.schema.names
    # test's images are train's first eight: the refs point at the frames train wrote first.
    assert table.column("frame_refs").to_pylist() == [[i] for i in range(8)]
    frames = pl.read_ipc_stream(tmp_path / shared.frame_table[0].path)["frame"].to_list()
    assert frames[:8] == [jpeg(i, SIZE) for i in range(8)]


def test_the_table_rolls_over_and_refs_reach_every_file(tmp_path):
    items = samples(40, size=64)
    shared = _write(tmp_path, items, shared_frames=True, max_shard_bytes=20_000)
    assert len(shared.frame_table) > 2
    assert sum(f.frames for f in shared.frame_table) == 40
    assert [Sample.id for Sample in iter_samples(tmp_path / shared.shards[0].path)] == [s.id for s in items]
    assert _rows(tmp_path, shared) == [s.to_row() for s in items]
    assert not list(tmp_path.rglob("*.tmp"))


def test_same_input_same_bytes(tmp_path):
    a = _write(tmp_path / "a", _overlapping_splits(), shared_frames=True)
    b = _write(tmp_path / "b", _overlapping_splits(), shared_frames=True)
    assert a.to_json() == b.to_json()
    assert (tmp_path / "a" / "manifest.json").read_bytes() == (tmp_path / "b" / "manifest.json").read_bytes()


def test_manifest_format_3_only_with_a_frame_table(tmp_path):
    shared = _write(tmp_path / "shared", samples(2), shared_frames=True)
    _write(tmp_path / "per_shard", samples(2))
    on_disk = json.loads((tmp_path / "shared" / "manifest.json").read_text())
    assert on_disk["format"] == SHARED_FRAMES_FORMAT and len(on_disk["frame_table"]) == 1
    plain = json.loads((tmp_path / "per_shard" / "manifest.json").read_text())
    assert plain["format"] == 2 and "frame_table" not in plain
    assert Manifest.load(tmp_path / "shared" / "manifest.json").frame_table == shared.frame_table


def test_verify_names_a_changed_or_missing_frame_table(tmp_path):
    shared = _write(tmp_path, samples(4), shared_frames=True)
    table = tmp_path / shared.frame_table[0].path
    data = bytearray(table.read_bytes())
    data[-100] ^= 0xFF
    table.write_bytes(bytes(data))
    problems = verify_manifest(tmp_path / "manifest.json")
    assert len(problems) == 1 and problems[0].startswith(f"{shared.frame_table[0].path}: blake3 ")
    table.unlink()
    assert verify_manifest(tmp_path / "manifest.json")[0] == f"{shared.frame_table[0].path}: missing"
    with pytest.raises(ShardSchemaError, match=r"train-00000\.arrow: .*no frame table"):
        open_shard(tmp_path / shared.shards[0].path)


def test_refs_past_the_table_are_named(tmp_path):
    shared = _write(tmp_path, samples(40, size=64), shared_frames=True, max_shard_bytes=20_000)
    last = shared.frame_table[-1]
    (tmp_path / last.path).unlink()
    data = json.loads((tmp_path / "manifest.json").read_text())
    data["frame_table"] = data["frame_table"][:-1]
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    problems = verify_manifest(tmp_path / "manifest.json")
    kept = sum(f.frames for f in shared.frame_table[:-1])
    assert problems == [f"train/train-00000.arrow: frame ref 39 past its frame table's {kept:,} frames"]
    with pytest.raises(ShardSchemaError, match=rf"train-00000\.arrow: frame ref 39 is outside the {kept} frames"):
        open_shard(tmp_path / "train" / "train-00000.arrow")
    # Columns without frames still read: the index of a training run needs no frame.
    assert map_shard(tmp_path / "train" / "train-00000.arrow").table.num_rows == 40


def test_combine_lists_the_parts_frame_tables(tmp_path):
    _write(tmp_path / "a", _overlapping_splits(), shared_frames=True)
    _write(tmp_path / "b", samples(3, size=48))
    combined = combine_manifests("both", [tmp_path / "a" / "manifest.json", tmp_path / "b" / "manifest.json"], tmp_path / "all.json")
    assert [f.path for f in combined.frame_table] == [f"a/{FRAME_TABLE_DIR}/frames-00000.arrow"]
    assert verify_manifest(tmp_path / "all.json") == []
    rows = [r for s in combined.shards for r in open_shard(tmp_path / s.path).to_pylist()]
    assert len(rows) == 23 + 3 and all(r["frames"] for r in rows)


def test_a_crash_leaves_no_manifest_and_the_rerun_writes_it_whole(tmp_path):
    items = samples(40, size=64)
    with pytest.raises(RuntimeError):
        with OutputWriter(tmp_path, shared_frames=True, max_shard_bytes=20_000) as writer:
            for sample in items:
                writer.write(sample)  # the table has rolled over: some of its files are complete
            raise RuntimeError("crash mid-build")
    assert list((tmp_path / FRAME_TABLE_DIR).glob("*.arrow")) and not (tmp_path / "manifest.json").exists()
    assert not list(tmp_path.rglob("*.tmp"))
    again = _write(tmp_path, items[:5], shared_frames=True)
    assert sorted(p.name for p in (tmp_path / FRAME_TABLE_DIR).iterdir()) == ["frames-00000.arrow"]
    assert verify_manifest(tmp_path / "manifest.json") == [] and _rows(tmp_path, again) == [s.to_row() for s in items[:5]]


def test_the_documented_polars_join_gives_the_frames(tmp_path, monkeypatch):
    """docs/data-format.md's snippet, run as written on a shared-frames output in ``out/``."""
    shared = _write(tmp_path / "out", _overlapping_splits(), shared_frames=True)
    doc = (Path(__file__).resolve().parents[2] / "docs" / "data-format.md").read_text()
    snippet = next(code for code in (b.split("```")[0] for b in doc.split("```python\n")[1:]) if "frame_refs" in code)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(snippet, scope)
    test_shard = next(s for s in shared.shards if s.path == "test/test-00000.arrow")
    expected = open_shard(tmp_path / "out" / test_shard.path).to_pylist()
    assert scope["rows"]["frames"].to_list() == [r["frames"] for r in expected]
    assert scope["rows"]["id"].to_list() == [r["id"] for r in expected]


def test_referencing_shards_also_roll_over_by_rows(tmp_path, monkeypatch):
    """Rows without frames are small: a referencing shard is capped by rows too, or it gathers millions."""
    from omnivmed.data import shards

    monkeypatch.setattr(shards, "SHARED_SHARD_ROWS", 8)
    items = samples(20)
    shared = _write(tmp_path, items, shared_frames=True)
    assert [s.rows for s in shared.shards] == [8, 8, 4]
    assert _rows(tmp_path, shared) == [s.to_row() for s in items]


def test_take_reads_each_position_from_its_own_file_and_batch(tmp_path):
    """Positions across record batches and files come back in order (the table is many small chunks)."""
    import numpy as np

    from omnivmed.data.frame_table import FrameTable

    items = samples(40, size=64)
    shared = _write(tmp_path, items, shared_frames=True, max_shard_bytes=20_000)
    table = FrameTable(tmp_path / FRAME_TABLE_DIR)
    assert len(shared.frame_table) > 2 and len(table) == 40
    positions = np.array([0, 1, 7, 8, 20, 38, 39])
    assert table.take(positions).to_pylist() == [items[i].frames[0] for i in positions]
