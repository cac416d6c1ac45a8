"""Cholec80-VQA (Seenivasan et al., MICCAI 2022): QA text per frame of the Cholec80 cholecystectomy videos.

Layout (the anchor loader's): ``Cholec80-VQA/{Classification,Sentence}/<video 1-40>/<frame>.txt`` with
``question|answer`` lines, frames in ``Cholec80-VQA/cropped_image/<video>/<frame>.png``. The anchors use
only frames whose number is a multiple of 100 and hold out videos 5, 11, 12, 17, 19, 26, 27 and 31 (our
validation split). With ``-o frames=videos`` clips are cut from the Cholec80 videos
(``videos/video01.mp4`` ..., 25 fps; frame numbers count frames of the 25 fps video).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from omnivmed.builders.base import BuilderOption, BuilderOptionError, LayoutError, Reject, SourceInfo
from omnivmed.builders.surgical import (
    AnswerLabel,
    QaRecord,
    SurgicalVqaBuilder,
    classification_label,
    frame_qa_records,
    variants_option,
)
from omnivmed.builders.surgical_vocabularies import CHOLEC80, cholec80_task
from omnivmed.builders.volume_samples import relative

VALIDATION_VIDEOS = frozenset({5, 11, 12, 17, 19, 26, 27, 31})
VARIANTS = ("Classification", "Sentence")


class Cholec80VqaBuilder(SurgicalVqaBuilder):
    info = SourceInfo(
        name="cholec80_vqa",
        description="Cholec80-VQA: questions about tools and phases on Cholec80 cholecystectomy frames, as clips "
        "of consecutive frames (Classification: 13 answer classes; Sentence: free answers).",
        homepage="https://github.com/lalithjets/Surgical_VQA",
        license="QA text: as released with Surgical_VQA; frames/videos: Cholec80 (CAMMA), non-commercial, on request",
        citation="Seenivasan L, Islam M, Krishna AK, Ren H. Surgical-VQA: Visual Question Answering in Surgical "
        "Scenes using Transformer. MICCAI 2022. Twinanda AP et al. EndoNet. IEEE TMI 2017 (Cholec80).",
    )
    vocabulary = CHOLEC80
    default_names_fps = 25.0
    extra_option_specs = (
        BuilderOption("variants", ",".join(VARIANTS), "which QA variants to build: Classification, Sentence"),
        BuilderOption("frame_multiple", "100", "keep QA frames whose number is a multiple of this (the anchors' 100; 1 keeps all)"),
    )

    def configure(self) -> None:
        super().configure()
        self.variants = variants_option(self.options, VARIANTS)
        value = self.options["frame_multiple"]
        if not value.isdigit() or int(value) < 1:
            raise BuilderOptionError(f"option frame_multiple={value!r} is not a positive integer")
        self.frame_multiple = int(value)

    @staticmethod
    def root(raw: Path) -> Path:
        return raw / "Cholec80-VQA" if (raw / "Cholec80-VQA").is_dir() else raw

    def check_layout(self, raw: Path) -> None:
        root = self.root(raw)
        if not any((root / v).is_dir() for v in VARIANTS):
            raise LayoutError(
                f"{raw}: not a Cholec80-VQA copy (expected Cholec80-VQA/{{Classification,Sentence}}/<video>/<frame>.txt "
                "and cropped_image/<video>/<frame>.png)"
            )
        self.check_frames_source(raw)

    def input_files(self, raw: Path) -> list[Path]:
        root = self.root(raw)
        return [root / v for v in self.variants if (root / v).is_dir()]

    def records(self, raw: Path) -> Iterator[QaRecord | Reject]:
        root = self.root(raw)
        for variant in self.variants:
            for video_dir in sorted((root / variant).iterdir() if (root / variant).is_dir() else ()):
                if not video_dir.is_dir():
                    continue
                if not video_dir.name.isdigit():
                    rel = relative(video_dir, raw)
                    yield Reject(rel, "-", "unknown_video", f"{rel}: video folders are numbers 1-40")
                    continue
                split = "validation" if int(video_dir.name) in VALIDATION_VIDEOS else "train"
                for qa_file in sorted(video_dir.glob("*.txt")):
                    yield from frame_qa_records(
                        qa_file, raw, split=split, video=video_dir.name, variant=variant, frame_multiple=self.frame_multiple
                    )

    def frame_folder(self, raw: Path, record: QaRecord) -> Path:
        return self.root(raw) / "cropped_image" / record.video

    def video_names(self, video: str) -> tuple[str, ...]:
        return (f"video{int(video):02d}", video)

    def label(self, record: QaRecord) -> AnswerLabel:
        return classification_label(self.vocabulary, record, cholec80_task(record.answer))
