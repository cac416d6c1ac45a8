"""A stage folder runs as itself: the project's class and transformers' AutoModel (remote code) give the
training forward's logits, and generate answers images, volumes and clips read by the builders' readers."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch

from omnivmed.data.schema import Provenance, Turn, make_sample
from omnivmed.trainer.config import ConfigError
from omnivmed.trainer.data.batch import collate, collate_packed, make_example
from omnivmed.trainer.data.chat import ChatEncoder
from omnivmed.trainer.inference import (
    InputError, Query, Runner, Settings, Visual, logits, question_turns, read_clip, read_images, read_volume,
)  # fmt: skip
from omnivmed.trainer.model.omnivmed import load_model, load_omnivmed
from omnivmed.trainer.model.remote import REMOTE_MODULE, SOURCE, add_remote_code

REPO = Path(__file__).resolve().parents[2]
VOLUMES = REPO / "data" / "volumes"  # with annotations.csv naming each volume's modality
IMAGES = sorted((REPO / "data" / "vqa_rad" / "VQA_RAD Image Folder").glob("*.jpg"))[:2]
TOLERANCE = 1e-5


def auto_model(folder: Path):
    from transformers import AutoModel

    return AutoModel.from_pretrained(str(folder), trust_remote_code=True)


@pytest.fixture(scope="module")
def stage(tiny_model, tmp_path_factory) -> Path:
    """A stage folder (OUT/stage1/model) with no run config beside it: the tiny preset's data defaults."""
    folder = tmp_path_factory.mktemp("run") / "stage1" / "model"
    tiny_model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def runner(stage) -> Runner:
    return Runner.load(stage)


@pytest.fixture(scope="module")
def remote(stage):
    return auto_model(stage)


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory) -> Path:
    from support.video_files import write_index_video

    return write_index_video(tmp_path_factory.mktemp("video") / "clip.mp4", 50, size=(96, 128))


@pytest.fixture(scope="module")
def visuals(clip_file) -> dict[str, Visual]:
    return {
        "image": read_images(IMAGES[:1]),
        "multi_image": read_images(IMAGES),
        "volume": read_volume(VOLUMES / "example_ct_sm.nii.gz", modality="ct"),
        "video": read_clip(clip_file, start=0.4, end=1.2),
    }


def training_batch(runner: Runner, visuals: dict[str, Visual], packed: bool = False):
    examples = []
    for kind, visual in visuals.items():
        turns = question_turns("Which organ is shown?", visual) + (Turn("assistant", "The liver, in the upper lobe."),)
        sample = make_sample(
            source="test", split="train", task="vqa", modality="ct", visual_kind=visual.kind, frames=visual.frames,
            frame_format=visual.frame_format, conversations=turns, provenance=Provenance((), kind, "CC0-1.0", ""),
        )  # fmt: skip
        examples.append(make_example(sample, ChatEncoder(runner.model.tokenizer, 1024), runner.spec, 768))
    patch_dim = runner.model.vision.patch_dim
    if packed:
        return collate_packed(examples, patch_dim)
    return collate(examples, runner.model.tokenizer.pad_token_id, patch_dim)


def training_logits(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(the logits the training forward computes at its supervised positions, its summed loss)."""
    captured = []
    hook = model.llm.get_output_embeddings().register_forward_hook(lambda m, i, out: captured.append(out.float()))
    try:
        with torch.no_grad():
            loss, _ = model(batch)
    finally:
        hook.remove()
    return captured[0], loss


def supervised_rows(full: torch.Tensor, batch) -> torch.Tensor:
    return full[:, :-1][batch.labels[:, 1:] != -100]


def remote_inputs(batch) -> dict:
    names = ("input_ids", "attention_mask", "patches", "positions", "cu_seqlens", "grids", "visual_keep")
    return {name: getattr(batch, name) for name in names}


def test_both_loading_paths_give_the_training_forwards_logits(tiny_model, stage, runner, remote, visuals):
    batch = training_batch(runner, visuals)
    assert sorted(set(map(tuple, batch.grids.tolist()))) and batch.patches.shape[0] > 100
    expected, loss = training_logits(tiny_model, batch)
    ours = supervised_rows(logits(load_omnivmed(stage), batch), batch)
    with torch.no_grad():
        theirs = supervised_rows(remote(**remote_inputs(batch)).logits.float(), batch)
    assert ours.shape == theirs.shape == expected.shape and expected.shape[0] > 20
    assert torch.allclose(ours, expected, atol=TOLERANCE, rtol=0)
    assert torch.allclose(theirs, expected, atol=TOLERANCE, rtol=0)
    targets = batch.labels[:, 1:][batch.labels[:, 1:] != -100]
    summed = torch.nn.functional.cross_entropy(theirs, targets, reduction="sum")
    assert summed.item() == pytest.approx(loss.item(), rel=1e-5)
    # training's default layout packs the same samples into one row: the same logits
    packed, _ = training_logits(tiny_model, training_batch(runner, visuals, packed=True))
    assert torch.allclose(packed, expected, atol=TOLERANCE, rtol=0)


def test_remote_code_follows_the_absolute_table_and_a_custom_rope_split(tiny_base, tmp_path, visuals):
    model = load_model(tiny_base / "vision", tiny_base / "llm", rope_split=(4, 2, 2), keep_abs_pos=True, seed=3)
    model.save_pretrained(tmp_path / "stage2" / "model")
    runner = Runner.load(tmp_path / "stage2" / "model")
    batch = training_batch(runner, visuals)
    expected, _ = training_logits(model, batch)
    remote = auto_model(tmp_path / "stage2" / "model")
    with torch.no_grad():
        theirs = supervised_rows(remote(**remote_inputs(batch)).logits, batch)
    assert torch.allclose(theirs.float(), expected, atol=TOLERANCE, rtol=0)
    remote.to(torch.bfloat16)  # the rotary tables are no parameters or buffers: never rounded to bf16
    tables = remote.vision._rotary(batch.positions)
    assert all(torch.equal(a, b) for a, b in zip(tables, model.vision.rotary(batch.positions)))


def test_the_folder_carries_self_contained_remote_code(stage):
    config = json.loads((stage / "config.json").read_text())
    assert config["model_type"] == "omnivmed"
    assert config["auto_map"]["AutoModel"] == f"{REMOTE_MODULE}.OmniVMedModel"
    carried = stage / f"{REMOTE_MODULE}.py"
    assert carried.read_bytes() == SOURCE.read_bytes()
    tops = set()
    for node in ast.walk(ast.parse(carried.read_text())):
        if isinstance(node, ast.Import):
            tops |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            tops.add(node.module.split(".")[0])
    assert tops <= {"__future__", "json", "os", "torch", "transformers", "safetensors", "flash_attn", "huggingface_hub"}


def test_a_folder_saved_before_remote_code_gets_it(stage, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(stage, old)
    (old / f"{REMOTE_MODULE}.py").unlink()
    config = json.loads((old / "config.json").read_text())
    del config["auto_map"], config["architectures"]
    (old / "config.json").write_text(json.dumps(config))
    add_remote_code(old)
    assert type(auto_model(old)).__name__ == "OmniVMedModel"
    assert load_omnivmed(old).arch == load_omnivmed(stage).arch


def test_batched_greedy_equals_one_by_one_and_starts_at_the_logits_argmax(runner, visuals):
    queries = [Query(question_turns("What is shown?", v), v) for v in visuals.values()]
    queries.append(Query(question_turns("Is a CT scan an x-ray?", Visual()), Visual()))
    settings = Settings(max_new_tokens=6)
    together = runner.generate(queries, settings)
    alone = [runner.generate([q], settings)[0] for q in queries]
    assert [a.tokens for a in together] == [a.tokens for a in alone]
    assert all(len(a.tokens) == 6 and a.finish_reason == "length" for a in together)
    batch = runner.prompt_batch(queries[:1])
    first = logits(runner.model, batch)[0, -1].argmax().item()
    assert together[0].tokens[0] == first
    assert together[0].prompt_tokens == batch.input_ids.shape[1]


def test_sampling_is_seeded(runner, visuals):
    queries = [Query(question_turns("Describe it.", visuals["volume"]), visuals["volume"])] * 2
    hot = Settings(max_new_tokens=8, temperature=1.0, seed=7)
    first, again = runner.generate(queries, hot), runner.generate(queries, hot)
    assert first == again
    other = runner.generate(queries, Settings(max_new_tokens=8, temperature=1.0, seed=8))
    assert [a.tokens for a in other] != [a.tokens for a in first]
    assert first[0].tokens != first[1].tokens  # rows of one batch draw their own tokens


def test_remote_generate_gives_the_runners_greedy_tokens(runner, remote, visuals):
    queries = [Query(question_turns("What is shown?", visuals[k]), visuals[k]) for k in ("image", "video")]
    ours = runner.generate(queries, Settings(max_new_tokens=5))
    batch = runner.prompt_batch(queries)
    out = remote.generate(**remote_inputs(batch), generation_config=runner.generation_config(Settings(max_new_tokens=5)))
    assert [tuple(row[:5]) for row in out.tolist()] == [a.tokens for a in ours]


def test_pruning_and_data_settings_come_from_the_run_config(stage, tmp_path, visuals):
    assert Runner.load(stage).spec.prune_threshold == 0.1 and Runner.load(stage).spec.max_frames == 8
    import shutil

    folder = tmp_path / "stage3" / "model"
    shutil.copytree(stage, folder)
    data = {"shards": ["m"], "max_frames": 4, "prune_threshold": 0.3, "prune_normalisation": "encoder", "gone": 1}
    (folder.parent / "config.json").write_text(json.dumps({"model": {"preset": "tiny"}, "data": data}))
    tuned = Runner.load(folder)
    assert (tuned.spec.max_frames, tuned.spec.prune_threshold, tuned.spec.prune_normalisation) == (4, 0.3, "encoder")
    video = visuals["video"]
    example = tuned.example(Query(question_turns("Which phase?", video), video))
    assert example.visuals[0].frames == 4  # the clip's 8 frames, evenly subsampled as in training
    (folder.parent / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not a training run config"):
        Runner.load(folder)


def test_video_and_volume_are_pruned_images_are_not(runner, visuals):
    for kind, visual in visuals.items():
        (encoded,) = runner.example(Query(question_turns("?", visual), visual)).visuals[:1]
        kept = len(encoded.positions)
        assert (kept < encoded.tokens_before) == (kind in ("volume", "video")), kind


def test_volumes_are_read_as_the_volumes_builder_reads_them(tmp_path):
    from support.samples import build_named, samples_of

    build_named("volumes", VOLUMES, tmp_path / "out")
    by_path = {s.provenance.raw_paths[0]: s.frames for s in samples_of(tmp_path / "out")}
    assert read_volume(VOLUMES / "ct_dicom_series").frames == by_path["ct_dicom_series"]
    assert read_volume(VOLUMES / "example_ct_sm.nii.gz", modality="ct").frames == by_path["example_ct_sm.nii.gz"]
    assert read_volume(VOLUMES / "example_mr_sm.nii.gz", modality="mri").frames == by_path["example_mr_sm.nii.gz"]


def test_a_slice_folder_and_a_frame_folder(tmp_path, clip_file):
    from support.video_files import write_index_frames
    from support.volume_files import m3d_like_slices, write_slice_folder

    write_slice_folder(tmp_path / "slices", m3d_like_slices(6))
    assert len(read_volume(tmp_path / "slices").frames) == 6
    assert len(read_volume(tmp_path / "slices", preset="m3d").frames) == 32  # M3D's 32x256x256
    write_index_frames(tmp_path / "frames", range(20))
    assert len(read_clip(tmp_path / "frames", frames=5).frames) == 5
    timed = read_clip(tmp_path / "frames", fps=10, start=0.0, end=0.5, frames=8)
    assert len(timed.frames) == 6  # frames 0..5
    whole = read_clip(clip_file, frames=3)
    assert whole.kind == "video" and whole.frame_format == "jpeg" and len(whole.frames) == 3


@pytest.mark.parametrize(
    "read, message",
    [
        (lambda p: read_images([p / "missing.png"]), "missing.png: cannot read"),
        (lambda p: read_images([p]), "a folder, not an image file"),
        (lambda p: read_images([p / "notes.txt"]), "notes.txt: not an image"),
        (lambda p: read_volume(p / "nothing"), "nothing: no such file or folder"),
        (lambda p: read_volume(p / "notes.txt"), "notes.txt: not a NIfTI file"),
        (lambda p: read_volume(VOLUMES / "example_ct_sm.nii.gz", preset="bone"), "unknown volume preset 'bone'"),
        (lambda p: read_volume(VOLUMES / "example_ct_sm.nii.gz#2"), "#N picks a series of a DICOM folder"),
        (lambda p: read_volume(VOLUMES / "ct_dicom_series#3"), "holds 1 DICOM series; there is no series #3"),
        (lambda p: read_clip(p / "notes.txt"), "notes.txt: cannot open as a video"),
        (lambda p: read_clip(p / "absent.mp4"), "absent.mp4: no such file or folder"),
        (lambda p: read_clip(p / "frames", start=1.0), "give its frame rate"),
        (lambda p: read_clip(p / "frames", fps=10, start=5.0), "no frame between 5.0 s"),
    ],
)
def test_bad_inputs_are_one_line_naming_the_file(tmp_path, read, message):
    from support.video_files import write_index_frames

    (tmp_path / "notes.txt").write_text("not an image\n")
    write_index_frames(tmp_path / "frames", range(4))
    with pytest.raises(InputError, match=message.replace("#", r"\#").replace(".", r"\.")) as caught:
        read(tmp_path)
    assert "\n" not in str(caught.value)


def test_a_query_must_end_with_a_user_turn_and_match_its_placeholders(runner, visuals):
    with pytest.raises(InputError, match="ends with a user turn"):
        runner.example(Query((Turn("assistant", "hi"),)))
    image = visuals["image"]
    with pytest.raises(InputError, match="2 <image> placeholders for 1 visual inputs"):
        runner.example(Query((Turn("user", "<image> <image> what?"),), image))


def test_a_folder_of_two_dicom_series_needs_its_number(tmp_path):
    from support.volume_files import write_dicom_series

    folder = tmp_path / "study"
    write_dicom_series(folder, 3, series_number=1, series_uid="1.2.3.4.1", name_fn=lambda i: f"a{i}.dcm")
    write_dicom_series(folder, 5, series_number=2, series_uid="1.2.3.4.2", name_fn=lambda i: f"b{i}.dcm")
    with pytest.raises(InputError, match=r"holds 2 DICOM series; name one as .*study#N"):
        read_volume(folder)
    assert len(read_volume(f"{folder}#1").frames) == 3 and len(read_volume(f"{folder}#2").frames) == 5
