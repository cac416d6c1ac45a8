"""PSI-AVA-VQA (Seenivasan et al., MICCAI 2023, SurgicalGPT): QA on PSI-AVA prostatectomy keyframes.

Layout (the anchor loader's): ``PSI-AVA-VQA/{Train,Val}/C1_location.txt, C2_action.txt, C3_phase.txt,
C4_step.txt``, one ``keyframe|question|answer`` line each, the keyframe path relative to
``PSI-AVA-VQA/keyframes/`` (``CASE001/00000.jpg``...). Train/ is train, Val/ our validation split. The
anchors train on C1 (location), C3 (phase) and C4 (step), 35 answer classes; C2 (instrument actions) is
built with ``-o categories=C1,C2,C3,C4``. A clip's frames are the case's neighbouring keyframes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from omnivmed.builders.base import BuilderOption, BuilderOptionError, LayoutError, Reject, SourceInfo
from omnivmed.builders.surgical import AnswerLabel, QaRecord, SurgicalVqaBuilder, classification_label, read_qa_lines, trailing_int
from omnivmed.builders.surgical_vocabularies import PSIAVA, PSIAVA_CATEGORY_TASKS
from omnivmed.builders.volume_samples import relative

CATEGORY_FILES = {"C1": "C1_location.txt", "C2": "C2_action.txt", "C3": "C3_phase.txt", "C4": "C4_step.txt"}
SPLIT_FOLDERS = (("Val", "validation"), ("Train", "train"))


class PsiAvaVqaBuilder(SurgicalVqaBuilder):
    info = SourceInfo(
        name="psiava_vqa",
        description="PSI-AVA-VQA: location, phase and step questions (and, on request, instrument actions) on "
        "PSI-AVA robotic prostatectomy keyframes, as clips of neighbouring keyframes (35 answer classes).",
        homepage="https://github.com/lalithjets/SurgicalGPT",
        license="QA text: as released with SurgicalGPT; keyframes: PSI-AVA (TAPIR) data terms",
        citation="Seenivasan L, Islam M, Kannan G, Ren H. SurgicalGPT: End-to-End Language-Vision GPT for Visual "
        "Question Answering in Surgery. MICCAI 2023. Valderrama N et al. TAPIR/PSI-AVA. MICCAI 2022.",
    )
    vocabulary = PSIAVA
    extra_option_specs = (BuilderOption("categories", "C1,C3,C4", "question files to build: C1 location, C2 action, C3 phase, C4 step"),)

    def configure(self) -> None:
        super().configure()
        chosen = tuple(c.strip() for c in self.options["categories"].split(",") if c.strip())
        if not chosen or any(c not in CATEGORY_FILES for c in chosen):
            raise BuilderOptionError(f"option categories={self.options['categories']!r}: choose from {', '.join(CATEGORY_FILES)}")
        self.categories = chosen

    @staticmethod
    def root(raw: Path) -> Path:
        return raw / "PSI-AVA-VQA" if (raw / "PSI-AVA-VQA").is_dir() else raw

    def qa_files(self, raw: Path) -> list[tuple[str, str, Path]]:
        root = self.root(raw)
        return [
            (split, category, root / folder / CATEGORY_FILES[category])
            for folder, split in SPLIT_FOLDERS
            for category in self.categories
            if (root / folder / CATEGORY_FILES[category]).is_file()
        ]

    def check_layout(self, raw: Path) -> None:
        if not self.qa_files(raw):
            raise LayoutError(f"{raw}: not a PSI-AVA-VQA copy (expected PSI-AVA-VQA/{{Train,Val}}/C1_location.txt ... and keyframes/)")
        self.check_frames_source(raw)

    def input_files(self, raw: Path) -> list[Path]:
        return [path for _, _, path in self.qa_files(raw)]

    def records(self, raw: Path) -> Iterator[QaRecord | Reject]:
        for split, category, path in self.qa_files(raw):
            rel = relative(path, raw)
            for item in read_qa_lines(path, raw, 3):
                if isinstance(item, Reject):
                    yield item
                    continue
                line, (keyframe, question, answer) = item
                parts = Path(keyframe).parts
                frame = trailing_int(Path(keyframe).stem)
                if len(parts) < 2 or frame is None or ".." in parts or Path(keyframe).is_absolute():
                    yield Reject(rel, f"line {line}", "bad_keyframe_path", f"{rel} line {line}: keyframe {keyframe!r} is not <case>/<number>.<ext>")
                    continue
                video = "/".join(parts[:-1])
                yield QaRecord(split, video, frame, question, answer, "Classification", rel, line, category)

    def frame_folder(self, raw: Path, record: QaRecord) -> Path:
        return self.root(raw) / "keyframes" / record.video

    def video_names(self, video: str) -> tuple[str, ...]:
        return (video.replace("/", "_"),)

    def label(self, record: QaRecord) -> AnswerLabel:
        task = PSIAVA_CATEGORY_TASKS[record.category]
        return classification_label(self.vocabulary, record, task, free=record.category == "C2")
