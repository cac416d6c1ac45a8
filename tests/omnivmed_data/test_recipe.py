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


# --- filters ---------------------------------------------------------------------------

FILTERED = """
name: filtered
sources:
  vqa_rad:
    take: all
    filter:
      modalities: [ct, mri]
      answer_types: closed
      question_types: [PRES, Organ, 3]
      visual_kinds: [image, volume]
      min_frames: 1
      max_frames: 32
      max_tokens: 2048
      tokenizer: qwen2.5
"""


def test_a_filter_is_typed_and_described(tmp_path):
    (entry,) = load_recipe(write(tmp_path, FILTERED)).entries
    f = entry.filter
    assert (f.modalities, f.answer_types, f.visual_kinds) == (("ct", "mri"), ("closed",), ("image", "volume"))
    assert f.question_types == ("pres", "organ", "3")  # the sources' labels, compared lower-cased
    assert (f.min_frames, f.max_frames, f.min_tokens, f.max_tokens, f.tokenizer) == (1, 32, None, 2048, "qwen2.5")
    assert f.describe() == (
        "modalities ct,mri; answer types closed; question types pres,organ,3; visual kinds image,volume; "
        "frames 1-32; tokens <= 2048 (qwen2.5)"
    )
    assert load_recipe(write(tmp_path, "name: x\nsources: {a: {take: 1}}\n", "plain.yaml")).entries[0].filter is None


@pytest.mark.parametrize(
    "filter_text, words",
    [
        ("{colour: red}", ["sources.a.filter", "unknown key(s) colour", "known: answer_types"]),
        ("[ct]", ["sources.a.filter", "non-empty mapping"]),
        ("{}", ["sources.a.filter", "non-empty mapping"]),
        ("{modalities: [cat]}", ["sources.a.filter.modalities", "'cat' is not one of ct, mri", "unspecified"]),
        ("{modalities: []}", ["sources.a.filter.modalities", "non-empty list"]),
        ("{answer_types: [yes_no]}", ["sources.a.filter.answer_types", "'yes_no' is not one of open, closed"]),
        ("{visual_kinds: [photo]}", ["sources.a.filter.visual_kinds", "'photo' is not one of image, multi_image, volume"]),
        ("{question_types: ['']}", ["sources.a.filter.question_types", "'' is not a label"]),
        ("{question_types: [[organ]]}", ["sources.a.filter.question_types", "is not a label"]),
        ("{min_frames: -1}", ["sources.a.filter.min_frames", "-1 must be an integer >= 0"]),
        ("{max_frames: 2.5}", ["sources.a.filter.max_frames", "2.5 must be an integer"]),
        ("{max_frames: true}", ["sources.a.filter.max_frames", "True must be an integer"]),
        ("{min_frames: 8, max_frames: 2}", ["sources.a.filter", "min_frames 8 is above max_frames 2"]),
        ("{min_tokens: 9, max_tokens: 3, tokenizer: qwen2.5}", ["min_tokens 9 is above max_tokens 3"]),
        ("{max_tokens: 2048}", ["sources.a.filter", "need a tokenizer (one of qwen2.5)"]),
        ("{max_tokens: 2048, tokenizer: gpt2}", ["sources.a.filter.tokenizer", "'gpt2' is not one of qwen2.5"]),
        ("{max_tokens: 2048, tokenizer: 7}", ["sources.a.filter.tokenizer", "7 is not a tokenizer name"]),
        ("{tokenizer: qwen2.5}", ["sources.a.filter.tokenizer", "counts nothing without min_tokens or max_tokens"]),
    ],
)
def test_bad_filters_are_one_line_naming_file_entry_and_key(tmp_path, filter_text, words):
    path = write(tmp_path, f"name: x\nsources:\n  a:\n    take: 1\n    filter: {filter_text}\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: sources.a.filter"), message
    for word in words:
        assert word in message, message


def test_entries_on_one_manifest_may_share_splits_when_their_filters_are_disjoint(tmp_path):
    def entries(a: str, b: str) -> str:
        return f"name: x\nsources:\n  a: {{staged: s, take: 1, filter: {a}}}\n  b: {{staged: s, take: 1, filter: {b}}}\n"

    disjoint = [
        ("{answer_types: [open]}", "{answer_types: [closed]}"),
        ("{modalities: [ct]}", "{modalities: [mri], answer_types: [open]}"),
        ("{max_frames: 1}", "{min_frames: 2}"),
        ("{max_tokens: 99, tokenizer: qwen2.5}", "{min_tokens: 100, tokenizer: qwen2.5}"),
    ]
    for i, (a, b) in enumerate(disjoint):
        assert len(load_recipe(write(tmp_path, entries(a, b), f"ok{i}.yaml")).entries) == 2
    overlapping = [
        ("{answer_types: [open]}", "{answer_types: [open, closed]}"),
        ("{max_frames: 2}", "{min_frames: 2}"),
        ("{question_types: [pres]}", "{question_types: [pos]}"),  # VQA-RAD's "PRES, POS" is both
        ("{modalities: [ct]}", "{answer_types: [open]}"),
    ]
    for i, (a, b) in enumerate(overlapping):
        with pytest.raises(RecipeError, match="overlapping splits and tasks; give them disjoint 'tasks', 'splits' or filters"):
            load_recipe(write(tmp_path, entries(a, b), f"bad{i}.yaml"))
