import json
from pathlib import Path

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


def _changed_copy(path: Path, out: Path, **changes) -> Path:
    """A copy of the manifest at ``path`` with ``changes`` set, written to ``out``."""
    out.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    return out


def test_manifest_with_unknown_keys_is_refused(built, tmp_path):
    path, _ = built
    with pytest.raises(ManifestError, match="surprise"):
        Manifest.load(_changed_copy(path, tmp_path / "bad.json", surprise=1))


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


# --- shard digests: BLAKE3 for new shards, sha256 still read and verified ------------------------


def test_new_shards_record_blake3_digests_of_their_bytes(built):
    from blake3 import blake3

    path, manifest = built
    data = json.loads(path.read_text())
    assert data["format"] == 2
    for entry, shard in zip(data["shards"], manifest.shards):
        assert "sha256" not in entry
        assert entry["digest"] == shard.digest
        # Computed here independently of the writer: the digest is of the bytes on disk.
        assert shard.digest == "blake3:" + blake3((path.parent / shard.path).read_bytes()).hexdigest()
        assert shard.algorithm == "blake3"


def _rewrite_as_format_1(path):
    """The manifest at ``path`` in the layout tools wrote before BLAKE3: format 1, bare-hex sha256 per shard."""
    import hashlib

    data = json.loads(path.read_text())
    data["format"] = 1
    for entry in data["shards"]:
        del entry["digest"]
        entry["sha256"] = hashlib.sha256((path.parent / entry["path"]).read_bytes()).hexdigest()
    path.write_text(json.dumps(data, indent=2, sort_keys=True))
    return data


def test_format_1_manifest_with_sha256_loads_and_verifies(built):
    path, _ = built
    old = _rewrite_as_format_1(path)
    loaded = Manifest.load(path)
    assert [s.digest for s in loaded.shards] == [f"sha256:{e['sha256']}" for e in old["shards"]]
    assert {s.algorithm for s in loaded.shards} == {"sha256"}
    assert verify_manifest(path) == []
    # Saved again, it is written in today's layout and still verifies with its sha256 digests.
    loaded.save(path)
    assert json.loads(path.read_text())["format"] == 2
    assert verify_manifest(path) == []


@pytest.mark.parametrize("old_layout", [False, True], ids=["blake3", "sha256"])
def test_corrupt_shard_is_caught_under_either_algorithm(built, old_layout):
    path, manifest = built
    if old_layout:
        _rewrite_as_format_1(path)
    shard = manifest.shards[0]
    target = path.parent / shard.path
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x80  # same size: only the digest can tell
    target.write_bytes(bytes(data))
    problems = verify_manifest(path)
    algorithm = "sha256" if old_layout else "blake3"
    assert len(problems) == 1 and problems[0].startswith(f"{shard.path}: {algorithm} "), problems


@pytest.mark.parametrize(
    "digest, why",
    [("md5:" + "0" * 64, "does not start with"), ("blake3:" + "0" * 10, "64 lower-case hex"), ("", "does not start with")],
)
def test_manifest_with_a_bad_digest_is_refused_in_one_line(built, tmp_path, digest, why):
    path, _ = built
    data = json.loads(path.read_text())
    data["shards"][0]["digest"] = digest
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=why) as err:
        Manifest.load(bad)
    assert str(bad) in str(err.value) and "\n" not in str(err.value)


def test_unknown_manifest_format_is_refused(built, tmp_path):
    path, _ = built
    with pytest.raises(ManifestError, match="format 4"):
        Manifest.load(_changed_copy(path, tmp_path / "future.json", format=4))


def test_copying_a_shard_entry_through_the_old_sha256_attribute_keeps_its_algorithm(built):
    """combine and mix build entries as ShardInfo(path, split, rows, bytes, s.sha256): it must stay exact."""
    from omnivmed.data.manifest import ShardInfo

    path, manifest = built
    _rewrite_as_format_1(path)
    for shard in [*manifest.shards, *Manifest.load(path).shards]:
        copy = ShardInfo(f"../x/{shard.path}", shard.split, shard.rows, shard.bytes, shard.sha256)
        assert copy.digest == shard.digest and copy.algorithm == shard.algorithm


def test_file_digest_matches_the_reference_implementations(tmp_path):
    import hashlib

    from blake3 import blake3

    from omnivmed.data.fileio import file_digest, sha256_file

    for size in (0, 1, 1 << 20):
        f = tmp_path / f"f{size}"
        data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
        f.write_bytes(data)
        assert file_digest(f) == file_digest(f, all_cores=False) == "blake3:" + blake3(data).hexdigest()
        assert file_digest(f, "sha256") == "sha256:" + hashlib.sha256(data).hexdigest() == "sha256:" + sha256_file(f)
    with pytest.raises(ValueError, match="md5"):
        file_digest(f, "md5")
