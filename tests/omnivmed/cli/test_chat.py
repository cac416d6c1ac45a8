"""omnivmed-chat: the answer is generate's for the same input; --help is light; bad input is one line, exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support.tiny_stage import write_tiny_stage

from omnivmed.cli.chat import main
from omnivmed.trainer.inference import Query, Runner, Settings, question_turns, read_clip, read_images, read_volume

REPO = Path(__file__).resolve().parents[3]
IMAGES = sorted((REPO / "data" / "vqa_rad" / "VQA_RAD Image Folder").glob("*.jpg"))[:2]
VOLUMES = REPO / "data" / "volumes"
SAMPLED = ["--temperature", "1", "--seed", "3", "--max-new-tokens", "6"]


@pytest.fixture(scope="module")
def stage(tmp_path_factory) -> Path:
    return write_tiny_stage(tmp_path_factory.mktemp("stage"))


@pytest.fixture(scope="module")
def runner(stage) -> Runner:
    return Runner.load(stage)


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory) -> Path:
    from support.video_files import write_index_video

    return write_index_video(tmp_path_factory.mktemp("video") / "clip.mp4", 40)


def chat(capsys, *args) -> str:
    main([str(a) for a in args])
    return capsys.readouterr().out


def expected(runner, question, visual) -> str:
    (answer,) = runner.generate([Query(question_turns(question, visual), visual)], Settings(6, 1.0, 1.0, 3))
    return answer.text + "\n"


def test_images_a_volume_and_a_clip_answer_as_generate(stage, runner, clip_file, capsys):
    question = "What is shown?"
    out = chat(capsys, stage, "--image", IMAGES[0], question, *SAMPLED)
    assert out == expected(runner, question, read_images(IMAGES[:1])) and out.strip()
    out = chat(capsys, stage, "--image", IMAGES[0], "--image", IMAGES[1], question, *SAMPLED)
    assert out == expected(runner, question, read_images(IMAGES))
    out = chat(capsys, stage, "--volume", VOLUMES / "example_mr_sm.nii.gz", "--modality", "mri", question, *SAMPLED)
    assert out == expected(runner, question, read_volume(VOLUMES / "example_mr_sm.nii.gz", modality="mri"))
    out = chat(capsys, stage, "--video", clip_file, "--start", "0.2", "--end", "1.0", question, *SAMPLED)
    assert out == expected(runner, question, read_clip(clip_file, start=0.2, end=1.0, frames=runner.spec.max_frames))


def test_help_answers_without_torch():
    probe = (
        "import sys\nfrom omnivmed.cli.chat import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "import json\nprint(json.dumps([m for m in ('torch', 'transformers', 'cv2', 'av', 'pyarrow') if m in sys.modules]))"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "--max-new-tokens" in run.stdout and "--volume" in run.stdout
    assert json.loads(run.stdout.strip().splitlines()[-1]) == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["{stage}", "--image", "{tmp}/missing.jpg", "q"], "missing.jpg: no such file or folder"),
        (["{tmp}", "q"], "not a model folder"),
        (["{stage}", "--image", "{tmp}/notes.txt", "q"], "notes.txt: not an image OpenCV can decode"),
        (["{stage}", "--image", "{tmp}", "q"], "a folder, not an image file"),
        (["{stage}", "--volume", "{tmp}/empty", "q"], "empty: no DICOM files and no <int>.png/.jpeg slices"),
        (["{stage}", "--volume", "{tmp}/notes.txt", "q"], "notes.txt: not a NIfTI file"),
        (["{stage}", "--volume", "{volumes}/ct_dicom_series#2", "q"], "holds 1 DICOM series; there is no series #2"),
        (["{stage}", "--video", "{tmp}/notes.txt", "q"], "notes.txt: cannot open as a video"),
        (["{stage}", "--video", "{tmp}/empty", "q"], "empty: no frame files"),
        (["{stage}", "--image", "{image}", "--video", "{tmp}/empty", "q"], "give one kind of visual input"),
        (["{stage}", "--start", "1", "q"], "--start, --end, --fps and --frames are for --video"),
        (["{stage}", "--volume", "{volumes}/ct_dicom_series", "--volume-preset", "bone", "q"], "unknown volume preset 'bone'"),
        (["{stage}", "--max-new-tokens", "0", "q"], "at least 1"),
        (["{stage}"], "the following arguments are required: question"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(stage, tmp_path, capsys, args, message):
    (tmp_path / "notes.txt").write_text("not an image\n")
    (tmp_path / "empty").mkdir()
    values = {"stage": stage, "tmp": tmp_path, "volumes": VOLUMES, "image": IMAGES[0]}
    with pytest.raises(SystemExit) as stopped:
        main([a.format(**values) for a in args])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and message in err, err
    assert err.startswith("omnivmed-chat: ") and err.count("\n") == 1 and "Traceback" not in err


def test_the_console_script_fails_in_one_line(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "omnivmed.cli.chat", str(tmp_path), "--image", str(tmp_path / "x.png"), "q"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
