"""The Hugging Face export: load_dataset(folder) gives the shards' rows with decoded images; polars and DuckDB query it."""

from __future__ import annotations

import io
import json
from pathlib import Path

import datasets
import duckdb
import huggingface_hub
import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image
from support.staged_sources import write_staged
from typer.testing import CliRunner

from omnivmed.cli.data import app
from omnivmed.data.combine import combine_manifests
from omnivmed.data.export import ExportError
from omnivmed.data.hf_export import SHAREGPT_ROLES, export_hf, push_export
from omnivmed.data.manifest import Manifest, shard_path
from omnivmed.data.shards import iter_samples

ROLE_OF = {v: k for k, v in SHAREGPT_ROLES.items()}


@pytest.fixture
def mixed(tmp_path) -> Path:
    """Two sources (CT volumes with a test split, pathology images) combined into one manifest."""
    ct = write_staged(tmp_path, "ct_src", {("train", "vqa", "ct"): 12, ("test", "vqa", "ct"): 4}, kind="volume")
    path = write_staged(tmp_path, "path_src", {("train", "image_caption", "pathology"): 9}, kind="image", license="CC-BY-4.0")
    combine_manifests("both", [ct, path], tmp_path / "mix" / "manifest.json")
    return tmp_path / "mix" / "manifest.json"


def export(manifest: Path, out: Path) -> Path:
    # Small row groups and files, so a test sees several of each (and the -NNNNN-of-MMMMM names).
    export_hf(manifest, out, row_group_bytes=6_000, file_bytes=15_000, progress=False)
    return out


def shard_samples(manifest_path: Path) -> dict[str, list]:
    """split -> Samples in shard order, read with the project's own reader."""
    manifest = Manifest.load(manifest_path)
    found: dict[str, list] = {}
    for info in manifest.shards:
        found.setdefault(info.split, []).extend(iter_samples(shard_path(manifest_path, info)))
    return found


def load(folder: Path, config: str, cache: Path):
    return datasets.load_dataset(str(folder), config, cache_dir=str(cache))


def test_load_dataset_gives_the_shards_rows_with_decoded_images(mixed, tmp_path):
    out = export(mixed, tmp_path / "hf")
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.parquet"))
    train = [f for f in files if f.startswith("data/ct_src/train-")]
    assert len(train) > 1 and train == [f"data/ct_src/train-{i:05d}-of-{len(train):05d}.parquet" for i in range(len(train))]
    assert "data/path_src/train-00000-of-00001.parquet" in files
    assert any(pq.ParquetFile(out / f).metadata.num_row_groups > 1 for f in files)
    expected = shard_samples(mixed)
    for config in ("default", "ct_src", "path_src"):
        loaded = load(out, config, tmp_path / "cache")
        for split, rows in loaded.items():
            want = [s for s in expected[split] if config in ("default", s.source)]
            want.sort(key=lambda s: s.source)  # default: one folder per source, in name order
            assert rows["id"] == [s.id for s in want], (config, split)
            assert rows.features["frames"] == datasets.List(datasets.Image())
            raw = rows.cast_column("frames", datasets.List(datasets.Image(decode=False)))
            for sample, row, undecoded in zip(want, rows, raw):
                assert [(ROLE_OF[t["from"]], t["value"]) for t in row["conversations"]] == [(t.role, t.content) for t in sample.conversations]
                assert [f["bytes"] for f in undecoded["frames"]] == list(sample.frames)  # inline, never re-encoded
                assert row["num_frames"] == len(sample.frames) and row["provenance"]["record_id"] == sample.provenance.record_id
                for image, data in zip(row["frames"], sample.frames):
                    assert isinstance(image, Image.Image)
                    with Image.open(io.BytesIO(data)) as direct:
                        assert np.array_equal(np.asarray(image), np.asarray(direct))
    assert set(load(out, "path_src", tmp_path / "cache")) == {"train"}


def test_readme_declares_configs_dataset_info_license_and_the_card(mixed, tmp_path):
    out = export(mixed, tmp_path / "hf")
    text = (out / "README.md").read_text(encoding="utf-8")
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["license"] == ["cc-by-4.0", "cc0-1.0"]
    assert "visual-question-answering" in front["task_categories"] and "image-to-text" in front["task_categories"]
    configs = {c["config_name"]: c["data_files"] for c in front["configs"]}
    assert configs["default"] == [{"split": "test", "path": "data/*/test-*.parquet"}, {"split": "train", "path": "data/*/train-*.parquet"}]
    assert configs["path_src"] == [{"split": "train", "path": "data/path_src/train-*.parquet"}]
    infos = {i["config_name"]: i for i in front["dataset_info"]}
    assert {s["name"]: s["num_examples"] for s in infos["default"]["splits"]} == {"test": 4, "train": 21}
    assert {s["name"]: s["num_examples"] for s in infos["ct_src"]["splits"]} == {"test": 4, "train": 12}
    assert infos["ct_src"]["download_size"] == sum(p.stat().st_size for p in (out / "data" / "ct_src").glob("*.parquet"))
    assert {"name": "frames", "list": "image"} in infos["default"]["features"]
    # The data card's content: sources with licenses and citations, counts, figures that exist.
    assert "| path_src | CC-BY-4.0 | https://example.org/path_src | Citation of path_src |" in text
    assert "## Samples by modality" in text and "Arrow IPC stream" not in text
    for link in ("figures/modalities_tasks.png", "figures/frames_per_sample.png"):
        assert f"]({link})" in text and (out / link).is_file()
    assert json.loads((out / "stats.json").read_text())["rows"] == 25


def test_the_export_is_deterministic_and_a_rerun_keeps_files(mixed, tmp_path):
    first = export(mixed, tmp_path / "a")
    second = export(mixed, tmp_path / "b")
    files = lambda root: {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}  # noqa: E731
    assert files(first) == files(second) and len(files(first)) > 6
    mtimes = {p: p.stat().st_mtime_ns for p in first.rglob("*.parquet")}
    export(mixed, first)
    assert {p: p.stat().st_mtime_ns for p in first.rglob("*.parquet")} == mtimes
    export_hf(mixed, first, splits=["train"], progress=False)  # a narrower re-run removes what it no longer writes
    assert not list(first.rglob("test-*.parquet"))
    assert sorted(p.name for p in (first / "data" / "ct_src").iterdir()) == ["train-00000-of-00001.parquet"]


def damage_column(path: Path, leaf: str) -> None:
    """Overwrite every chunk of one column (``leaf`` is its Parquet path) with 0xFF, leaving the rest intact."""
    meta = pq.ParquetFile(path).metadata
    data = bytearray(path.read_bytes())
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for c in range(group.num_columns):
            chunk = group.column(c)
            if chunk.path_in_schema == leaf:
                start = min(o for o in (chunk.dictionary_page_offset, chunk.data_page_offset) if o is not None)
                data[start : start + chunk.total_compressed_size] = b"\xff" * chunk.total_compressed_size
    path.write_bytes(bytes(data))


def test_polars_scan_filters_without_reading_the_frames(mixed, tmp_path):
    out = export(mixed, tmp_path / "hf")
    pattern = str(out / "data" / "*" / "*.parquet")

    def query(files: str) -> pl.DataFrame:
        return (
            pl.scan_parquet(files)
            .filter((pl.col("modality") == "ct") & (pl.col("split") == "train"))
            .select("id", "num_frames", "conversations")
            .collect()
        )

    plan = pl.scan_parquet(pattern).filter(pl.col("modality") == "ct").select("id", "num_frames").explain()
    assert "frames" not in plan.replace("num_frames", "")  # projection pushed into the scan: frames not named
    before = query(pattern)
    assert before.height == 12 and before["num_frames"].to_list() == [6] * 12
    assert before["conversations"][0][0]["from"] == "human"
    # The proof that frames are not read: destroy every frames chunk on disk; the query still gives the same answer,
    # while reading the frames column itself now fails.
    for path in out.rglob("*.parquet"):
        damage_column(path, "frames.list.element.bytes")
    assert query(pattern).equals(before)
    with pytest.raises(Exception):
        pl.scan_parquet(pattern).select("frames").collect()


def test_duckdb_queries_the_parquet_files(mixed, tmp_path):
    out = export(mixed, tmp_path / "hf")
    files = str(out / "data" / "*" / "*.parquet")
    rows = duckdb.sql(
        f"select source, split, count(*), sum(num_frames), sum(len(frames)) from read_parquet('{files}') "
        "group by source, split order by source, split"
    ).fetchall()
    assert rows == [("ct_src", "test", 4, 24, 24), ("ct_src", "train", 12, 72, 72), ("path_src", "train", 9, 9, 9)]
    first = duckdb.sql(f"select frames[1].bytes from read_parquet('{files}') where source = 'path_src' order by id limit 1").fetchall()[0][0]
    assert first[:2] == b"\xff\xd8"  # a JPEG, stored inline


def test_bad_inputs_are_refused_in_one_line(mixed, tmp_path):
    runner = CliRunner()
    missing = runner.invoke(app, ["export", str(tmp_path / "nothing"), "--format", "hf", "--out", str(tmp_path / "x")])
    assert missing.exit_code == 2 and "no such manifest" in missing.output and len(missing.output.strip().splitlines()) == 1
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty and not an earlier hf export"):
        export_hf(mixed, foreign, progress=False)
    refused = runner.invoke(app, ["export", str(mixed), "--format", "hf", "--out", str(foreign)])
    assert refused.exit_code == 2 and len(refused.output.strip().splitlines()) == 1 and (foreign / "notes.txt").is_file()
    shard = next((mixed.parent.parent / "ct_src" / "train").glob("*.arrow"))
    shard.write_bytes(shard.read_bytes()[:-10] + b"0123456789")
    damaged = runner.invoke(app, ["export", str(mixed), "--format", "hf", "--out", str(tmp_path / "d")])
    assert damaged.exit_code == 2 and "does not verify" in damaged.output and len(damaged.output.strip().splitlines()) == 1
    assert not (tmp_path / "d" / "data").exists()


def test_cli_export_hf(mixed, tmp_path):
    result = CliRunner().invoke(app, ["export", str(mixed.parent), "--format", "hf", "--out", str(tmp_path / "c"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "config default: test 4, train 21" in result.output and "config path_src: train 9" in result.output
    assert (tmp_path / "c" / "README.md").is_file()
    wrong = CliRunner().invoke(app, ["export", str(mixed), "--format", "llava", "--out", str(tmp_path / "l"), "--push", "me/x"])
    assert wrong.exit_code == 2 and "only --format hf" in wrong.output


@pytest.fixture
def no_token(monkeypatch, tmp_path):
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))


def test_push_without_a_token_says_how_to_log_in(mixed, tmp_path, no_token):
    result = CliRunner().invoke(app, ["export", str(mixed), "--format", "hf", "--out", str(tmp_path / "p"), "--push", "me/omnivmed"])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "no Hugging Face token" in result.output and "hf auth login" in result.output and "HF_TOKEN" in result.output
    assert not (tmp_path / "p").exists()  # refused before any work


def test_push_uploads_the_folder_through_hfapi(mixed, tmp_path, monkeypatch):
    calls = []

    class FakeApi:
        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs))
            return f"https://huggingface.co/datasets/{repo_id}"

        def upload_folder(self, **kwargs):
            calls.append(("upload_folder", kwargs))

    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    out = tmp_path / "p"
    result = CliRunner().invoke(app, ["export", str(mixed), "--format", "hf", "--out", str(out), "--push", "me/omnivmed", "--private"])
    assert result.exit_code == 0, result.output
    assert calls[0] == ("create_repo", "me/omnivmed", {"repo_type": "dataset", "private": True, "exist_ok": True})
    upload = calls[1][1]
    assert upload["folder_path"] == str(out) and upload["repo_id"] == "me/omnivmed" and upload["repo_type"] == "dataset"
    assert "pushed -> https://huggingface.co/datasets/me/omnivmed" in result.output

    class FailingApi(FakeApi):
        def upload_folder(self, **kwargs):
            raise RuntimeError("403 Forbidden: no write access\nmore detail")

    monkeypatch.setattr(huggingface_hub, "HfApi", FailingApi)
    with pytest.raises(ExportError, match=r"--push me/omnivmed: upload failed \(RuntimeError: 403 Forbidden: no write access\)$"):
        push_export(out, "me/omnivmed")


def test_a_shared_frames_build_exports_self_contained(tmp_path):
    """Shards that reference a frame table export with their frames inline: the folder stands alone."""
    from support.samples import samples

    from omnivmed.data.output import OutputWriter

    items = samples(6) + samples(3, split="test")  # test asks about train's first three images
    with OutputWriter(tmp_path / "built", shared_frames=True) as writer:
        for sample in items:
            writer.write(sample)
        writer.finish(Manifest(name="synthetic"))
    out = export(tmp_path / "built" / "manifest.json", tmp_path / "hf")
    assert not list(out.rglob("*.arrow"))
    loaded = load(out, "default", tmp_path / "cache")
    raw = {split: rows.cast_column("frames", datasets.List(datasets.Image(decode=False))) for split, rows in loaded.items()}
    for split, want in (("train", items[:6]), ("test", items[6:])):
        assert [[f["bytes"] for f in row["frames"]] for row in raw[split]] == [list(s.frames) for s in want]
