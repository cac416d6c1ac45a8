"""The three surgical VQA layouts as clips: splits, tasks, classes, frame indices, bad input, resume."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

import omnivmed.data.video.clips as clips_module
from omnivmed.builders import BuilderOptionError, LayoutError, get_builder
from omnivmed.builders.surgical_vocabularies import CHOLEC80_CLASSES, ENDOVIS18_CLASSES, PSIAVA_CLASSES
from omnivmed.caption_inputs import write_caption_inputs
from omnivmed.data.caption_windows import read_caption_inputs
from omnivmed.data.manifest import Manifest
from support.raw_trees import read_rejects
from support.samples import build_named, samples_of
from support.surgical_trees import make_cholec80_tree, make_endovis18_tree, make_psiava_tree, write_lines
from support.video_files import decode_index, truncated_copy, write_index_video


def shown_indices(sample) -> list[int]:
    """The index each stored JPEG frame shows (frames draw their own index; no resize in these tests)."""
    return [decode_index(cv2.cvtColor(cv2.imdecode(np.frombuffer(f, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)) for f in sample.frames]


def by_question(samples) -> dict:
    return {(s.provenance.fields[0][1], s.conversations[0].content): s for s in samples}


@pytest.fixture(scope="module")
def cholec80(tmp_path_factory):
    raw = make_cholec80_tree(tmp_path_factory.mktemp("c80") / "raw", with_videos=True)
    out = tmp_path_factory.mktemp("c80-out")
    return raw, build_named("cholec80_vqa", raw, out, short_side="0"), samples_of(out)


def test_cholec80_splits_frame_rule_tasks_and_classes(cholec80):
    _, result, samples = cholec80
    # Per video: 100.txt (2 lines), 200.txt, 300.txt, Sentence/200.txt; 150.txt dropped (not a multiple of 100).
    assert result.manifest.counts["split"] == {"train": 5, "validation": 5}
    assert not result.manifest.rejects
    assert all(s.visual_kind == "video" and s.modality == "endoscopy" and s.frame_format == "jpeg" for s in samples)
    assert all(s.conversations[0].content.startswith("<video>\n") for s in samples)
    assert {dict(s.provenance.fields)["frame"] for s in samples} == {"100", "200", "300"}
    phase = next(s for s in samples if s.conversations[1].content == "preparation")
    fields = dict(phase.provenance.fields)
    assert phase.task == "phase_recognition" and phase.split == "train" and phase.answer_type == "open"
    assert fields["answer_vocabulary"] == "cholec80_vqa_13" and CHOLEC80_CLASSES[int(fields["answer_class"])] == "preparation"
    yes = next(s for s in samples if s.conversations[1].content == "yes")
    assert yes.task == "surgical_vqa" and yes.answer_type == "closed"
    sentence = next(s for s in samples if dict(s.provenance.fields)["variant"] == "Sentence")
    assert sentence.task == "surgical_vqa" and "answer_class" not in dict(sentence.provenance.fields)


def test_folder_clips_are_the_neighbouring_frames_padded_at_the_start(cholec80):
    _, result, samples = cholec80
    first = next(s for s in samples if dict(s.provenance.fields)["frame"] == "100")
    # Frames are 0, 25, 50, ...: eight ending at 100 need three before frame 0, which repeat it.
    assert first.visual_meta.frame_indices == (0, 0, 0, 0, 25, 50, 75, 100)
    assert shown_indices(first) == [0, 0, 0, 0, 25, 50, 75, 100]
    assert dict(first.provenance.fields)["padded_frames"] == "3"
    later = next(s for s in samples if dict(s.provenance.fields)["frame"] == "300")
    assert shown_indices(later) == list(range(125, 301, 25))
    assert result.manifest.counters == {"clips_padded": 2}  # frame 100 of each video


def test_video_clips_are_the_source_frames_at_the_qa_time(cholec80, tmp_path):
    raw, _, _ = cholec80
    build_named("cholec80_vqa", raw, tmp_path, short_side="0", frames="videos", stride="2")
    samples = samples_of(tmp_path)
    clip = next(s for s in samples if dict(s.provenance.fields)["frame"] == "200" and dict(s.provenance.fields)["video"] == "1")
    assert clip.visual_meta.frame_indices == tuple(range(186, 201, 2))
    assert shown_indices(clip) == list(range(186, 201, 2))
    assert clip.visual_meta.fps == 12.5  # 25 fps at stride 2
    assert clip.visual_meta.timestamps_s == tuple(i / 25 for i in range(186, 201, 2))
    assert clip.provenance.raw_paths[1] == "videos/video01.mp4"
    other = next(s for s in samples if dict(s.provenance.fields)["frame"] == "200" and dict(s.provenance.fields)["video"] == "5")
    assert shown_indices(other) == [1000 + i for i in range(186, 201, 2)]


def test_centre_anchor_and_resize(cholec80, tmp_path):
    raw, _, _ = cholec80
    build_named("cholec80_vqa", raw, tmp_path, anchor="center", clip_length="5", short_side="48", variants="Classification")
    clip = next(s for s in samples_of(tmp_path) if dict(s.provenance.fields)["frame"] == "200")
    assert clip.visual_meta.frame_indices == (150, 175, 200, 225, 250)
    assert cv2.imdecode(np.frombuffer(clip.frames[0], np.uint8), cv2.IMREAD_COLOR).shape[:2] == (48, 64)
    assert clip.visual_meta.original_shape == (96, 128)


def test_clips_past_the_start_can_be_dropped_and_are_counted(cholec80, tmp_path):
    raw, _, _ = cholec80
    result = build_named("cholec80_vqa", raw, tmp_path, at_start="drop", short_side="0")
    # Frame 100 of both videos: 3 questions (2 + 0 Sentence lines on 100) per video -> 4 rejects.
    assert result.manifest.rejects == {"before_start": 4}
    assert result.manifest.counters == {"clips_padded": 0}
    assert result.manifest.rows == 6


def test_endovis18_sequences_splits_and_tasks(tmp_path):
    raw = make_endovis18_tree(tmp_path / "raw")
    result = build_named("endovis18_vqa", raw, tmp_path / "out", short_side="0", clip_length="4")
    samples = samples_of(tmp_path / "out")
    assert result.manifest.counts["split"] == {"train": 4, "validation": 4}
    # seq_8 is in neither list: each of its QA files is rejected, never guessed into a split.
    assert result.manifest.rejects == {"unlisted_sequence": 2}
    tasks = {s.conversations[1].content: s.task for s in samples}
    assert tasks["kidney"] == "surgical_vqa"
    assert tasks["Grasping"] == tasks["Cutting"] == "instrument_recognition"
    assert tasks["left-top"] == tasks["right-bottom"] == "location_recognition"
    located = next(s for s in samples if s.conversations[1].content == "left-top")
    assert located.split == "validation" and ENDOVIS18_CLASSES[int(dict(located.provenance.fields)["answer_class"])] == "left-top"
    assert shown_indices(located) == [2, 3, 4, 5] and located.provenance.raw_paths[1] == "EndoVis-18-VQA/seq_1/left_frames"


def test_psiava_categories_keyframes_and_classes(tmp_path):
    raw = make_psiava_tree(tmp_path / "raw")
    result = build_named("psiava_vqa", raw, tmp_path / "out", short_side="0", clip_length="3")
    samples = samples_of(tmp_path / "out")
    assert result.manifest.counts["task"] == {"location_recognition": 1, "phase_recognition": 2, "step_recognition": 1}
    assert result.manifest.counts["split"] == {"train": 3, "validation": 1}
    step = next(s for s in samples if s.task == "step_recognition")
    assert shown_indices(step) == [90, 120, 150] and PSIAVA_CLASSES[int(dict(step.provenance.fields)["answer_class"])] == "Corte"
    with_actions = build_named("psiava_vqa", raw, tmp_path / "out2", short_side="0", categories="C1,C2,C3,C4")
    assert with_actions.manifest.counts["task"]["instrument_recognition"] == 1
    with pytest.raises(BuilderOptionError, match="categories"):
        get_builder("psiava_vqa", {"categories": "C9"})


def test_bad_input_is_rejected_with_file_and_reason(tmp_path):
    raw = make_cholec80_tree(tmp_path / "raw", videos=(1,))
    root = raw / "Cholec80-VQA" / "Classification" / "1"
    write_lines(root / "400.txt", ["what is the phase of image?|preparation"])  # no frame 400 in the folder
    write_lines(root / "300.txt", ["what is the phase of image?|calot triangle dissection", "a line without the separator", "is hook used?|perhaps"])
    (raw / "Cholec80-VQA" / "cropped_image" / "9").mkdir(parents=True)
    write_lines(raw / "Cholec80-VQA" / "Classification" / "9" / "100.txt", ["is hook used?|no"])  # empty frame folder
    result = build_named("cholec80_vqa", raw, tmp_path / "out", short_side="0")
    rejects = {(r["file"], r["reason"]) for r in read_rejects(tmp_path / "out")}
    assert rejects == {
        ("Cholec80-VQA/cropped_image/1", "missing_frame"),
        ("Cholec80-VQA/Classification/1/300.txt", "missing_separator"),
        ("Cholec80-VQA/Classification/1/300.txt", "answer_not_in_vocabulary"),
        ("Cholec80-VQA/cropped_image/9", "empty_folder"),
    }
    assert result.manifest.rows == 5
    for r in read_rejects(tmp_path / "out"):
        assert r["file"] in r["detail"] and str(tmp_path) not in r["detail"]


def test_unreadable_and_truncated_videos_are_rejected(tmp_path):
    raw = make_cholec80_tree(tmp_path / "raw", with_videos=True)
    (raw / "videos" / "video05.mp4").write_bytes(b"not a video at all" * 100)
    full = raw / "videos" / "video01.mp4"
    truncated_copy(full, full, keep=0.4)
    result = build_named("cholec80_vqa", raw, tmp_path / "out", frames="videos", short_side="0", variants="Classification")
    reasons = {(r["file"], r["reason"]) for r in read_rejects(tmp_path / "out")}
    assert ("videos/video05.mp4", "unreadable_video") in reasons
    assert any(f == "videos/video01.mp4" and reason in ("truncated_video", "missing_frame") for f, reason in reasons)
    # The frames before the cut still make clips: the build goes on.
    assert result.manifest.rows >= 1


def test_a_killed_build_redoes_only_the_missing_clips_and_gives_the_same_shards(tmp_path, monkeypatch):
    raw = make_cholec80_tree(tmp_path / "raw", with_videos=True)
    options = {"frames": "videos", "short_side": "64"}
    reference = build_named("cholec80_vqa", raw, tmp_path / "clean", **options)

    real_put = clips_module.ClipCache.put
    done = []

    def put_then_die(self, clip):
        real_put(self, clip)
        done.append(clip.id)
        if len(done) == 3:
            raise KeyboardInterrupt  # the build is killed right after its third clip is on disk

    monkeypatch.setattr(clips_module.ClipCache, "put", put_then_die)
    with pytest.raises(KeyboardInterrupt):
        build_named("cholec80_vqa", raw, tmp_path / "resumed", **options)
    monkeypatch.setattr(clips_module.ClipCache, "put", real_put)
    assert not (tmp_path / "resumed" / "manifest.json").exists()

    builder = get_builder("cholec80_vqa", options)
    from omnivmed.build import build_source

    resumed = build_source(builder, raw, tmp_path / "resumed", progress=False)
    # 6 distinct clips (frames 100, 200, 300 of two videos) from 8 clip requests (the Sentence
    # question on frame 200 asks for a clip again): 3 were on disk, 3 are made now.
    assert builder.clip_stats == {"made": 3, "reused": 5}
    assert [s.sha256 for s in resumed.manifest.shards] == [s.sha256 for s in reference.manifest.shards]
    assert resumed.manifest.to_json() == Manifest.load(tmp_path / "clean" / "manifest.json").to_json()


def test_layout_and_option_errors(tmp_path):
    with pytest.raises(LayoutError, match="Cholec80-VQA"):
        build_named("cholec80_vqa", tmp_path, tmp_path / "out")
    with pytest.raises(LayoutError, match="EndoVis18-VQA"):
        build_named("endovis18_vqa", tmp_path, tmp_path / "out")
    for bad in ({"anchor": "middle"}, {"at_start": "wrap"}, {"clip_length": "0"}, {"frames": "tapes"}, {"stride": "two"}):
        with pytest.raises(BuilderOptionError):
            get_builder("cholec80_vqa", bad)


def test_caption_windows_carry_the_qa_of_their_frames(cholec80, tmp_path):
    raw, _, _ = cholec80
    builder = get_builder("cholec80_vqa", {"frames": "videos", "short_side": "0", "variants": "Classification"})
    result = write_caption_inputs(builder, raw, tmp_path, step=50, progress=False)
    table = read_caption_inputs(result.path)
    assert result.windows == table.num_rows and table.num_rows > 0
    rows = table.to_pylist()
    assert all(len(r["frames"]) == 8 and r["frame_indices"] == list(range(r["frame_indices"][0], r["frame_indices"][0] + 8)) for r in rows)
    with_qa = [r for r in rows if r["qa"]]
    assert with_qa and all(r["frame_indices"][0] <= q["frame"] <= r["frame_indices"][-1] for r in with_qa for q in r["qa"])
    again = write_caption_inputs(builder, raw, tmp_path, step=50, progress=False)
    assert again.path.read_bytes() == result.path.read_bytes()
