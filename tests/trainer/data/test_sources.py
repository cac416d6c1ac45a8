"""Manifests in: verification errors name the file and the reason; folders of manifests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pytest

from omnivmed.embedded import sources_dir
from omnivmed.data.manifest import Manifest
from omnivmed.trainer.data.sources import ShardReader, TrainDataError, discover_manifests, load_index


@pytest.fixture
def cholec_copy(embedded_manifest, tmp_path) -> Path:
    """A private copy of the smallest staged source (the generated surgical clips)."""
    staged = sources_dir(embedded_manifest.parent) / "staged" / "cholec80_vqa"
    shutil.copytree(staged, tmp_path / "cholec80_vqa")
    return tmp_path / "cholec80_vqa" / "manifest.json"


def test_index_holds_the_split_rows_with_their_columns(embedded_manifest):
    index = load_index([embedded_manifest], "train")
    manifest = Manifest.load(embedded_manifest)
    assert len(index) == manifest.counts["split"]["train"]
    assert set(index.visual_kind) == {"image", "volume", "video"}
    sample = ShardReader(index.shards).sample(index.shard_of[-1], index.row_of[-1])
    assert sample.source == index.source[-1] and sample.split == "train"


def test_a_folder_of_manifests(embedded_manifest, tmp_path):
    folder = tmp_path / "manifests"
    folder.mkdir()
    staged = sources_dir(embedded_manifest.parent) / "staged"
    for name in ("vqa_rad", "cholec80_vqa"):
        data = json.loads((staged / name / "manifest.json").read_text())
        for shard in data["shards"]:
            shard["path"] = str((staged / name / shard["path"]).resolve())  # absolute: the shards stay put
        (folder / f"{name}.manifest.json").write_text(json.dumps(data))
    found = discover_manifests(folder)
    assert [p.name for p in found] == ["cholec80_vqa.manifest.json", "vqa_rad.manifest.json"]
    index = load_index(found + found, "train")  # a shard listed twice is indexed once
    assert set(index.source) == {"vqa_rad", "cholec80_vqa"}
    assert len(index) == sum(Manifest.load(p).counts["split"]["train"] for p in found)


def test_a_changed_byte_names_the_shard_and_the_checksum(cholec_copy):
    shard = cholec_copy.parent / "train" / "train-00000.arrow"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(TrainDataError, match=r"manifest.json: train/train-00000.arrow: blake3 .* manifest says"):
        load_index([cholec_copy])


def test_a_missing_shard_is_named(cholec_copy):
    (cholec_copy.parent / "validation" / "validation-00000.arrow").unlink()
    with pytest.raises(TrainDataError, match="validation/validation-00000.arrow: missing"):
        load_index([cholec_copy])


def test_another_schema_is_refused(cholec_copy):
    shard = cholec_copy.parent / "train" / "train-00000.arrow"
    table = pa.table({"id": ["x"]})
    with pa.OSFile(str(shard), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    with pytest.raises(TrainDataError, match="schema fingerprint"):
        load_index([cholec_copy], verify=False)


def test_bad_paths_and_manifests(tmp_path):
    with pytest.raises(TrainDataError, match="no such manifest file or folder"):
        discover_manifests(tmp_path / "nowhere")
    with pytest.raises(TrainDataError, match=r"holds no \*.manifest.json"):
        discover_manifests(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(TrainDataError, match="manifest.json: not valid JSON"):
        load_index([tmp_path / "manifest.json"])


def test_a_folder_of_recipe_mixes_gives_each_stage_its_own(embedded_manifest, tmp_path):
    from omnivmed.trainer.data.sources import manifests_for_stage

    folder = tmp_path / "manifests"
    folder.mkdir()
    for stage in (1, 3):
        data = json.loads(embedded_manifest.read_text())
        data["options"]["recipe.stage"] = str(stage)
        for shard in data["shards"]:
            shard["path"] = str((embedded_manifest.parent / shard["path"]).resolve())
        (folder / f"stage{stage}.manifest.json").write_text(json.dumps(data))
    assert [p.name for p in manifests_for_stage(folder, 3)] == ["stage3.manifest.json"]
    assert manifests_for_stage(folder / "stage1.manifest.json", 3) == [folder / "stage1.manifest.json"]
    with pytest.raises(TrainDataError, match=r"no manifest is for stage 2; found stage1.manifest.json \(stage 1\)"):
        manifests_for_stage(folder, 2)


def test_shards_sharing_a_frame_table_train_like_self_contained_ones(tmp_path):
    """A build written with ``shared_frames``: the same index and the same rows, frames resolved batch by batch."""
    from support.samples import samples

    from omnivmed.data.output import OutputWriter

    items = samples(70, size=48) + samples(20, split="test", size=48)
    paths = {}
    for name, shared in (("per_shard", False), ("shared", True)):
        with OutputWriter(tmp_path / name, shared_frames=shared) as writer:
            for sample in items:
                writer.write(sample)
            writer.finish(Manifest(name=name))
        paths[name] = tmp_path / name / "manifest.json"
    assert Manifest.load(paths["shared"]).frame_table
    a, b = load_index([paths["per_shard"]], "train"), load_index([paths["shared"]], "train")
    assert len(a) == len(b) == 70 and list(a.source) == list(b.source)
    ra, rb = ShardReader(a.shards), ShardReader(b.shards)
    for i in (0, 63, 64, 69):  # both sides of a record batch's edge
        row_a, row_b = ra.row(a.shard_of[i], a.row_of[i]), rb.row(b.shard_of[i], b.row_of[i])
        assert (row_b.id, [bytes(f) for f in row_b.frames], row_b.conversations) == (
            row_a.id, [bytes(f) for f in row_a.frames], row_a.conversations
        )
        assert rb.sample(b.shard_of[i], b.row_of[i]) == ra.sample(a.shard_of[i], a.row_of[i])
