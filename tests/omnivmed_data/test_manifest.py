import json

import pyarrow as pa
import pytest
from support.samples import samples

from omnivmed.data.manifest import Manifest, ManifestError, verify_manifest
from omnivmed.data.shards import ShardWriter


@pytest.fixture
def built(tmp_path):
    with ShardWriter(tmp_path, max_shard_bytes=10_000, batch_rows=3) as writer:
        for s in samples(20) + samples(4, split="test"):
            writer.write(s)
        shards = writer.close()
    manifest = Manifest(name="synthetic", shards=shards)
    path = tmp_path / "manifest.json"
    manifest.save(path)
    return path, manifest


def test_manifest_round_trips_and_is_typed(built):
    path, manifest = built
    loaded = Manifest.load(path)
    assert loaded == manifest
    assert loaded.rows == 24
    assert len(loaded.shards) >= 3


def test_manifest_with_unknown_keys_is_refused(built, tmp_path):
    path, _ = built
    data = json.loads(path.read_text())
    data["surprise"] = 1
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="surprise"):
        Manifest.load(bad)


def test_verify_passes_on_untouched_shards(built):
    path, _ = built
    assert verify_manifest(path) == []


def test_verify_catches_one_flipped_byte_in_any_shard(built):
    path, manifest = built
    for shard in manifest.shards:
        target = path.parent / shard.path
        original = target.read_bytes()
        for offset in (0, len(original) // 2, len(original) - 1):
            flipped = bytearray(original)
            flipped[offset] ^= 0x01
            target.write_bytes(bytes(flipped))
            problems = verify_manifest(path)
            assert len(problems) == 1 and problems[0].startswith(shard.path), problems
        target.write_bytes(original)
    assert verify_manifest(path) == []


def test_verify_names_a_missing_shard(built):
    path, manifest = built
    (path.parent / manifest.shards[1].path).unlink()
    assert verify_manifest(path) == [f"{manifest.shards[1].path}: missing"]


def test_verify_catches_a_shard_with_another_schema(built):
    path, manifest = built
    shard = manifest.shards[0]
    target = path.parent / shard.path
    # Read into memory, not memory-mapped: the file is rewritten in place below.
    table = pa.ipc.open_stream(target.read_bytes()).read_all()
    # Same data, one column renamed: checksums are re-recorded, so only the schema check can catch it.
    renamed = table.rename_columns(["identifier"] + table.column_names[1:])
    with pa.ipc.new_stream(str(target), renamed.schema) as w:
        w.write_table(renamed)
    from omnivmed.data.fileio import sha256_file
    from omnivmed.data.manifest import ShardInfo

    forged = ShardInfo(shard.path, shard.split, shard.rows, target.stat().st_size, sha256_file(target))
    manifest.shards[0] = forged
    manifest.save(path)
    problems = verify_manifest(path)
    assert len(problems) == 1 and "schema fingerprint" in problems[0] and shard.path in problems[0]


def test_verify_catches_a_manifest_from_another_schema(built):
    path, manifest = built
    manifest.schema_fingerprint = "0" * 64
    manifest.save(path)
    problems = verify_manifest(path)
    assert any("manifest.json" in p and "schema fingerprint" in p for p in problems)
