"""`instruct-dataset`: a fresh clone falls back to the embedded mix; generated sources in the real
layouts give the recipe's exact counts; the same seed gives the same bytes."""

from collections import Counter
from pathlib import Path

import pytest
from support.caption_fixtures import captioned_recipe
from support.m3d_trees import make_m3d_cap_tree, make_m3d_vqa_tree
from support.mimic_trees import write_mimic_tree
from support.pubmedvision_trees import alignment_rows_from_captions, image_bytes, row_images, vqa_row, write_tree
from support.raw_trees import PROJECT, make_vqa_rad_subset
from support.surgical_trees import make_cholec80_tree, make_endovis18_tree, make_psiava_tree
from typer.testing import CliRunner

from omnivmed.cli.data import app
from omnivmed.data.manifest import Manifest, verify_manifest
from omnivmed.pipeline import PipelineConfig, instruct_dataset
from omnivmed.data.shards import iter_samples

PAPER_RECIPE = PROJECT / "manifests" / "omnivmed-instruct.yaml"
MODALITIES = ("CT(Computed Tomography)", "MRI(Magnetic Resonance Imaging)", "Microscopy Images", "Digital Photography")

# The paper recipe's shape with counts that fit the generated trees.
RECIPE = """
name: tiny-instruct
seed: {seed}
stage: 3
sources:
  pubmedvision_instruction:
    take: 8
    tasks: [vqa]
    build: {{source: pubmedvision, raw: pubmedvision, options: {{subset: instruction}}}}
  m3d_cap:
    take: 3
    build: {{source: m3d_cap, raw: m3d_cap}}
  m3d_vqa:
    take: all
    build: {{source: m3d_vqa, raw: m3d_vqa}}
  vqa_rad:
    take: 0.5
    build: {{source: vqa_rad, raw: vqa_rad}}
  mimic_cxr_reports:
    staged: mimic_cxr
    take: all
    tasks: [report_generation]
    build: {{source: mimic_cxr, raw: mimic_cxr, options: {{tasks: "report,vqa"}}}}
  mimic_cxr_vqa:
    staged: mimic_cxr
    take: 1
    tasks: [vqa]
  cholec80_vqa:
    take: all
    build: {{source: cholec80_vqa, raw: cholec80_vqa, options: {{short_side: "0"}}}}
  endovis18_vqa:
    take: all
    build: {{source: endovis18_vqa, raw: endovis18_vqa, options: {{short_side: "0"}}}}
  psiava_vqa:
    take: 2
    build: {{source: psiava_vqa, raw: psiava_vqa, options: {{short_side: "0"}}}}
  cholec80_captions:
    take: all
    tasks: [video_caption]
    caption: {{windows_of: cholec80_vqa, raw: cholec80_vqa}}
"""


def instruction_rows(n: int = 12) -> list[dict]:
    return [
        vqa_row(f"pmv_{i}", [f"images/pmc_{7000 + i}_0.jpg"], [("human", f"<image>\nWhat is shown in case {i}?"), ("gpt", f"Finding number {i}.")], MODALITIES[i % 4], "Chest")
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    raw = tmp_path_factory.mktemp("sources") / "raw"
    make_vqa_rad_subset(raw / "vqa_rad", 60)
    make_m3d_cap_tree(raw / "m3d_cap")
    make_m3d_vqa_tree(raw / "m3d_vqa")
    make_cholec80_tree(raw / "cholec80_vqa")
    make_endovis18_tree(raw / "endovis18_vqa")
    make_psiava_tree(raw / "psiava_vqa")
    write_mimic_tree(raw / "mimic_cxr")
    alignment, instruction = alignment_rows_from_captions(), instruction_rows()
    write_tree(raw / "pubmedvision", alignment=alignment, instruction=instruction, images=image_bytes(row_images(alignment + instruction)))
    return raw


def run(tmp: Path, raw: Path, seed: int = 0, out: str = "out", staged: Path | None = None):
    recipe = tmp / f"tiny-{seed}.yaml"
    recipe.write_text(RECIPE.format(seed=seed))
    lines: list[str] = []
    config = PipelineConfig(recipe=recipe, raw_root=raw, staged_root=staged or tmp / "staged", out_root=tmp / out, manifests_dir=tmp / "manifests")
    return instruct_dataset(config, progress=False, say=lines.append), lines


@pytest.fixture(scope="module")
def first(raw, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    report, lines = run(tmp, raw)
    return tmp, report, lines


def samples(manifest_path: Path) -> list:
    manifest = Manifest.load(manifest_path)
    return [s for shard in manifest.shards for s in iter_samples(manifest_path.parent / shard.path)]


def test_generated_sources_give_the_recipes_exact_counts(first):
    tmp, report, lines = first
    assert not report.embedded
    m = report.result.manifest
    staged = tmp / "staged"
    train = lambda name, task=None: sum(  # noqa: E731
        1 for s in samples(staged / name / "manifest.json") if s.split == "train" and (task is None or s.task == task)
    )
    taken = {k.split(".")[1]: v for k, v in m.counters.items() if k.startswith("recipe.") and k.endswith(".taken")}
    expected = {
        "pubmedvision_instruction": 8,
        "m3d_cap": 3,
        "m3d_vqa": train("m3d_vqa"),
        "vqa_rad": (train("vqa_rad") + 1) // 2,  # 0.5 of the train rows, rounded half up
        "mimic_cxr_reports": train("mimic_cxr", "report_generation"),
        "mimic_cxr_vqa": 1,
        "cholec80_vqa": train("cholec80_vqa"),
        "endovis18_vqa": train("endovis18_vqa"),
        "psiava_vqa": 2,
    }
    assert taken == expected and all(v > 0 for v in expected.values())
    by_source = Counter(s.source for s in samples(report.result.manifest_path))
    assert by_source == {
        "pubmedvision": 8, "m3d_cap": 3, "m3d_vqa": expected["m3d_vqa"], "vqa_rad": expected["vqa_rad"],
        "mimic_cxr": expected["mimic_cxr_reports"] + 1, "cholec80_vqa": expected["cholec80_vqa"],
        "endovis18_vqa": expected["endovis18_vqa"], "psiava_vqa": 2,
    }
    assert m.counts["split"] == {"train": sum(expected.values())}
    assert {"image", "volume", "video"} <= set(m.counts["visual_kind"])
    # the caption entry: skipped without an endpoint, reported with how to get it, left out of the card
    assert any(line.startswith("caption: cholec80_captions: skipped, no endpoint configured") for line in lines)
    assert [name for name, _ in report.missing] == ["cholec80_captions"]
    assert "`cholec80_captions` left out" in (tmp / "out" / "tiny-instruct" / "README.md").read_text()
    assert verify_manifest(tmp / "manifests" / "tiny-instruct.manifest.json") == []
    for name in ("README.md", "stats.json", "preview.html", "figures/modalities_tasks.png"):
        assert (tmp / "out" / "tiny-instruct" / name).is_file()


def test_same_seed_same_bytes_other_seed_same_counts_other_draw(first, raw, tmp_path):
    tmp, report, _ = first
    again, _ = run(tmp_path, raw, out="again", staged=tmp / "staged")
    a, b = report.result, again.result
    assert [s.sha256 for s in a.manifest.shards] == [s.sha256 for s in b.manifest.shards]
    for shard in a.manifest.shards:
        assert (a.manifest_path.parent / shard.path).read_bytes() == (b.manifest_path.parent / shard.path).read_bytes()
    other, _ = run(tmp_path, raw, seed=4, out="other", staged=tmp / "staged")
    assert other.result.manifest.counts == a.manifest.counts
    assert {s.id for s in samples(other.result.manifest_path)} != {s.id for s in samples(a.manifest_path)}


def test_a_rerun_builds_and_mixes_nothing(first, raw):
    tmp, report, _ = first
    again, lines = run(tmp, raw)
    assert again.result.reused
    assert all("up to date" in line for line in lines if line.startswith("build: "))


def test_fresh_clone_falls_back_to_the_embedded_mix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["instruct-dataset", "--recipe", str(PAPER_RECIPE), "--no-progress"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "out" / "omnivmed-embedded"
    for name in ("README.md", "stats.json", "preview.html", "figures/modalities_tasks.png", "figures/token_lengths.png", "figures/frames_per_sample.png"):
        assert (out / name).is_file(), name
    published = tmp_path / "manifests" / "omnivmed-embedded.manifest.json"
    assert runner.invoke(app, ["verify", str(published)]).exit_code == 0
    m = Manifest.load(published)
    assert m.counts["source"] == {"cholec80_vqa": 6, "slake": 25, "volumes": 10, "vqa_rad": 1793}  # train rows
    for stage in (1, 2):
        assert (tmp_path / "manifests" / f"omnivmed-embedded-stage{stage}.manifest.json").is_file()
    assert m.recipe == "omnivmed-embedded.yaml" and m.seed == 0
    text = " ".join(result.output.split())
    assert "building the embedded default instead" in text
    assert "missing: vqa_rad: `omnivmed-data download vqa_rad --to raw/vqa_rad`" in text
    assert "missing: mimic_cxr_reports: gated: request access at" in text
    assert "missing: m3d_cap: bring your own copy" in text
    assert "caption: cholec80_captions: skipped, no endpoint configured" in text
    # the shards of the mix alone sit under out/omnivmed-embedded (the staged sources beside it)
    assert not (out / "staged").exists() and (tmp_path / "out" / "omnivmed-embedded-sources" / "staged" / "vqa_rad").is_dir()


def test_strict_mode_fails_on_a_missing_source(first, raw, tmp_path):
    tmp, _, _ = first
    recipe = tmp_path / "strict.yaml"
    recipe.write_text(RECIPE.format(seed=0))
    result = CliRunner().invoke(
        app,
        ["instruct-dataset", "--recipe", str(recipe), "--raw", str(raw), "--staged", str(tmp / "staged"),
         "--out-root", str(tmp_path / "o"), "--manifests", str(tmp_path / "m"), "--strict", "--no-progress"],
    )
    assert result.exit_code == 2
    assert "sources.cholec80_captions: no manifest at" in " ".join(result.output.split())


CAPTION_RECIPE = captioned_recipe(step=2)


def caption_config_file(path: Path, base_url: str) -> Path:
    """The captioner's config format: a generator and two judges on one local scripted server."""
    import yaml

    def endpoint(name: str) -> dict:
        return {"name": name, "base_url": base_url, "model": f"model-{name}", "api_key_env": None, "backoff_s": 0.01, "max_backoff_s": 0.05, "timeout_s": 5.0}

    config = {
        "generator": endpoint("gen"),
        "judges": [{**endpoint("vision"), "kind": "multimodal"}, {**endpoint("text"), "kind": "text"}],
        "candidates": 2,
        "extra_rounds": 1,
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_with_an_endpoint_the_judged_captions_are_made_and_mixed(tmp_path):
    from support.caption_fixtures import Script

    from omnivmed.surgical_demo import write_demo_tree
    from omnivmed.rejection_sampling.server import LocalServer

    # the embedded demo tree: two videos whose windows all hold QA lines (the captioner needs them)
    raw = tmp_path / "raw"
    write_demo_tree(raw / "cholec80_vqa")
    recipe = tmp_path / "captioned.yaml"
    recipe.write_text(CAPTION_RECIPE)
    lines: list[str] = []
    with LocalServer(Script()) as server:
        config = PipelineConfig(
            recipe=recipe,
            raw_root=raw,
            staged_root=tmp_path / "staged",
            out_root=tmp_path / "out",
            manifests_dir=None,
            caption_endpoint=str(caption_config_file(tmp_path / "caption.yaml", server.base_url)),
        )
        report = instruct_dataset(config, progress=False, say=lines.append)
    captions = Manifest.load(tmp_path / "staged" / "cholec80_captions" / "manifest.json")
    accepted = captions.counts["task"]["video_caption"]
    assert accepted > 0 and report.missing == []
    assert any(line.startswith("caption: cholec80_captions: ") and "judged captions accepted" in line for line in lines)
    m = report.result.manifest
    assert m.counters["recipe.cholec80_captions.taken"] == accepted
    assert m.counts["task"]["video_caption"] == accepted
    # the captions keep the window's source, so both entries count under cholec80_vqa
    assert m.counts["source"] == {"cholec80_vqa": accepted + m.counters["recipe.cholec80_vqa.taken"]}


@pytest.mark.slow
def test_a_captioned_recipe_on_two_workers_writes_the_plain_bytes(tmp_path):
    """instruct-dataset --workers 2: the builds, the windows, the caption run and the mix spread; the same bytes."""
    import hashlib

    from support.caption_fixtures import Script

    from omnivmed.surgical_demo import write_demo_tree
    from omnivmed.rejection_sampling.server import LocalServer

    raw = tmp_path / "raw"
    write_demo_tree(raw / "cholec80_vqa")
    recipe = tmp_path / "captioned.yaml"
    recipe.write_text(CAPTION_RECIPE)

    def run(name: str, workers: int) -> dict[str, str]:
        root = tmp_path / name
        root.mkdir()
        with LocalServer(Script()) as server:
            config = PipelineConfig(
                recipe=recipe, raw_root=raw, staged_root=root / "staged", out_root=root / "out", manifests_dir=None,
                caption_endpoint=str(caption_config_file(root / "caption.yaml", server.base_url)), workers=workers,
            )
            instruct_dataset(config, progress=False, say=lambda line: None)
            asked = server.keys()
        assert len(asked) == len(set(asked))  # no request asked twice
        files = [p for p in sorted(root.rglob("*")) if p.is_file() and (p.suffix == ".arrow" or p.name in ("manifest.json", "rejects.jsonl", "summary.json"))]
        return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files if "clips" not in p.parts}

    plain = run("plain", 1)
    assert any(path.startswith("staged/cholec80_captions/") for path in plain)
    assert run("workers", 2) == plain
