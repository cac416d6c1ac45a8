"""The mix: stratified seeded draws, exact counts, byte-identical re-runs, errors before any work."""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from support.staged_sources import write_staged
from typer.testing import CliRunner

from omnivmed.cli.data import app
from omnivmed.data.draw import allocate, draw
from omnivmed.data.manifest import Manifest, verify_manifest
from omnivmed.data.mix import MixError, plan_mix, run_mix
from omnivmed.data.recipe import load_recipe
from omnivmed.data.shards import iter_samples

ALPHA = {("train", "vqa", "ct"): 60, ("train", "vqa", "mri"): 30, ("train", "report_generation", "ct"): 10, ("test", "vqa", "ct"): 7}
BETA = {("train", "surgical_vqa", "endoscopy"): 12, ("validation", "surgical_vqa", "endoscopy"): 3}


@pytest.fixture
def staged(tmp_path) -> Path:
    root = tmp_path / "staged"
    write_staged(root, "alpha", ALPHA)
    write_staged(root, "beta", BETA, kind="video")
    return root


def recipe(tmp_path: Path, sources: str, *, seed: int = 0, extra: str = "", name: str = "r.yaml"):
    path = tmp_path / name
    path.write_text(f"name: mixed\nseed: {seed}\n{extra}sources:\n{sources}")
    return load_recipe(path)


SOURCES = "  alpha: {take: 50}\n  beta: {take: all}\n"


def mix(tmp_path, staged, sources=SOURCES, out="out", **kw):
    r = recipe(tmp_path, sources, **kw)
    return run_mix(plan_mix(r, staged), tmp_path / out, manifests_dir=tmp_path / "manifests", progress=False)


def rows(manifest_path: Path) -> list:
    manifest = Manifest.load(manifest_path)
    return [s for shard in manifest.shards for s in iter_samples(manifest_path.parent / shard.path)]


# --- allocation and draws -----------------------------------------------------------


def test_proportional_allocation_is_exact_and_never_exceeds_a_stratum():
    sizes = {("vqa", "ct"): 60, ("vqa", "mri"): 30, ("rg", "ct"): 10}
    assert allocate(sizes, 50) == {("vqa", "ct"): 30, ("vqa", "mri"): 15, ("rg", "ct"): 5}
    for wanted in range(0, 101):
        alloc = allocate(sizes, wanted)
        assert sum(alloc.values()) == wanted and all(alloc[k] <= sizes[k] for k in sizes)
        # within one sample of the exact proportional quota
        assert all(abs(alloc[k] - wanted * sizes[k] / 100) < 1 for k in sizes)
    with pytest.raises(ValueError, match="cannot draw 101"):
        allocate(sizes, 101)


def test_equal_allocation_fills_small_strata_first():
    sizes = {("a", "x"): 2, ("b", "x"): 50, ("c", "x"): 50}
    assert allocate(sizes, 30, "equal") == {("a", "x"): 2, ("b", "x"): 14, ("c", "x"): 14}
    odd = allocate(sizes, 31, "equal")
    assert odd[("a", "x")] == 2 and sorted([odd[("b", "x")], odd[("c", "x")]]) == [14, 15]
    assert sum(allocate(sizes, 102, "equal").values()) == 102


def test_draws_depend_on_seed_and_entry_only():
    members = {("vqa", "ct"): np.arange(0, 100, 2), ("vqa", "mri"): np.arange(1, 100, 2)}
    counts = {("vqa", "ct"): 10, ("vqa", "mri"): 5}
    a = draw(members, counts, seed=1, entry="x")
    # Pinned: the rows a recipe seed picks are the same in every process and on every machine
    # (a second call in this process could not see a seed taken from hash() or the clock).
    assert a.tolist() == [9, 21, 32, 37, 38, 50, 66, 69, 70, 74, 80, 82, 84, 87, 94]
    assert not np.array_equal(a, draw(members, counts, seed=2, entry="x"))
    assert not np.array_equal(a, draw(members, counts, seed=1, entry="y"))
    assert len(a) == 15 and np.all(np.diff(a) > 0)
    assert np.sum(a % 2 == 0) == 10


# --- mixing --------------------------------------------------------------------------


def test_counts_per_source_and_stratum_are_the_recipes(tmp_path, staged):
    result = mix(tmp_path, staged)
    m = result.manifest
    assert m.counts["source"] == {"alpha": 50, "beta": 12}
    assert m.counts["split"] == {"train": 62}  # default splits: train only
    samples = rows(result.manifest_path)
    strata = Counter((s.source, s.task, s.modality) for s in samples)
    assert strata == {("alpha", "vqa", "ct"): 30, ("alpha", "vqa", "mri"): 15, ("alpha", "report_generation", "ct"): 5, ("beta", "surgical_vqa", "endoscopy"): 12}
    assert len({s.id for s in samples}) == 62
    assert m.counters["recipe.alpha.available"] == 100 and m.counters["recipe.alpha.taken"] == 50
    assert m.recipe == "r.yaml" and m.seed == 0 and len(m.recipe_sha256) == 64
    assert [c.name for c in m.sources] == ["alpha", "beta"]
    assert verify_manifest(result.manifest_path) == []
    # the copy under manifests/ points at the same shards and verifies too
    assert result.published_path == tmp_path / "manifests" / "mixed.manifest.json"
    published = Manifest.load(result.published_path)
    assert all(s.path.startswith("../out/") for s in published.shards)
    assert verify_manifest(result.published_path) == []


def test_same_seed_gives_the_same_bytes_another_seed_another_draw(tmp_path, staged):
    first = mix(tmp_path, staged, out="a")
    second = mix(tmp_path, staged, out="b")
    other = mix(tmp_path, staged, out="c", seed=9)
    assert first.manifest_path.read_bytes() == second.manifest_path.read_bytes()
    for shard in first.manifest.shards:
        assert (tmp_path / "a" / shard.path).read_bytes() == (tmp_path / "b" / shard.path).read_bytes()
    assert other.manifest.counts == first.manifest.counts
    ids = lambda r: {s.id for s in rows(r.manifest_path) if s.source == "alpha"}  # noqa: E731
    assert ids(other) != ids(first)
    # beta is taken whole: every seed takes the same rows
    beta = lambda r: {s.id for s in rows(r.manifest_path) if s.source == "beta"}  # noqa: E731
    assert beta(other) == beta(first)


def test_splits_tasks_and_fractions_select_the_pool(tmp_path, staged):
    sources = "  alpha: {take: 0.5, splits: [train, test], tasks: [vqa]}\n  beta: {take: 2, splits: [validation]}\n"
    m = mix(tmp_path, staged, sources).manifest
    assert m.counts["task"] == {"vqa": 49, "surgical_vqa": 2}  # half of 97 vqa rows, rounded half up
    # strata are task x modality: the split is not a stratum, so test rows come in by the draw
    assert m.counts["split"]["validation"] == 2 and m.counts["split"]["train"] + m.counts["split"]["test"] == 49
    assert m.counts["modality"] == {"ct": 34, "endoscopy": 2, "mri": 15}  # 49 x 67/97 = 33.8, 49 x 30/97 = 15.2


def test_a_shortfall_fails_before_any_output_naming_source_and_shortfall(tmp_path, staged):
    r = recipe(tmp_path, "  alpha: {take: 500}\n  beta: {take: 20}\n")
    with pytest.raises(MixError) as err:
        plan_mix(r, staged)
    message = str(err.value)
    assert "sources.alpha asks for 500 train samples" in message and "has 100: short by 400" in message
    assert "sources.beta asks for 20" in message and "short by 8" in message
    assert str(tmp_path / "r.yaml") in message
    assert not (tmp_path / "out").exists()


def test_take_all_on_shortfall_takes_everything_and_reports_it(tmp_path, staged):
    result = mix(tmp_path, staged, "  alpha: {take: 500}\n  beta: {take: 5}\n", extra="on_shortfall: take_all\n")
    m = result.manifest
    assert m.counts["source"] == {"alpha": 100, "beta": 5}
    assert m.counters["recipe.alpha.shortfall"] == 400 and "recipe.beta.shortfall" not in m.counters


def test_a_missing_staged_source_is_named_before_any_work(tmp_path, staged):
    r = recipe(tmp_path, SOURCES + "  gamma: {take: 3}\n  delta: {take: 1, manifest: elsewhere/m.json}\n")
    with pytest.raises(MixError) as err:
        plan_mix(r, staged)
    assert "2 staged source(s) missing" in str(err.value)
    assert f"sources.gamma: no manifest at {staged / 'gamma' / 'manifest.json'}" in str(err.value)
    assert str(staged / "elsewhere" / "m.json") in str(err.value)
    plan = plan_mix(r, staged, skip_missing=True)
    assert [e.name for e, _ in plan.missing] == ["gamma", "delta"]
    m = run_mix(plan, tmp_path / "out", progress=False).manifest
    assert m.counts["source"] == {"alpha": 50, "beta": 12}
    assert "no manifest at" in m.options["recipe.gamma.left_out"]


def test_a_damaged_staged_shard_is_refused_before_any_work(tmp_path, staged):
    manifest = Manifest.load(staged / "alpha" / "manifest.json")
    shard = staged / "alpha" / manifest.shards[0].path
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(MixError, match="bytes, the manifest says"):
        plan_mix(recipe(tmp_path, SOURCES), staged)


def test_a_rerun_with_nothing_changed_does_nothing_and_a_changed_input_redoes(tmp_path, staged):
    first = mix(tmp_path, staged)
    shard = tmp_path / "out" / first.manifest.shards[0].path
    stamp = shard.stat().st_mtime_ns
    again = mix(tmp_path, staged)
    assert again.reused and shard.stat().st_mtime_ns == stamp
    write_staged(staged, "beta", BETA, kind="video", variant=1)  # same counts, other frames
    redone = mix(tmp_path, staged)
    assert not redone.reused and redone.manifest.counts == first.manifest.counts
    assert redone.manifest.shards != first.manifest.shards
    assert verify_manifest(redone.manifest_path) == []


def test_cli_mix_writes_shards_card_and_manifest_and_refuses_bad_recipes(tmp_path, staged):
    good = tmp_path / "good.yaml"
    good.write_text("name: climix\nseed: 1\nsources:\n  alpha: {take: 20}\n  beta: {take: all}\n")
    runner = CliRunner()
    args = ["--staged", str(staged), "--out", str(tmp_path / "out"), "--manifests", str(tmp_path / "m"), "--no-progress"]
    result = runner.invoke(app, ["mix", str(good), *args])
    assert result.exit_code == 0, result.output
    assert "alpha: 20 of 100 train samples" in result.output
    assert (tmp_path / "m" / "climix.manifest.json").is_file()
    assert (tmp_path / "out" / "README.md").is_file() and (tmp_path / "out" / "preview.html").is_file()
    assert runner.invoke(app, ["verify", str(tmp_path / "m" / "climix.manifest.json")]).exit_code == 0
    again = runner.invoke(app, ["mix", str(good), *args])
    assert "up to date" in again.output

    short = tmp_path / "short.yaml"
    short.write_text("name: climix\nsources:\n  alpha: {take: 1000}\n")
    refused = runner.invoke(app, ["mix", str(short), *args])
    assert refused.exit_code == 2 and "short by 900" in refused.output and "Traceback" not in refused.output
    took = runner.invoke(app, ["mix", str(short), *args, "--take-all"])
    assert took.exit_code == 0 and "900 short, took all" in took.output

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: climix\nsources:\n  alpha: {take: 1.5}\n")
    refused = runner.invoke(app, ["mix", str(bad), *args])
    assert refused.exit_code == 2 and "bad.yaml" in refused.output and "fraction 1.5" in refused.output
    assert runner.invoke(app, ["mix", "--help"]).exit_code == 0


def test_mixed_shards_load_with_datasets(tmp_path, staged):
    import datasets

    result = mix(tmp_path, staged)
    loaded = datasets.load_dataset("arrow", data_dir=str(tmp_path / "out"), cache_dir=str(tmp_path / "hf-cache"))
    assert loaded["train"].num_rows == 62
    assert json.loads(result.manifest_path.read_text())["name"] == "mixed"


def test_a_staged_build_with_shared_frames_mixes_into_the_same_rows(tmp_path, staged):
    """A source built with ``--frames shared`` (shards referencing a frame table) draws the same samples."""
    from dataclasses import replace

    from omnivmed.data.output import OutputWriter
    from omnivmed.data.shards import open_shard

    shared_root = tmp_path / "staged_shared"
    for name in ("alpha", "beta"):
        manifest = Manifest.load(staged / name / "manifest.json")
        with OutputWriter(shared_root / name, shared_frames=True) as writer:
            for shard in manifest.shards:
                for row in open_shard(staged / name / shard.path).to_pylist():
                    writer.write_row(row)
            written = writer.finish(replace(manifest, shards=[], frame_table=[]))
        assert written.frame_table and written.counts == manifest.counts
    plain = mix(tmp_path, staged, out="plain")
    shared = mix(tmp_path, shared_root, out="shared")
    assert rows(plain.manifest_path) == rows(shared.manifest_path)
    assert verify_manifest(shared.manifest_path) == []
