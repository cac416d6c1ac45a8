"""The ``omnivmed-chat`` command: ask a trained model (a stage folder) one question about an image, a volume or a clip.

argparse, and torch imported only once the options and paths are checked, so ``--help`` and a bad path
answer at once. Bad input ends in one line on stderr naming the file and the reason, exit status 2.
"""

from __future__ import annotations

import argparse
import typing
from pathlib import Path

from omnivmed.cli.oneline import OneLineParser
from omnivmed.cli.oneline import fail as one_line

PROG = "omnivmed-chat"

DESCRIPTION = """\
Answer a question with a trained model folder (OUT/stageN/model). The visual input is read as the
builders read it and pruned as in training (the data settings come from OUT/stageN/config.json when
it is there): --image (repeat it for several images), --volume (a DICOM series folder, FOLDER#N for
series N of several, a NIfTI file or a folder of <int>.png slices) or --video (a video file, with
--start/--end seconds, or a folder of frame files)."""

EXAMPLES = """\
examples:
  omnivmed-chat runs/omnivmed/stage3/model --image chest.jpg "Is there a pneumothorax?"
  omnivmed-chat runs/omnivmed/stage3/model --volume ct_series/ --modality ct "Which organ is abnormal?"
  omnivmed-chat runs/omnivmed/stage3/model --video case01.mp4 --start 62 --end 64 "Which instrument is used?\""""


def fail(message: str) -> typing.NoReturn:
    """One line on stderr, exit status 2."""
    one_line(PROG, message)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG, description=DESCRIPTION, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )  # fmt: skip
    parser.add_argument("model", type=Path, metavar="MODEL_DIR", help="a stage's model folder (OUT/stageN/model)")
    parser.add_argument("question", help="the question (the visual input goes before it, as in training)")
    visual = parser.add_argument_group("visual input (one kind)")
    visual.add_argument("--image", type=Path, action="append", default=[], metavar="PATH", help="an image file; repeat for several images")
    visual.add_argument("--volume", metavar="PATH", help="DICOM series folder (FOLDER#N: series N), NIfTI file or <int>.png slice folder")
    visual.add_argument("--video", type=Path, metavar="PATH", help="a video file or a folder of frame files")
    volume = parser.add_argument_group("volume")
    volume.add_argument("--volume-preset", default="auto", metavar="NAME", help="intensity preset, as the volume builders' -o preset= (default auto: CT window, MR percentiles, else min-max)")
    volume.add_argument("--modality", choices=("ct", "mri", "pet"), help="for a volume whose headers do not say (NIfTI, slices): picks the auto preset")
    clip = parser.add_argument_group("video")
    clip.add_argument("--start", type=float, metavar="S", help="clip start, seconds (default: the video's start)")
    clip.add_argument("--end", type=float, metavar="S", help="clip end, seconds (default: the video's end)")
    clip.add_argument("--fps", type=float, help="frame rate of a frame folder (needed for --start/--end on one)")
    clip.add_argument("--frames", type=int, metavar="N", help="frames taken evenly from the clip (default: the model's max_frames)")
    gen = parser.add_argument_group("generation")
    gen.add_argument("--max-new-tokens", type=int, default=256, metavar="N", help="answer length limit (default 256)")
    gen.add_argument("--temperature", type=float, default=0.0, metavar="T", help="0 (default): greedy; above 0: sampled")
    gen.add_argument("--top-p", type=float, default=1.0, metavar="P", help="nucleus sampling mass (default 1.0)")
    gen.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    gen.add_argument("--system", metavar="TEXT", help="a system prompt (default: the chat template's own)")
    run = parser.add_argument_group("device")
    run.add_argument("--device", default="auto", help="auto (default: cuda when there is one), cpu, cuda, cuda:1, ...")
    run.add_argument("--dtype", default="auto", choices=("auto", "fp32", "bf16", "fp16"), help="weights (default auto: bf16 on a GPU, fp32 on the CPU)")
    return parser


def check_args(args: argparse.Namespace) -> None:
    """What can be told before anything heavy loads: one visual kind, paths that exist, numbers in range."""
    kinds = [name for name in ("image", "volume", "video") if getattr(args, name)]
    if len(kinds) > 1:
        fail(f"give one kind of visual input, not --{' and --'.join(kinds)}")
    if not (args.model / "config.json").is_file():
        fail(f"{args.model}: not a model folder (no config.json; a stage writes OUT/stageN/model)")
    paths = list(args.image) + ([Path(args.volume.split("#")[0])] if args.volume else []) + ([args.video] if args.video else [])
    for path in paths:
        if not path.exists():
            fail(f"{path}: no such file or folder")
    if (args.start is not None or args.end is not None or args.fps or args.frames) and not args.video:
        fail("--start, --end, --fps and --frames are for --video")
    if args.max_new_tokens < 1 or (args.frames is not None and args.frames < 1):
        fail("--max-new-tokens and --frames must be at least 1")
    if not args.question.strip():
        fail("the question is empty")


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    check_args(args)
    from omnivmed.trainer.config import ConfigError
    from omnivmed.trainer.inference import (
        NO_VISUAL, InputError, Query, Runner, Settings, question_turns, read_clip, read_images, read_volume,
    )  # fmt: skip

    try:
        settings = Settings(args.max_new_tokens, args.temperature, args.top_p, args.seed)
        visual = NO_VISUAL  # images and volumes are read before the model loads: a bad file fails at once
        if args.image:
            visual = read_images(args.image)
        elif args.volume:
            visual = read_volume(args.volume, preset=args.volume_preset, modality=args.modality)
        runner = Runner.load(args.model, device=args.device, dtype=args.dtype)
        if args.video:  # a clip takes the model's frame count unless --frames says
            frames = args.frames or runner.spec.max_frames
            visual = read_clip(args.video, start=args.start, end=args.end, fps=args.fps, frames=frames)
        (answer,) = runner.generate([Query(question_turns(args.question, visual, args.system), visual)], settings)
    except (InputError, ConfigError, FileNotFoundError) as err:
        fail(str(err))
    except (ValueError, OSError, RuntimeError) as err:  # a folder that is not a model, a device that is not there
        fail(f"{args.model}: {err}")
    print(answer.text)


if __name__ == "__main__":
    main()
