"""EndoVis18-VQA (Seenivasan et al., MICCAI 2022): QA text per frame of the EndoVis 2018 nephrectomy sequences.

Layout (the anchor loader's): ``seq_N/vqa/{Classification,Sentence}/<frame>_QA.txt`` with
``question|answer`` lines and frames in ``seq_N/left_frames/<frame>.png`` (``frame000.png``...), under
``EndoVis-18-VQA/`` or directly in the raw folder. Sequences 2, 3, 4, 6, 7, 9, 10, 11, 12, 14 and 15 train,
1, 5 and 16 are held out (our validation split), as in the anchors.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

from omnivmed.builders.base import BuilderOption, LayoutError, Reject, SourceInfo
from omnivmed.builders.surgical import (
    AnswerLabel,
    QaRecord,
    SurgicalVqaBuilder,
    classification_label,
    frame_qa_records,
    variants_option,
)
from omnivmed.builders.surgical_vocabularies import ENDOVIS18, endovis18_task
from omnivmed.builders.volume_samples import relative

TRAIN_SEQUENCES = frozenset({2, 3, 4, 6, 7, 9, 10, 11, 12, 14, 15})
VALIDATION_SEQUENCES = frozenset({1, 5, 16})
VARIANTS = ("Classification", "Sentence")
SEQUENCE = re.compile(r"^seq_(\d+)$")


class EndoVis18VqaBuilder(SurgicalVqaBuilder):
    info = SourceInfo(
        name="endovis18_vqa",
        description="EndoVis18-VQA: questions about the organ, instrument actions and instrument locations on "
        "EndoVis 2018 robotic nephrectomy frames, as clips of consecutive frames (18 answer classes).",
        homepage="https://github.com/lalithjets/Surgical_VQA",
        license="QA text: as released with Surgical_VQA; frames: MICCAI EndoVis 2018 challenge data terms",
        citation="Seenivasan L, Islam M, Krishna AK, Ren H. Surgical-VQA: Visual Question Answering in Surgical "
        "Scenes using Transformer. MICCAI 2022. Allan M et al. 2018 Robotic Scene Segmentation Challenge. arXiv 2001.11190.",
    )
    vocabulary = ENDOVIS18
    extra_option_specs = (BuilderOption("variants", ",".join(VARIANTS), "which QA variants to build: Classification, Sentence"),)

    def configure(self) -> None:
        super().configure()
        self.variants = variants_option(self.options, VARIANTS)

    @staticmethod
    def root(raw: Path) -> Path:
        return raw / "EndoVis-18-VQA" if (raw / "EndoVis-18-VQA").is_dir() else raw

    def sequences(self, raw: Path) -> list[Path]:
        root = self.root(raw)
        found = [p for p in root.iterdir() if p.is_dir() and SEQUENCE.match(p.name)] if root.is_dir() else []
        return sorted(found, key=lambda p: int(SEQUENCE.match(p.name).group(1)))

    def check_layout(self, raw: Path) -> None:
        if not any((s / "vqa").is_dir() for s in self.sequences(raw)):
            raise LayoutError(
                f"{raw}: not an EndoVis18-VQA copy (expected seq_N/vqa/{{Classification,Sentence}}/<frame>_QA.txt "
                "and seq_N/left_frames/<frame>.png)"
            )
        self.check_frames_source(raw)

    def input_files(self, raw: Path) -> list[Path]:
        return [s / "vqa" / v for s in self.sequences(raw) for v in self.variants if (s / "vqa" / v).is_dir()]

    def records(self, raw: Path) -> Iterator[QaRecord | Reject]:
        for seq in self.sequences(raw):
            number = int(SEQUENCE.match(seq.name).group(1))
            split = "validation" if number in VALIDATION_SEQUENCES else "train" if number in TRAIN_SEQUENCES else None
            for variant in self.variants:
                for qa_file in sorted((seq / "vqa" / variant).glob("*.txt")):
                    rel = relative(qa_file, raw)
                    if split is None:
                        yield Reject(rel, "-", "unlisted_sequence", f"{rel}: {seq.name} is in neither the anchors' train nor validation list")
                        continue
                    yield from frame_qa_records(qa_file, raw, split=split, video=seq.name, variant=variant)

    def frame_folder(self, raw: Path, record: QaRecord) -> Path:
        return self.root(raw) / record.video / "left_frames"

    def video_names(self, video: str) -> tuple[str, ...]:
        return (video,)

    def label(self, record: QaRecord) -> AnswerLabel:
        return classification_label(self.vocabulary, record, endovis18_task(record.answer))
