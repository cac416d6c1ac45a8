"""What the three surgical VQA builders share: QA records in, clips of consecutive frames out.

A layout (Cholec80-VQA, EndoVis18-VQA, PSI-AVA-VQA) only says where its QA
lines are, which split a video belongs to, where a video's frames are and
which task an answer belongs to. This module turns each QA line into a video
Sample: a clip of ``clip_length`` frames at ``stride`` ending at (or centred
on) the QA frame, cut from the frame folder or from the source video, with
the line's question and answer as the conversation.

Clips are cached under the build's output folder (``clips/``) by an id made
of the source's checksum, the frame indices and the clip parameters, so a
build killed half-way redoes only the clips it had not finished.
"""

from __future__ import annotations

import json
import shutil
from abc import abstractmethod
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from omnivmed.builders.base import (
    HELD_OUT_FIRST,
    Builder,
    BuilderItem,
    BuilderOption,
    BuilderOptionError,
    LayoutError,
    ReadyItems,
    Reject,
    Unit,
    runs,
)
from omnivmed.builders.surgical_vocabularies import Vocabulary
from omnivmed.builders.volume_samples import relative
from omnivmed.data.fileio import atomic_write_bytes
from omnivmed.data.schema import VIDEO_TOKEN, Provenance, SchemaError, Turn, VisualMeta, make_sample
from omnivmed.data.video import Clip, ClipCache, ClipMaker, ClipSpec, DigestCache, FrameSource, VideoError, open_frames
from omnivmed.data.video.windows import window_starts

FRAME_SOURCES = ("folders", "videos")


@dataclass(frozen=True)
class QaRecord:
    """One question about one frame, as the source's text files give it."""

    split: str
    video: str  # the source's video/sequence/case id
    frame: int  # the QA frame's number (the integer of its name)
    question: str
    answer: str
    variant: str  # Classification / Sentence
    qa_file: str  # relative to the raw folder
    line: int
    category: str = ""  # PSI-AVA's C1..C4


@dataclass(frozen=True)
class VideoRecords:
    """A work unit: the QA records of one video (one split), in build order; ``number`` names its tally."""

    number: int
    records: tuple[QaRecord, ...]


# Per-unit counts (clips padded) under the build's clips/ folder: units may run in other
# processes, which share the build's output folder (they write the clip cache there too).
TALLY_DIR = "unit-counters"


@dataclass(frozen=True)
class CaptionWindow:
    """A window of a whole video for captioning, with the QA lines of the frames it spans."""

    split: str
    video: str
    source_path: str  # frame folder or video, relative to raw
    clip: Clip
    qa: tuple[tuple[int, str, str], ...]  # (frame index, question, answer)


@dataclass(frozen=True)
class AnswerLabel:
    task: str
    answer_type: str  # closed for yes/no, open otherwise
    class_index: int | None  # in the layout's vocabulary; None for sentence answers
    free_answer: bool = False  # a classification answer that no vocabulary lists (PSI-AVA C2)


def split_line(text: str, fields: int) -> list[str] | None:
    """'question|answer' (or 'keyframe|question|answer'): the answer keeps any further '|'."""
    parts = text.rstrip("\r\n").split("|", fields - 1)
    if len(parts) != fields or not all(p.strip() for p in parts):
        return None
    return [p.strip() for p in parts]


def read_qa_lines(path: Path, raw: Path, fields: int) -> Iterator[tuple[int, list[str]] | Reject]:
    """Numbered, split lines of a QA text file; a line without the separator is a Reject."""
    rel = relative(path, raw)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        why = err.strerror if isinstance(err, OSError) else str(err)
        yield Reject(rel, "-", "unreadable_qa_file", f"{rel}: cannot read ({why})")
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = split_line(line, fields)
        if parts is None:
            want = "keyframe|question|answer" if fields == 3 else "question|answer"
            yield Reject(rel, f"line {number}", "missing_separator", f"{rel} line {number}: not '{want}': {line[:80]!r}")
            continue
        yield number, parts


def frame_qa_records(
    qa_file: Path, raw: Path, *, split: str, video: str, variant: str, frame_multiple: int = 1
) -> Iterator[QaRecord | Reject]:
    """The records of a per-frame QA file (``<frame>.txt``, ``frame005_QA.txt``): the frame is the
    number in its name; frames that are not a multiple of ``frame_multiple`` are left out."""
    rel = relative(qa_file, raw)
    frame = trailing_int(qa_file.stem)
    if frame is None:
        yield Reject(rel, "-", "bad_frame_name", f"{rel}: no frame number in the file name")
        return
    if frame % frame_multiple:
        return
    for item in read_qa_lines(qa_file, raw, 2):
        if isinstance(item, Reject):
            yield item
            continue
        line, (question, answer) = item
        yield QaRecord(split, video, frame, question, answer, variant, rel, line)


def clip_option_specs() -> tuple[BuilderOption, ...]:
    return (
        BuilderOption("frames", "folders", "where frames come from: folders (the frame images) or videos (the source videos)"),
        BuilderOption("video_dir", "videos", "folder of the source videos, relative to raw (with -o frames=videos)"),
        BuilderOption("names_fps", "", "rate the frame numbers count at, to find a QA frame in a video (default: the video's fps)"),
        BuilderOption("clip_length", "8", "frames per clip"),
        BuilderOption("stride", "1", "step between clip frames, in source frames"),
        BuilderOption("anchor", "end", "the QA frame ends the clip (end) or is its middle (center)"),
        BuilderOption("short_side", "224", "resize frames so the shorter side is this many pixels (0 keeps them)"),
        BuilderOption("jpeg_quality", "90", "JPEG quality of the stored frames"),
        BuilderOption("at_start", "pad", "a clip running past the video's start: pad (repeat the first frame) or drop"),
    )


def _int_option(options: dict[str, str], name: str) -> int:
    try:
        return int(options[name])
    except ValueError:
        raise BuilderOptionError(f"option {name}={options[name]!r} is not an integer") from None


class SurgicalVqaBuilder(Builder):
    """Subclasses set ``info``, ``vocabulary`` and implement the layout methods."""

    vocabulary: Vocabulary
    default_names_fps: float | None = None  # e.g. Cholec80: frame numbers count 25 fps video frames
    extra_option_specs: tuple[BuilderOption, ...] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.option_specs = (*clip_option_specs(), *cls.extra_option_specs)

    def configure(self) -> None:
        o = self.options
        if o["frames"] not in FRAME_SOURCES:
            raise BuilderOptionError(f"option frames={o['frames']!r} is not one of {', '.join(FRAME_SOURCES)}")
        try:
            self.spec = ClipSpec(
                length=_int_option(o, "clip_length"),
                stride=_int_option(o, "stride"),
                anchor=o["anchor"],
                short_side=_int_option(o, "short_side"),
                jpeg_quality=_int_option(o, "jpeg_quality"),
                at_start=o["at_start"],
            )
            self.names_fps = float(o["names_fps"]) if o["names_fps"] else self.default_names_fps
        except ValueError as err:
            raise BuilderOptionError(f"{self.info.name}: {err}") from None
        self._work: Path | None = None
        self._padded = 0
        self._tallies: int | None = None  # units whose tally files make the counters (None: counted here)
        self.clip_stats: dict[str, int] = {}

    def begin(self, out: Path) -> None:
        self._work = out

    def counters(self) -> dict[str, int]:
        if self._tallies is None or self._work is None:
            return {"clips_padded": self._padded}
        folder = self._work / "clips" / TALLY_DIR
        padded = 0
        for number in range(self._tallies):
            path = folder / f"{number}.json"
            try:
                padded += int(json.loads(path.read_text(encoding="utf-8"))["clips_padded"])
            except (OSError, ValueError, KeyError, TypeError):
                raise RuntimeError(f"{path}: the count of work unit {number} is missing or unreadable") from None
        return {"clips_padded": padded}

    # -- the layout ---------------------------------------------------------------------------

    @abstractmethod
    def records(self, raw: Path) -> Iterator[QaRecord | Reject]:
        """Every QA line of the layout (any order), or a Reject for a bad file or line."""

    @abstractmethod
    def frame_folder(self, raw: Path, record: QaRecord) -> Path:
        """The folder of the record's video frames."""

    @abstractmethod
    def video_names(self, video: str) -> tuple[str, ...]:
        """File stems a source video of ``video`` may have (e.g. Cholec80 '1' -> 'video01')."""

    @abstractmethod
    def label(self, record: QaRecord) -> AnswerLabel:
        """Task, answer type and class index of the record's answer."""

    # -- shared -------------------------------------------------------------------------------

    def check_frames_source(self, raw: Path) -> None:
        """With ``-o frames=videos``: stop with one line unless the video folder exists and holds files."""
        if self.options["frames"] != "videos":
            return
        folder = raw / self.options["video_dir"]
        if not folder.is_dir():
            what = "is a file" if folder.exists() else "does not exist"
            raise LayoutError(
                f"{folder}: {what}; -o frames=videos reads the source videos from {self.options['video_dir']}/ under --raw "
                "(set -o video_dir=... or use -o frames=folders for the frame images)"
            )
        if not any(p.is_file() for p in folder.iterdir()):
            raise LayoutError(f"{folder}: holds no video files; -o frames=videos needs the source videos there")

    def video_file(self, raw: Path, video: str) -> Path:
        folder = raw / self.options["video_dir"]
        for stem in self.video_names(video):
            for found in sorted(folder.glob(f"{stem}.*")) if folder.is_dir() else ():
                if found.is_file():
                    return found
        names = ", ".join(f"{s}.*" for s in self.video_names(video))
        raise VideoError("missing_video", relative(folder, raw), f"no source video {names} for {video!r}")

    def generate(self, raw: Path) -> Iterator[BuilderItem]:
        self._padded, self._tallies = 0, None
        records, rejects = self._sorted_records(raw)
        yield from rejects
        yield from self._clips(raw, records, clean_cache=True)

    def work_units(self, raw: Path) -> list[Unit]:
        """The records' rejects, then one unit per video (split, video), in :meth:`generate`'s order."""
        self._padded = 0
        records, rejects = self._sorted_records(raw)
        units: list[Unit] = [ReadyItems(tuple(rejects))] if rejects else []
        videos = runs(records, lambda r: (r.split, r.video))
        units += [VideoRecords(number, run) for number, run in enumerate(videos)]
        if self._work is not None:
            ClipCache(self._work / "clips")  # removes what a killed build left, before the units write there
            shutil.rmtree(self._work / "clips" / TALLY_DIR, ignore_errors=True)  # a previous build's
            self._tallies = len(videos)
        return units

    def generate_unit(self, raw: Path, unit: Unit) -> Iterator[BuilderItem]:
        if not isinstance(unit, VideoRecords):
            yield from super().generate_unit(raw, unit)
            return
        before = self._padded
        # Other processes write clips beside this one: never clean their temporaries.
        yield from self._clips(raw, list(unit.records), clean_cache=False)
        if self._work is not None:
            tally = {"clips_padded": self._padded - before}
            atomic_write_bytes(self._work / "clips" / TALLY_DIR / f"{unit.number}.json", json.dumps(tally).encode())

    def _sorted_records(self, raw: Path) -> tuple[list[QaRecord], list[Reject]]:
        """Held-out splits first (deduplication keeps them), then by video and frame so that
        decoding moves forward through each video; the layout's rejects apart."""
        order = {split: n for n, split in enumerate(HELD_OUT_FIRST)}
        records, rejects = [], []
        for item in self.records(raw):
            (rejects if isinstance(item, Reject) else records).append(item)
        records.sort(key=lambda r: (order[r.split], r.video, r.variant, r.frame, r.qa_file, r.line))
        return records, rejects

    def _clips(self, raw: Path, records: list[QaRecord], clean_cache: bool) -> Iterator[BuilderItem]:
        """The records' samples (or rejects), clips cut in order; padded clips counted."""
        cache = ClipCache(self._work / "clips", clean=clean_cache) if self._work is not None else None
        digests = DigestCache(self._work / "clips" / "video-digests.json") if self._work is not None else None
        maker = ClipMaker(self.spec, cache)
        sources: OrderedDict[Path, FrameSource | VideoError] = OrderedDict()
        last: tuple[tuple, Clip] | None = None
        try:
            for record in records:
                try:
                    source = self._source(raw, record, sources, digests)
                    index = self._frame_index(record, source)
                    key = (source.path, index)
                    if last is not None and last[0] == key:
                        clip = last[1]  # several questions about one frame share its clip
                    else:
                        clip = maker.clip(source, index)
                        self._padded += clip.padded > 0
                        last = (key, clip)
                except VideoError as err:
                    yield self._reject(err, raw, record)
                    continue
                yield from self._sample(raw, record, clip, source)
        finally:
            for source in sources.values():
                if not isinstance(source, VideoError):
                    source.close()
            # Not in the manifest (a resumed build reuses what a clean one makes): for logs and tests.
            self.clip_stats = {"made": maker.made, "reused": maker.reused}

    def windows(self, raw: Path, out: Path, step: int) -> Iterator[CaptionWindow | Reject]:
        """The second mode: every video cut into windows of ``clip_length`` frames at ``stride``, one
        window every ``step`` frames, each with the QA lines of the frames it covers (the captioner's
        input). Clips are cached under ``out/clips`` like the QA clips."""
        cache = ClipCache(out / "clips")
        digests = DigestCache(out / "clips" / "video-digests.json")
        maker = ClipMaker(self.spec, cache)
        rejects, videos = self.window_videos(raw)
        yield from rejects
        sources: OrderedDict[Path, FrameSource | VideoError] = OrderedDict()
        try:
            for split, video, records in videos:
                try:
                    source = self._source(raw, records[0], sources, digests)
                except VideoError as err:
                    yield self._reject(err, raw, records[0])
                    continue
                anchors = window_starts(source.indices(), self.spec, step)
                yield from self.video_windows(raw, split, video, records, source, anchors, maker)
        finally:
            for source in sources.values():
                if not isinstance(source, VideoError):
                    source.close()

    def window_videos(self, raw: Path) -> tuple[list[Reject], list[tuple[str, str, tuple[QaRecord, ...]]]]:
        """The records' rejects, and the videos to cut as (split, video, its QA records), held-out splits first."""
        rejects: list[Reject] = []
        by_video: dict[tuple[str, str], list[QaRecord]] = {}
        for item in self.records(raw):
            if isinstance(item, Reject):
                rejects.append(item)
            else:
                by_video.setdefault((item.split, item.video), []).append(item)
        order = {split: n for n, split in enumerate(HELD_OUT_FIRST)}
        videos = sorted(by_video, key=lambda k: (order[k[0]], k[1]))
        return rejects, [(split, video, tuple(by_video[(split, video)])) for split, video in videos]

    def video_windows(
        self, raw: Path, split: str, video: str, records: Sequence[QaRecord], source: FrameSource, anchors: Iterable[int], maker: ClipMaker
    ) -> Iterator[CaptionWindow | Reject]:
        """The windows of one opened video at ``anchors``, each with the QA lines of the frames it covers."""
        qa_by_index: dict[int, list[QaRecord]] = {}
        for record in records:
            qa_by_index.setdefault(self._frame_index(record, source), []).append(record)
        for anchor in anchors:
            try:
                clip = maker.clip(source, anchor)
            except VideoError as err:
                yield self._reject(err, raw, records[0])
                continue
            covered = range(clip.frame_indices[0], clip.frame_indices[-1] + 1)
            qa = tuple(
                (index, r.question, r.answer)
                for index in covered
                for r in sorted(qa_by_index.get(index, ()), key=lambda r: (r.variant, r.qa_file, r.line))
            )
            yield CaptionWindow(split, video, relative(source.path, raw), clip, qa)

    def _source(self, raw: Path, record: QaRecord, sources: OrderedDict, digests) -> FrameSource:
        if self.options["frames"] == "videos":
            path = self.video_file(raw, record.video)
        else:
            path = self.frame_folder(raw, record)
        if path not in sources:
            try:
                sources[path] = open_frames(path, digest_cache=digests)
            except VideoError as err:
                sources[path] = err  # reported once per record that needs it, opened once
            while len(sources) > 2:  # records come sorted by video: two open sources suffice
                _, old = sources.popitem(last=False)
                if not isinstance(old, VideoError):
                    old.close()
        found = sources[path]
        if isinstance(found, VideoError):
            raise found
        sources.move_to_end(path)
        return found

    def _frame_index(self, record: QaRecord, source: FrameSource) -> int:
        """The QA frame's index in ``source``: its number in a folder; in a video, its time at the
        rate the numbers count at, times the video's fps."""
        if self.options["frames"] != "videos" or source.fps is None:
            return record.frame
        names_fps = self.names_fps or source.fps
        return int(round(record.frame / names_fps * source.fps))

    def _reject(self, err: VideoError, raw: Path, record: QaRecord) -> Reject:
        file = relative(err.file, raw)
        return Reject(file, f"{record.qa_file} line {record.line}", err.reason, f"{file}: {err.detail}")

    def _sample(self, raw: Path, record: QaRecord, clip: Clip, source: FrameSource) -> Iterator[BuilderItem]:
        label = self.label(record)
        if record.variant == "Classification" and label.class_index is None and not label.free_answer:
            yield Reject(
                record.qa_file,
                f"line {record.line}",
                "answer_not_in_vocabulary",
                f"{record.qa_file} line {record.line}: {record.answer!r} is none of the {len(self.vocabulary.classes)} "
                f"classes of {self.vocabulary.name}",
            )
            return
        fields = [
            ("video", record.video),
            ("frame", str(record.frame)),
            ("variant", record.variant),
            ("clip_id", clip.id),
            ("clip", self.spec.key()),
            ("padded_frames", str(clip.padded)),
        ]
        if record.category:
            fields.append(("category", record.category))
        if label.class_index is not None:
            fields += [("answer_vocabulary", self.vocabulary.name), ("answer_class", str(label.class_index))]
        try:
            yield make_sample(
                source=self.info.name,
                split=record.split,
                task=label.task,
                modality="endoscopy",
                visual_kind="video",
                frames=clip.frames,
                frame_format="jpeg",
                visual_meta=VisualMeta(
                    original_shape=clip.size,
                    fps=clip.fps,
                    timestamps_s=clip.timestamps_s,
                    frame_indices=clip.frame_indices,
                ),
                conversations=[Turn("user", f"{VIDEO_TOKEN}\n{record.question}"), Turn("assistant", record.answer)],
                answer_type=label.answer_type,
                provenance=Provenance(
                    raw_paths=(record.qa_file, relative(source.path, raw)),
                    record_id=f"{record.qa_file}:{record.line}",
                    license=self.info.license,
                    source_url=self.info.homepage,
                    fields=tuple(fields),
                ),
            )
        except SchemaError as err:
            yield Reject(record.qa_file, f"line {record.line}", "schema_violation", f"{record.qa_file} line {record.line}: {err}")


def yes_no_or_open(answer: str) -> str:
    return "closed" if answer.strip().lower() in ("yes", "no") else "open"


def classification_label(vocabulary: Vocabulary, record: QaRecord, task: str, free: bool = False) -> AnswerLabel:
    """Sentence answers are free text: surgical VQA with no class; classification answers carry their class."""
    if record.variant != "Classification":
        return AnswerLabel("surgical_vqa", yes_no_or_open(record.answer), None)
    return AnswerLabel(task, yes_no_or_open(record.answer), vocabulary.index(record.answer), free_answer=free)


def variants_option(options: dict[str, str], allowed: tuple[str, ...]) -> tuple[str, ...]:
    chosen = tuple(v.strip() for v in options["variants"].split(",") if v.strip())
    unknown = [v for v in chosen if v not in allowed]
    if not chosen or unknown:
        raise BuilderOptionError(f"option variants={options['variants']!r}: choose from {', '.join(allowed)}")
    return chosen


def trailing_int(stem: str) -> int | None:
    """'frame012' -> 12, '100_QA' -> 100 (the number before the first '_' when it leads), else None."""
    head = stem.split("_")[0]
    if head.isdigit():
        return int(head)
    digits = ""
    for char in reversed(stem.split("_")[0]):
        if not char.isdigit():
            break
        digits = char + digits
    return int(digits) if digits else None
