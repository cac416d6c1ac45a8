"""Recipes: the committed ones load, and every kind of bad input is one clear error before any work."""

from pathlib import Path

import pytest
from support.raw_trees import PROJECT

from omnivmed.data.recipe import RecipeError, Take, load_recipe

MANIFESTS = PROJECT / "manifests"
GOOD = """
name: tiny
seed: 7
stage: 2
sources:
  vqa_rad:
    take: 10
  slake:
    take: 0.5
    splits: [train, validation]
    tasks: [vqa]
  pathvqa:
    take: all
    staged: pathvqa_copy
    build: {source: pathvqa, raw: pvqa, options: {x: 1}}
"""


def write(tmp_path: Path, text: str, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_good_recipe_is_typed(tmp_path):
    recipe = load_recipe(write(tmp_path, GOOD))
    assert (recipe.name, recipe.seed, recipe.stage, recipe.balance, recipe.on_shortfall) == ("tiny", 7, 2, "proportional", "fail")
    vqa_rad, slake, pathvqa = recipe.entries
    assert vqa_rad.take == Take(count=10) and vqa_rad.splits == ("train",) and vqa_rad.tasks is None and vqa_rad.stage == 2
    assert slake.take == Take(fraction=0.5) and slake.splits == ("train", "validation") and slake.tasks == ("vqa",)
    assert pathvqa.take == Take() and pathvqa.manifest_path(Path("st")) == Path("st/pathvqa_copy/manifest.json")
    assert pathvqa.build.source == "pathvqa" and pathvqa.build.raw == "pvqa" and pathvqa.build.options == (("x", "1"),)
    assert recipe.file_name == "r.yaml" and len(recipe.sha256) == 64


def test_take_resolves_counts_fractions_and_all():
    assert Take(count=5).wanted(100) == 5
    assert Take(fraction=0.25).wanted(10) == 3  # 2.5 rounds half up
    assert Take(fraction=0.24).wanted(10) == 2
    assert Take().wanted(42) == 42


def test_the_committed_recipes_load_and_encode_the_papers_numbers():
    for path in sorted(MANIFESTS.glob("*.yaml")):
        load_recipe(path)
    paper = load_recipe(MANIFESTS / "omnivmed-instruct.yaml")
    by_name = {e.name: e for e in paper.entries}
    assert paper.stage == 3 and paper.name == "omnivmed-instruct"
    assert by_name["pubmedvision_instruction"].take == Take(count=70000)
    assert by_name["pubmedvision_instruction"].build.options == (("subset", "instruction"),)
    assert by_name["m3d_cap"].take.count + by_name["m3d_vqa"].take.count == 75000
    for name in ("vqa_rad", "slake", "pathvqa", "cholec80_vqa", "endovis18_vqa", "psiava_vqa"):
        assert by_name[name].take == Take() and by_name[name].splits == ("train",)
    assert {e.tasks for e in paper.entries if e.caption} == {("video_caption",)}
    assert {by_name["mimic_cxr_reports"].staged, by_name["mimic_cxr_vqa"].staged} == {"mimic_cxr"}
    stage1 = load_recipe(MANIFESTS / "stage1.yaml")
    stage2 = load_recipe(MANIFESTS / "stage2.yaml")
    assert stage1.stage == 1 and stage1.entries[0].build.options == (("subset", "alignment"),)
    assert stage1.entries[0].tasks == ("image_caption",)
    assert stage2.stage == 2 and stage2.entries[0].build.options == (("subset", "instruction"),)
    assert stage2.entries[0].tasks == ("vqa",)


@pytest.mark.parametrize(
    "text, words",
    [
        ("name: x\nsources: {a: {take: 1}}\ncolour: red\n", ["unknown key(s) colour"]),
        ("name: x\nsources: {a: {take: 1, weight: 2}}\n", ["sources.a", "unknown key(s) weight"]),
        ("name: x\nsources: {a: {take: -3}}\n", ["sources.a.take", "count -3 must be at least 1"]),
        ("name: x\nsources: {a: {take: 0}}\n", ["sources.a.take", "at least 1"]),
        ("name: x\nsources: {a: {take: 1.5}}\n", ["sources.a.take", "fraction 1.5 must lie in (0, 1]"]),
        ("name: x\nsources: {a: {take: 0.0}}\n", ["fraction 0.0"]),
        ("name: x\nsources: {a: {take: true}}\n", ["sources.a.take", "True"]),
        ("name: x\nsources: {a: {take: some}}\n", ["'some' is not 'all'"]),
        ("name: x\nsources: {a: {}}\n", ["sources.a", "missing 'take'"]),
        ("name: x\nsources: {a: {take: 1, splits: [training]}}\n", ["sources.a.splits", "'training'"]),
        ("name: x\nsources: {a: {take: 1, tasks: [segmentation]}}\n", ["sources.a.tasks", "'segmentation'"]),
        ("name: x\nsources: {a: {take: 1, stage: 4}}\n", ["sources.a.stage", "4"]),
        ("name: x\nseed: -1\nsources: {a: {take: 1}}\n", ["seed -1"]),
        ("name: x\nbalance: random\nsources: {a: {take: 1}}\n", ["balance", "'random'"]),
        ("name: x\non_shortfall: ignore\nsources: {a: {take: 1}}\n", ["on_shortfall", "'ignore'"]),
        ("name: Bad/Name\nsources: {a: {take: 1}}\n", ["name 'Bad/Name'"]),
        ("name: x\n", ["missing 'sources'"]),
        ("sources: {a: {take: 1}}\n", ["missing 'name'"]),
        ("name: x\nsources: {}\n", ["non-empty mapping"]),
        ("name: x\nsources:\n  a: {take: 1}\n  a: {take: 2}\n", ["not valid YAML", "given twice"]),
        ("name: x\nsources: {a: {take: 1, build: {raw: r}}}\n", ["sources.a.build", "missing 'source'"]),
        ("name: x\nsources: {a: {take: 1, caption: {windows_of: c, step: 0}}}\n", ["sources.a.caption.step"]),
        ("name: x\nsources: [a, b]\n", ["non-empty mapping"]),
        ("name: [x\n", ["not valid YAML"]),
        ("- 1\n- 2\n", ["a recipe is a mapping"]),
    ],
)
def test_bad_recipes_name_the_file_and_the_reason(tmp_path, text, words):
    path = write(tmp_path, text)
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    message = str(err.value)
    assert str(path) in message
    for word in words:
        assert word in message, message


def test_two_entries_drawing_from_one_manifest_must_not_overlap(tmp_path):
    overlapping = "name: x\nsources:\n  a: {staged: s, take: 1}\n  b: {staged: s, take: 1, tasks: [vqa]}\n"
    with pytest.raises(RecipeError, match="sources.a and sources.b read the same staged manifest"):
        load_recipe(write(tmp_path, overlapping))
    disjoint = "name: x\nsources:\n  a: {staged: s, take: 1, tasks: [report_generation]}\n  b: {staged: s, take: 1, tasks: [vqa]}\n"
    assert len(load_recipe(write(tmp_path, disjoint, "ok.yaml")).entries) == 2
    other_split = "name: x\nsources:\n  a: {staged: s, take: 1}\n  b: {staged: s, take: 1, splits: [test]}\n"
    assert len(load_recipe(write(tmp_path, other_split, "ok2.yaml")).entries) == 2


def test_a_missing_recipe_file_is_named(tmp_path):
    with pytest.raises(RecipeError, match="no such recipe"):
        load_recipe(tmp_path / "nope.yaml")
