"""The omnivmed-data command line, driven as a user would (Typer's CliRunner)."""

import pytest
from support.raw_trees import make_vqa_rad_subset
from typer.testing import CliRunner

from omnivmed.cli.data import app
from omnivmed.data.manifest import Manifest

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def built(tmp_path):
    raw = make_vqa_rad_subset(tmp_path / "raw", 30)
    out = tmp_path / "out"
    result = run("build", "vqa_rad", "--raw", raw, "--out", out, "--no-progress")
    assert result.exit_code == 0, result.output
    return raw, out


@pytest.mark.parametrize(
    "command", [[], ["sources"], ["download"], ["build"], ["windows"], ["verify"], ["stats"], ["build-embedded"]]
)
def test_every_command_has_help(command):
    result = run(*command, "--help")
    assert result.exit_code == 0
    assert "Usage" in result.output


def test_build_then_verify_then_stats(built):
    raw, out = built
    assert run("verify", out / "manifest.json").exit_code == 0
    stats = run("stats", out / "manifest.json", "--by", "split,modality")
    assert stats.exit_code == 0
    assert "vqa_rad" in stats.output and "train" in stats.output
    again = run("build", "vqa_rad", "--raw", raw, "--out", out, "--no-progress")
    assert "up to date" in again.output


def test_verify_fails_naming_the_changed_shard(built):
    _, out = built
    manifest = Manifest.load(out / "manifest.json")
    shard = out / manifest.shards[-1].path
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0xFF
    shard.write_bytes(bytes(data))
    result = run("verify", out / "manifest.json")
    assert result.exit_code == 1
    assert manifest.shards[-1].path in result.output


def test_verify_fails_on_a_missing_shard(built):
    _, out = built
    manifest = Manifest.load(out / "manifest.json")
    (out / manifest.shards[0].path).unlink()
    result = run("verify", out / "manifest.json")
    assert result.exit_code == 1 and f"{manifest.shards[0].path}: missing" in result.output


def test_build_of_an_absent_folder_is_one_clear_line(tmp_path):
    result = run("build", "vqa_rad", "--raw", tmp_path / "nope", "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert "no such folder" in result.output
    assert "Traceback" not in result.output


def test_unknown_source_is_refused(tmp_path):
    result = run("build", "imagenet", "--raw", tmp_path, "--out", tmp_path / "out")
    assert result.exit_code == 2 and "unknown source" in result.output


def test_stats_refuses_an_unknown_column(built):
    _, out = built
    result = run("stats", out / "manifest.json", "--by", "colour")
    assert result.exit_code == 2 and "colour" in result.output


@pytest.mark.slow  # builds the whole embedded default; the fresh-clone pipeline test builds it too, in the fast set
def test_build_embedded_writes_a_verified_manifest_and_a_card(tmp_path):
    out = tmp_path / "embedded"
    result = run("build-embedded", "--out", out, "--no-progress")
    assert result.exit_code == 0, result.output
    manifest = Manifest.load(out / "manifest.json")
    assert set(manifest.counts["source"]) == {"vqa_rad", "slake", "volumes", "cholec80_vqa"}
    # The stage-3 mix holds train rows only (VQA-RAD's 1,793 of 2,244; the 451 test rows stay staged).
    assert manifest.counts["split"] == {"train": 1834}
    assert manifest.counts["source"] == {"cholec80_vqa": 6, "slake": 25, "volumes": 10, "vqa_rad": 1793}
    # 3 real volumes x their rows in data/volumes/annotations.csv (10 rows).
    assert manifest.counts["visual_kind"]["volume"] == 10
    # Generated frames in the real Cholec80-VQA layout: 5 kept QA lines per video, 2 videos; video 5 is held out.
    assert manifest.counts["visual_kind"]["video"] == 6
    staged = Manifest.load(tmp_path / "embedded-sources" / "staged" / "vqa_rad" / "manifest.json")
    assert staged.counts["split"] == {"test": 451, "train": 1793}
    # Stages 1 and 2 beside it: the volumes' captions, then the 2D instructions.
    stage1 = Manifest.load(tmp_path / "embedded-stage1" / "manifest.json")
    assert stage1.counts["task"] == {"image_caption": 3} and stage1.options["recipe.stage"] == "1"
    stage2 = Manifest.load(tmp_path / "embedded-stage2" / "manifest.json")
    assert stage2.counts["source"] == {"slake": 25, "vqa_rad": 1793} and stage2.options["recipe.stage"] == "2"
    assert run("verify", out / "manifest.json").exit_code == 0
    card = (out / "README.md").read_text()
    assert "CC0-1.0" in card and "CC-BY-4.0" in card and "Apache-2.0 (TotalSegmentator" in card
    assert "## Samples by modality" in card and "GENERATED frames" in card


def test_sources_lists_builders_with_their_options():
    result = run("sources")
    assert result.exit_code == 0
    for name in ("vqa_rad", "m3d_cap", "volumes", "cholec80_vqa", "psiava_vqa"):
        assert name in result.output
    assert "-o preset=" in result.output and "-o clip_length=" in result.output


def test_build_options_are_parsed_and_bad_ones_refused(tmp_path):
    from omnivmed.surgical_demo import write_demo_tree

    raw = write_demo_tree(tmp_path / "raw")
    out = tmp_path / "out"
    result = run("build", "cholec80_vqa", "--raw", raw, "--out", out, "-o", "clip_length=4", "-o", "short_side=0", "--no-progress")
    assert result.exit_code == 0, result.output
    assert Manifest.load(out / "manifest.json").options["clip_length"] == "4"
    assert "clips padded" in result.output
    refused = run("build", "cholec80_vqa", "--raw", raw, "--out", out, "-o", "clip_length")
    assert refused.exit_code == 2 and "KEY=VALUE" in refused.output
    unknown = run("build", "cholec80_vqa", "--raw", raw, "--out", out, "-o", "colour=red")
    assert unknown.exit_code == 2 and "unknown option" in unknown.output


def test_windows_command_writes_captioning_inputs(tmp_path):
    from omnivmed.data.caption_windows import read_caption_inputs
    from omnivmed.surgical_demo import write_demo_tree

    raw = write_demo_tree(tmp_path / "raw")
    result = run("windows", "cholec80_vqa", "--raw", raw, "--out", tmp_path / "win", "--step", "4", "-o", "short_side=0", "--no-progress")
    assert result.exit_code == 0, result.output
    table = read_caption_inputs(tmp_path / "win" / "windows.arrow")
    assert table.num_rows > 0 and set(table.column("video").to_pylist()) == {"1", "5"}
    assert run("windows", "vqa_rad", "--raw", raw, "--out", tmp_path / "w2").exit_code == 2


def test_build_with_shared_frames_then_switching_back_rebuilds(tmp_path):
    raw = make_vqa_rad_subset(tmp_path / "raw", 30)
    out = tmp_path / "out"
    shared = run("build", "vqa_rad", "--raw", raw, "--out", out, "--frames", "shared", "--no-progress")
    assert shared.exit_code == 0, shared.output
    manifest = Manifest.load(out / "manifest.json")
    assert manifest.frame_table and (out / manifest.frame_table[0].path).is_file()
    verified = run("verify", out / "manifest.json")
    assert verified.exit_code == 0
    assert f"and a frame table (1 file, {manifest.frame_table[0].frames:,} frames)" in verified.output
    assert "up to date" in run("build", "vqa_rad", "--raw", raw, "--out", out, "--frames", "shared", "--no-progress").output
    plain = run("build", "vqa_rad", "--raw", raw, "--out", out, "--no-progress")
    assert plain.exit_code == 0 and "up to date" not in plain.output
    assert Manifest.load(out / "manifest.json").frame_table == [] and not (out / "frame-table").exists()


def test_build_refuses_an_unknown_frames_layout(tmp_path):
    raw = make_vqa_rad_subset(tmp_path / "raw", 5)
    result = run("build", "vqa_rad", "--raw", raw, "--out", tmp_path / "out", "--frames", "deduped")
    words = " ".join(result.output.replace("│", " ").split())
    assert result.exit_code == 2 and "'deduped' is not one of 'per-shard', 'shared'" in words
    assert not (tmp_path / "out").exists()
