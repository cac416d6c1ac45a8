"""Exports: LLaVA round trip, LLaMA-Factory and ms-swift files read back with `datasets`, shards with load_dataset("arrow")."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import cv2
import datasets
import numpy as np
import pytest
from PIL import Image
from support.pubmedvision_trees import alignment_rows_from_captions, image_bytes, row_images, vqa_row, write_tree
from support.samples import build_named, jpeg, samples_of
from typer.testing import CliRunner

from omnivmed.cli.data import app
from omnivmed.data.export import DATASET_INFO, SUMMARY_NAME, ExportError, export_manifest
from omnivmed.data.manifest import Manifest
from omnivmed.data.schema import SCHEMA, Provenance, Sample, Turn, VisualMeta, make_sample
from omnivmed.data.shards import ShardWriter


def png(seed: int, shape=(20, 16)) -> bytes:
    rng = np.random.default_rng(seed)
    ok, buf = cv2.imencode(".png", rng.integers(0, 255, shape, dtype=np.uint8))
    assert ok
    return buf.tobytes()


def provenance(n: int) -> Provenance:
    return Provenance((f"raw/{n}",), str(n), "CC0-1.0", "https://example.org")


def every_kind() -> list[Sample]:
    """One Sample of each visual kind, a system prompt, a multi-turn dialogue; test and train splits."""
    return [
        make_sample(
            source="synthetic", split="test", task="vqa", modality="x_ray", visual_kind="image",
            frames=[jpeg(1)], frame_format="jpeg", answer_type="closed",
            conversations=[Turn("user", "<image>\nIs there an effusion?"), Turn("assistant", "no")],
            provenance=provenance(1),
        ),
        make_sample(
            source="synthetic", split="train", task="vqa", modality="pathology", visual_kind="multi_image",
            frames=[png(2), png(3)], frame_format="png", answer_type="open",
            conversations=[
                Turn("user", "<image>\n<image>\nCompare the stains."), Turn("assistant", "The second is PAS."),
                Turn("user", "Which shows fibrosis?"), Turn("assistant", "The first."),
            ],
            provenance=provenance(2),
        ),
        make_sample(
            source="synthetic", split="train", task="phase_recognition", modality="endoscopy", visual_kind="video",
            frames=[jpeg(10 + i, 16) for i in range(12)], frame_format="jpeg",
            visual_meta=VisualMeta(fps=25.0, timestamps_s=tuple(i / 25 for i in range(12)), frame_indices=tuple(range(12))),
            conversations=[
                Turn("system", "You are a surgical assistant."),
                Turn("user", "<video>\nWhich phase is shown?"), Turn("assistant", "Calot triangle dissection"),
            ],
            provenance=provenance(3),
        ),
        make_sample(
            source="synthetic", split="train", task="report_generation", modality="ct", visual_kind="volume",
            frames=[png(30 + i) for i in range(5)], frame_format="png",
            visual_meta=VisualMeta(spacing_mm=(3.0, 1.0, 1.0), original_shape=(5, 20, 16)),
            conversations=[Turn("user", "<image>\nDescribe the CT volume."), Turn("assistant", "Unremarkable.")],
            provenance=provenance(4),
        ),
        make_sample(
            source="synthetic", split="train", task="vqa", modality="unspecified", visual_kind="none",
            frames=[], frame_format=None,
            conversations=[Turn("user", "What does CT stand for?"), Turn("system", "Answer briefly."), Turn("assistant", "Computed tomography.")],
            provenance=provenance(5),
        ),
    ]  # fmt: skip


@pytest.fixture
def staged(tmp_path) -> Path:
    """Shards + manifest of every_kind(), written by the one shard writer."""
    out = tmp_path / "staged"
    with ShardWriter(out) as writer:
        for sample in every_kind():
            writer.write(sample)
        shards = writer.close()
    Manifest(name="kinds", shards=shards).save(out / "manifest.json")
    return out / "manifest.json"


def read_frames_like_llava(export: Path, record: dict) -> list[bytes]:
    """What LLaVA / LLaVA-NeXT open: `image` (a path or a list), or the frames of a `video` folder in name order."""
    if "image" in record:
        files = record["image"] if isinstance(record["image"], list) else [record["image"]]
    elif "video" in record:
        folder = export / record["video"]
        files = [f"{record['video']}/{name}" for name in sorted(os.listdir(folder))]
    else:
        files = []
    return [(export / f).read_bytes() for f in files]


def conversations_from_llava(record: dict, visual_kind: str) -> tuple[Turn, ...]:
    roles = {"human": "user", "gpt": "assistant"}
    turns = []
    for turn in record["conversations"]:
        text = turn["value"].replace("<image>", "<video>") if visual_kind == "video" else turn["value"]
        turns.append(Turn(roles[turn["from"]], text))
    return tuple(turns)


# ---------------------------------------------------------------- LLaVA round trip


def test_llava_round_trip_reproduces_conversations_and_frames(staged, tmp_path):
    out = tmp_path / "llava"
    result = export_manifest(staged, out, "llava", progress=False)
    assert result.records == {"test.json": 1, "train.json": 4}
    assert result.system_turns_dropped == 2
    expected = {s.id: s for s in every_kind()}
    seen = []
    for split in ("test", "train"):
        for record in json.loads((out / f"{split}.json").read_text(encoding="utf-8")):
            sample = expected[record["id"]]
            assert sample.split == split
            assert read_frames_like_llava(out, record) == list(sample.frames)
            assert conversations_from_llava(record, sample.visual_kind) == tuple(t for t in sample.conversations if t.role != "system")
            seen.append(record["id"])
    assert sorted(seen) == sorted(expected)
    by_kind = {expected[r["id"]].visual_kind: r for r in json.loads((out / "train.json").read_text())}
    assert isinstance(by_kind["multi_image"]["image"], list) and len(by_kind["multi_image"]["image"]) == 2
    assert by_kind["video"]["video"].startswith("media/") and "image" not in by_kind["video"]
    assert by_kind["video"]["conversations"][0]["value"] == "<image>\nWhich phase is shown?"  # LLaVA-NeXT's clip token
    assert set(by_kind["none"]) == {"id", "conversations"}
    single = json.loads((out / "test.json").read_text())[0]
    assert isinstance(single["image"], str) and single["image"].endswith(".jpg")
    with Image.open(out / single["image"]) as img:  # what LLaVA's loader does with it
        assert img.convert("RGB").size == (32, 32)
    summary = json.loads((out / SUMMARY_NAME).read_text())
    assert summary["records"] == result.records and summary["media_files"] == 1 + 2 + 12 + 5


def test_built_pubmedvision_round_trips_through_llava(tmp_path):
    rows = alignment_rows_from_captions() + [
        vqa_row("mi", ["images/pmc_1_0.jpg", "images/pmc_1_1.jpg"], [("human", "Both panels?"), ("gpt", "Two views.")], "CT", "Chest")
    ]
    raw = write_tree(tmp_path / "raw", alignment=rows, images=image_bytes(row_images(rows)))
    build_named("pubmedvision", raw, tmp_path / "staged", subset="alignment")
    samples = samples_of(tmp_path / "staged")
    out = tmp_path / "llava"
    export_manifest(tmp_path / "staged" / "manifest.json", out, "llava", progress=False)
    records = json.loads((out / "train.json").read_text(encoding="utf-8"))
    assert [r["id"] for r in records] == [s.id for s in samples]
    for record, sample in zip(records, samples):
        assert read_frames_like_llava(out, record) == list(sample.frames)
        assert conversations_from_llava(record, sample.visual_kind) == sample.conversations
    assert records[-1]["conversations"][0]["value"].startswith("<image>\n<image>\n")


def test_export_is_deterministic_and_a_rerun_keeps_media(staged, tmp_path):
    out = tmp_path / "e"
    export_manifest(staged, out, "llava", progress=False)
    first = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    mtimes = {p: p.stat().st_mtime_ns for p in first}
    export_manifest(staged, out, "llava", progress=False)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == first
    media = [p for p in first if "media" in p.parts]
    assert media and all(p.stat().st_mtime_ns == mtimes[p] for p in media)
    other = tmp_path / "f"
    export_manifest(staged, other, "llava", progress=False)
    assert (other / "train.json").read_bytes() == (out / "train.json").read_bytes()


# ---------------------------------------------------------------- LLaMA-Factory / ms-swift


def load_json_like_a_trainer(path: Path, cache: Path):
    """Both trainers read their files through `datasets.load_dataset("json")`."""
    return datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(cache))


def test_sharegpt_for_llama_factory(staged, tmp_path):
    out = tmp_path / "sg"
    result = export_manifest(staged, out, "sharegpt", progress=False)
    assert result.system_turns_dropped == 1  # the mid-dialogue one; the leading system prompt stays
    info = json.loads((out / DATASET_INFO).read_text())
    assert set(info) == {"kinds_test", "kinds_train"}
    assert info["kinds_train"]["file_name"] == "train.json" and info["kinds_train"]["formatting"] == "sharegpt"
    assert info["kinds_train"]["columns"] == {"messages": "messages", "images": "images", "videos": "videos"}
    assert info["kinds_train"]["tags"]["system_tag"] == "system"
    rows = load_json_like_a_trainer(out / "train.json", tmp_path / "cache")
    expected = {s.id: s for s in every_kind()}
    assert rows.num_rows == 4
    for row in rows:
        sample = expected[row["id"]]
        media = [out / p for p in row["images"]] + [out / p for video in row["videos"] for p in video]
        assert [p.read_bytes() for p in media] == list(sample.frames)
        assert sum(m["content"].count("<image>") for m in row["messages"]) == len(row["images"])
        assert sum(m["content"].count("<video>") for m in row["messages"]) == len(row["videos"])
        if sample.visual_kind in ("video", "volume"):
            assert row["images"] == [] and len(row["videos"]) == 1
    video = next(r for r in rows if expected[r["id"]].visual_kind == "video")
    assert video["messages"][0] == {"role": "system", "content": "You are a surgical assistant."}
    volume = next(r for r in rows if expected[r["id"]].visual_kind == "volume")
    assert volume["messages"][0]["content"] == "<video>\nDescribe the CT volume."


def test_qwen_vl_jsonl_for_ms_swift(staged, tmp_path):
    out = tmp_path / "qw"
    result = export_manifest(staged, out, "qwen-vl", splits=["train"], media_root="/data/omnivmed", progress=False)
    assert result.records == {"train.jsonl": 4} and result.system_turns_dropped == 0
    assert not (out / "test.jsonl").exists()
    lines = (out / "train.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 4
    rows = load_json_like_a_trainer(out / "train.jsonl", tmp_path / "cache")
    expected = {s.id: s for s in every_kind()}
    for row in rows:
        sample = expected[row["id"]]
        paths = row["images"] + [p for video in row["videos"] for p in video]
        assert all(p.startswith("/data/omnivmed/media/") for p in paths)
        assert [(out / p.removeprefix("/data/omnivmed/")).read_bytes() for p in paths] == list(sample.frames)
        assert [(m["role"], m["content"]) for m in row["messages"]] == [
            (t.role, t.content.replace("<image>", "<video>") if sample.visual_kind == "volume" else t.content)
            for t in sample.conversations
        ]
    video = next(r for r in rows if expected[r["id"]].visual_kind == "video")
    assert [Path(p).name for p in video["videos"][0]] == [f"{i:04d}.jpg" for i in range(12)]


# ---------------------------------------------------------------- errors and the CLI


def test_unknown_split_format_and_a_changed_shard_are_refused(staged, tmp_path):
    with pytest.raises(ExportError, match="no split validation"):
        export_manifest(staged, tmp_path / "x", "llava", splits=["validation"], progress=False)
    with pytest.raises(ExportError, match="format"):
        export_manifest(staged, tmp_path / "x", "webdataset", progress=False)
    shard = next((staged.parent / "train").glob("*.arrow"))
    shard.write_bytes(shard.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ExportError, match="does not verify"):
        export_manifest(staged, tmp_path / "x", "llava", progress=False)
    assert not (tmp_path / "x" / "train.json").exists()


def test_cli_export(staged, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["export", str(staged), "--format", "qwen-vl", "--out", str(tmp_path / "c"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "train.jsonl: 4 records" in result.output.replace("\n", "")
    assert (tmp_path / "c" / "test.jsonl").is_file()
    bad = runner.invoke(app, ["export", str(staged), "--format", "llava", "--out", str(tmp_path / "d"), "--split", "nope"])
    assert bad.exit_code == 2 and "no split nope" in bad.output
    wrong = runner.invoke(app, ["export", str(staged), "--format", "tfrecord", "--out", str(tmp_path / "d")])
    assert wrong.exit_code == 2


# ---------------------------------------------------------------- shards straight into datasets


def test_staged_shards_load_with_datasets_arrow_builder(staged, tmp_path):
    loaded = datasets.load_dataset("arrow", data_dir=str(staged.parent), cache_dir=str(tmp_path / "cache"))
    assert set(loaded) == {"train", "test"}
    assert loaded["train"].num_rows == 4 and loaded["test"].num_rows == 1
    assert loaded["train"].column_names == SCHEMA.names
    rows = {row["id"]: row for split in loaded.values() for row in split}
    for sample in every_kind():
        assert Sample.from_row(rows[sample.id]) == sample


def test_built_source_loads_with_datasets_arrow_builder(tmp_path):
    rows = alignment_rows_from_captions()
    raw = write_tree(tmp_path / "raw", alignment=rows, images=image_bytes(row_images(rows)))
    result = build_named("pubmedvision", raw, tmp_path / "staged", subset="alignment")
    loaded = datasets.load_dataset("arrow", data_dir=str(tmp_path / "staged"), cache_dir=str(tmp_path / "cache"))
    assert list(loaded) == ["train"] and loaded["train"].num_rows == result.manifest.rows == 9
    first = loaded["train"][0]
    with Image.open(io.BytesIO(first["frames"][0])) as img:
        assert img.format == "JPEG"
    assert [Sample.from_row(r) for r in loaded["train"]] == samples_of(tmp_path / "staged")


def test_a_combined_manifest_with_shards_elsewhere_exports(staged, tmp_path):
    """Mixed and combined manifests point at shards in other folders (../ paths); those are followed."""
    from omnivmed.data.combine import combine_manifests

    rows = alignment_rows_from_captions()
    raw = write_tree(tmp_path / "raw", alignment=rows, images=image_bytes(row_images(rows)))
    built = build_named("pubmedvision", raw, tmp_path / "pmv", subset="alignment")
    combined = combine_manifests("both", [staged, built.manifest_path], tmp_path / "mix" / "manifest.json")
    assert any(s.path.startswith("../") for s in combined.shards)
    result = export_manifest(tmp_path / "mix" / "manifest.json", tmp_path / "out", "llava", progress=False)
    assert result.records == {"test.json": 1, "train.json": 4 + 9}
    ids = [r["id"] for r in json.loads((tmp_path / "out" / "train.json").read_text())]
    assert set(ids) == {s.id for s in every_kind() if s.split == "train"} | {s.id for s in samples_of(tmp_path / "pmv")}
