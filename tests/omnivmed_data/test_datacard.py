"""The data card beside mixed shards: sources, counts, recipe and seed, rejects with reasons, stats.json."""

import json

import pytest
from support.raw_trees import VQA_RAD_IMAGES, VQA_RAD_JSON, make_vqa_rad_subset
from support.samples import build_named
from support.staged_sources import write_staged

from omnivmed.data.datacard import publish, render_datacard
from omnivmed.data.mix import mix_and_publish, plan_mix, reject_reports
from omnivmed.data.recipe import load_recipe


@pytest.fixture(scope="module")
def card(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("card")
    staged = tmp / "staged"
    raw = make_vqa_rad_subset(tmp / "raw", 30)
    # one image gone: its rows become missing-image rejects the card must explain
    rows = json.loads((raw / VQA_RAD_JSON).read_text())
    (raw / VQA_RAD_IMAGES / rows[0]["image_name"]).unlink()
    build_named("vqa_rad", raw, staged / "vqa_rad")
    write_staged(staged, "scans", {("train", "vqa", "ct"): 4, ("train", "image_caption", "mri"): 2}, kind="volume", license="CC-BY-4.0")
    write_staged(staged, "clips", {("train", "surgical_vqa", "endoscopy"): 5}, kind="video")
    recipe = tmp / "card.yaml"
    recipe.write_text(
        "name: cardmix\nseed: 5\nstage: 3\nsources:\n"
        "  vqa_rad: {take: 10, splits: [train, test]}\n  scans: {take: all}\n  clips: {take: 3}\n  absent: {take: 2}\n"
    )
    plan = plan_mix(load_recipe(recipe), staged, skip_missing=True)
    result = mix_and_publish(plan, tmp / "out", notes=["a note for readers"], progress=False)
    return tmp / "out", result, plan


def test_card_has_sources_counts_recipe_and_rejects(card):
    out, result, plan = card
    text = (out / "README.md").read_text()
    assert text.startswith("# cardmix\n")
    assert "| vqa_rad | CC0-1.0 |" in text and "| scans | CC-BY-4.0 |" in text and "Citation of clips" in text
    for axis in ("source", "split", "task", "modality", "visual kind"):
        assert f"## Samples by {axis}" in text
    assert "| vqa_rad | 10 |" in text and "| volume | 6 |" in text and "| video | 3 |" in text
    assert "recipe `card.yaml`" in text and f"sha256 `{result.manifest.recipe_sha256}`" in text and "seed 5" in text
    assert "| clips | clips | train | all | 3 | 5 | 3 | 3 |" in text
    assert "`absent` left out: no manifest at" in text
    reasons = {k for k in result.manifest.rejects if k.startswith("vqa_rad:")}
    assert reasons, result.manifest.rejects
    for reason in reasons:
        assert f"- rejected ({reason}): " in text
    assert "; e.g. `" in text  # an example record with its file and detail
    assert "| vqa_rad | train |" in text  # cross-count source x split
    assert "a note for readers" in text
    assert "[preview.html](preview.html)" in text
    for name in ("modalities_tasks", "token_lengths", "frames_per_sample"):
        assert f"(figures/{name}.png)" in text and (out / "figures" / f"{name}.png").is_file()


def test_stats_json_matches_the_manifest_and_the_frames(card):
    out, result, plan = card
    stats = json.loads((out / "stats.json").read_text())
    assert stats["rows"] == result.manifest.rows == 19
    assert stats["counts"] == result.manifest.counts
    assert stats["frames_per_sample"]["volume"]["values"] == {"6": 6}
    assert stats["frames_per_sample"]["video"]["values"] == {"5": 3}
    assert stats["frames_per_sample"]["image"]["values"] == {"1": 10}
    tokens = stats["tokens_per_sample"]
    assert tokens["samples"] == 19 and tokens["min"] >= 3 and "word pieces" in tokens["counted_with"]
    by = {tuple(sorted(k.split(","))): v for k, v in stats["by"].items()}
    assert sum(r["samples"] for r in by[("source", "split")]) == 19
    assert {(r["source"], r["split"]) for r in by[("source", "split")]} >= {("scans", "train"), ("clips", "train")}


def test_republishing_an_unchanged_set_rewrites_nothing(card):
    out, result, plan = card
    files = [out / "README.md", out / "stats.json", out / "preview.html", out / "figures" / "token_lengths.png"]
    stamps = [f.stat().st_mtime_ns for f in files]
    publish(result.manifest_path, notes=["a note for readers"], reject_reports=reject_reports(plan))
    assert [f.stat().st_mtime_ns for f in files] == stamps


def test_a_built_source_card_still_renders_without_a_recipe(tmp_path):
    raw = make_vqa_rad_subset(tmp_path / "raw", 12)
    manifest = build_named("vqa_rad", raw, tmp_path / "staged").manifest
    text = render_datacard(manifest)
    assert "## Recipe" not in text and "| vqa_rad | CC0-1.0 |" in text and "rejected: none" in text
