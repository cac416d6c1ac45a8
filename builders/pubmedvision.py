"""PubMedVision: 1.3M medical VQA rows on PubMed figures (HuatuoGPT-Vision, Chen et al. 2024).

Reads the Hugging Face layout (``FreedomIntelligence/PubMedVision``):
``PubMedVision_Alignment_VQA.json`` and ``PubMedVision_InstructionTuning_VQA.json``
(647,031 rows each) beside the images, either unpacked into ``images/`` or
left in the published ``images_N.zip`` files (at the root or in ``images/``),
which are read in place.

A row is ``{id, image: [paths], conversations: [{from: human|gpt, value}],
modality, body_part}``. OmniV-Med trains stage 1 on the Alignment rows
(captions: task ``image_caption``) and stage 2 on the InstructionTuning rows
(task ``vqa``); ``-o subset=`` picks them. PubMedVision has only a train split.

* Rows with several images (about 22%) become ``multi_image`` Samples with
  one ``<image>`` placeholder per image. Rows whose turns hold no placeholder
  get them prepended to the first human turn (counted); rows whose
  placeholder count differs from their image count are rejected.
* A row whose image is in neither the folder nor a zip is rejected
  (``missing_image``; the published zips lack 9 of the images).
* The modality tag is mapped onto the schema's vocabulary; an unknown tag
  becomes ``unspecified`` and is counted. The original modality and
  body_part tags stay in the provenance fields.
* The counters are read off the annotation rows alone (a row whose image
  list and turns are valid), never off the images, so the process that
  splits the build into work units counts them while the units run
  elsewhere. A work unit is ``ROWS_PER_UNIT`` consecutive rows, named by
  their byte offset in the JSON file, so no process holds a whole file.

Only the JSON files are hashed into the manifest: the zips are a fixed
release of 57 GB.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from omnivmed.builders.base import (
    Builder,
    BuilderItem,
    BuilderOption,
    BuilderOptionError,
    LayoutError,
    ReadyItems,
    Reject,
    SourceInfo,
    Unit,
)
from omnivmed.builders.json_stream import json_rows, json_rows_at, json_rows_with_offsets
from omnivmed.builders.pubmedvision_modalities import map_modality
from omnivmed.builders.vqa2d import RecordError, reject_from
from omnivmed.builders.zip_images import ZipImageStore
from omnivmed.data.media import EncodedImage, MediaError, encode_image_bytes
from omnivmed.data.schema import IMAGE_TOKEN, Provenance, SchemaError, Turn, VisualMeta, make_sample

ALIGNMENT_JSON = "PubMedVision_Alignment_VQA.json"
INSTRUCTION_JSON = "PubMedVision_InstructionTuning_VQA.json"
IMAGE_DIR = "images"
ZIP_GLOBS = ("images_*.zip", f"{IMAGE_DIR}/images_*.zip")
SPLIT = "train"  # the only split PubMedVision publishes

# subset -> (annotation file, task)
SUBSETS = {
    "alignment": (ALIGNMENT_JSON, "image_caption"),
    "instruction": (INSTRUCTION_JSON, "vqa"),
}
SUBSET_CHOICES = ("instruction", "alignment", "both")
ROLES = {"human": "user", "gpt": "assistant", "system": "system"}

INFO = SourceInfo(
    name="pubmedvision",
    description=(
        "PubMedVision: 1.3M medical VQA rows on PubMed figures, refined by GPT-4V "
        "(Alignment captions and InstructionTuning QA, 647,031 rows each; train only)."
    ),
    homepage="https://huggingface.co/datasets/FreedomIntelligence/PubMedVision",
    license="Apache-2.0",
    citation=(
        "Chen J, Gui C, Ouyang R, Gao A, Chen S, Chen GH, Wang X, Zhang R, Cai Z, Ji K, Yu G, Wan X, Wang B. "
        "HuatuoGPT-Vision, Towards Injecting Medical Visual Knowledge into Multimodal LLMs at Scale. "
        "arXiv:2406.19280 (2024)."
    ),
    hf_repo="FreedomIntelligence/PubMedVision",
)


# Rows per work unit (a few MB of images each).
ROWS_PER_UNIT = 256


@dataclass(frozen=True)
class RowRun:
    """A work unit: ``count`` consecutive rows of one annotation file, from the one at ``start_byte``."""

    subset: str
    file: str  # the annotation file's name, at the top of the raw folder
    task: str
    first_index: int
    start_byte: int
    count: int


# Per process: the zip index is built once, not once per work unit (20 central directories).
_STORES: dict[tuple, ZipImageStore] = {}


def _shared_store(raw: Path) -> ZipImageStore:
    """This process's store for ``raw``'s zips, as long as they are the same files (size, mtime)."""
    archives = zip_archives(raw)
    key = (str(raw), tuple((str(a), a.stat().st_size, a.stat().st_mtime_ns) for a in archives))
    if key not in _STORES:
        for store in _STORES.values():
            store.close()
        _STORES.clear()
        _STORES[key] = ZipImageStore(raw, archives)
    return _STORES[key]


def subset_files(subset: str) -> list[tuple[str, str, str]]:
    """(subset name, annotation file, task) for ``-o subset=``."""
    names = ("alignment", "instruction") if subset == "both" else (subset,)
    return [(name, *SUBSETS[name]) for name in names]


def zip_archives(raw: Path) -> list[Path]:
    return sorted({p for pattern in ZIP_GLOBS for p in raw.glob(pattern) if p.is_file()})


class PubMedVisionBuilder(Builder):
    info = INFO
    option_specs = (
        BuilderOption(
            "subset",
            "instruction",
            "instruction (InstructionTuning rows -> vqa), alignment (Alignment rows -> image_caption) or both",
        ),
    )

    def configure(self) -> None:
        if self.options["subset"] not in SUBSET_CHOICES:
            raise BuilderOptionError(
                f"pubmedvision: subset {self.options['subset']!r} is not one of {', '.join(SUBSET_CHOICES)}"
            )
        self._counts: Counter = Counter()

    def counters(self) -> dict[str, int]:
        return dict(self._counts)

    def check_layout(self, raw: Path) -> None:
        wanted = [name for _, name, _ in subset_files(self.options["subset"])]
        expected = (
            f"expected {' and '.join(wanted)} with the images in {IMAGE_DIR}/ or in the published images_N.zip files "
            f"(Hugging Face {INFO.hf_repo})"
        )
        if not raw.is_dir():
            raise LayoutError(f"{raw}: no such folder ({expected})")
        missing = [name for name in wanted if not (raw / name).is_file()]
        if missing:
            raise LayoutError(f"{raw}: not a PubMedVision copy for subset={self.options['subset']}, missing {', '.join(missing)}: {expected}")
        if not (raw / IMAGE_DIR).is_dir() and not zip_archives(raw):
            raise LayoutError(f"{raw}: found the PubMedVision JSON but neither {IMAGE_DIR}/ nor images_N.zip ({expected})")

    def input_files(self, raw: Path) -> list[Path]:
        return [raw / name for _, name, _ in subset_files(self.options["subset"])]

    def generate(self, raw: Path) -> Iterator[BuilderItem]:
        self._counts = Counter()
        with ZipImageStore(raw, zip_archives(raw)) as images:
            for subset, name, task in subset_files(self.options["subset"]):
                yield from self._rows(raw / name, subset, task, images)
            yield from images.open_archives()  # zips that could not be opened

    def work_units(self, raw: Path) -> list[Unit]:
        """Runs of ``ROWS_PER_UNIT`` rows by byte offset; the counters are read here, off the rows."""
        self._counts = Counter()
        units: list[Unit] = []
        for subset, name, task in subset_files(self.options["subset"]):
            run: list[tuple[int, int]] = []  # (index, offset) of the rows of the unit being gathered
            for item in [*json_rows_with_offsets(raw / name, raw), None]:
                if isinstance(item, tuple):
                    index, row, offset = item
                    self._counts.update(annotation_counts(row))
                    run.append((index, offset))
                if run and (len(run) == ROWS_PER_UNIT or not isinstance(item, tuple)):
                    units.append(RowRun(subset, name, task, run[0][0], run[0][1], len(run)))
                    run = []
                if isinstance(item, Reject):
                    units.append(ReadyItems((item,)))  # the file broke off: the rows before are kept
        with ZipImageStore(raw, zip_archives(raw)) as images:
            broken = images.open_archives()
        if broken:
            units.append(ReadyItems(tuple(broken)))
        return units

    def generate_unit(self, raw: Path, unit: Unit) -> Iterator[BuilderItem]:
        if not isinstance(unit, RowRun):
            yield from super().generate_unit(raw, unit)
            return
        images = _shared_store(raw)
        rows = json_rows_at(raw / unit.file, unit.start_byte, unit.count)
        for index, row in enumerate(rows, start=unit.first_index):
            yield self._row_item(row, index, unit.file, unit.subset, unit.task, images)

    def _rows(self, path: Path, subset: str, task: str, images: ZipImageStore) -> Iterator[BuilderItem]:
        for item in json_rows(path, path.parent):
            if isinstance(item, Reject):
                yield item  # the file broke off: the rows before were kept
                continue
            index, row = item
            self._counts.update(annotation_counts(row))
            yield self._row_item(row, index, path.name, subset, task, images)

    def _row_item(self, row, index: int, rel: str, subset: str, task: str, images: ZipImageStore) -> BuilderItem:
        record_id = _record_id(row, rel, index)
        try:
            return self._sample(row, subset, task, record_id, images)
        except (RecordError, MediaError, SchemaError) as err:
            return reject_from(err, rel, record_id)

    def _sample(self, row, subset: str, task: str, record_id: str, images: ZipImageStore):
        if not isinstance(row, dict):
            raise RecordError("malformed_record", f"expected an object, found {type(row).__name__}")
        paths = _image_paths(row.get("image"))
        turns = _turns(row.get("conversations"))
        turns = _with_placeholders(turns, len(paths))
        frames = _same_format([images.get(p) for p in paths])
        tag = row.get("modality")
        modality, _ = map_modality(tag)
        fields = {"id": row.get("id"), "modality": tag, "body_part": row.get("body_part"), "subset": subset}
        return make_sample(
            source=INFO.name,
            split=SPLIT,
            task=task,
            modality=modality,
            visual_kind="image" if len(frames) == 1 else "multi_image",
            frames=[f.data for f in frames],
            frame_format=frames[0].format,
            visual_meta=VisualMeta(original_shape=(frames[0].height, frames[0].width)) if len(frames) == 1 else None,
            conversations=turns,
            answer_type="open" if task == "vqa" else None,
            provenance=Provenance(
                raw_paths=tuple(paths),
                record_id=record_id,
                license=INFO.license,
                source_url=INFO.homepage,
                fields=tuple(sorted((k, str(v)) for k, v in fields.items() if v is not None)),
            ),
        )



def _with_placeholders(turns: list[Turn], n_images: int) -> list[Turn]:
    found = sum(t.content.count(IMAGE_TOKEN) for t in turns)
    if found == n_images:
        return turns
    if found:
        raise RecordError("placeholder_mismatch", f"{found} {IMAGE_TOKEN} placeholders for {n_images} images")
    first_user = next((i for i, t in enumerate(turns) if t.role == "user"), None)
    if first_user is None:
        raise RecordError("malformed_record", "conversations have no human turn")
    turn = turns[first_user]
    turns = list(turns)
    turns[first_user] = Turn(turn.role, f"{IMAGE_TOKEN}\n" * n_images + turn.content)
    return turns


def annotation_counts(row) -> list[str]:
    """The counters a row adds, read off its annotation alone: ``placeholders_added`` when its turns
    hold no placeholder, ``modality_unspecified`` when its tag is unknown (only rows whose image
    list and turns are valid count)."""
    if not isinstance(row, dict):
        return []
    try:
        paths = _image_paths(row.get("image"))
        turns = _turns(row.get("conversations"))
        _with_placeholders(turns, len(paths))
    except RecordError:
        return []
    counts = []
    if not any(IMAGE_TOKEN in t.content for t in turns):
        counts.append("placeholders_added")
    if not map_modality(row.get("modality"))[1]:
        counts.append("modality_unspecified")
    return counts


def _record_id(row, rel: str, index: int) -> str:
    value = row.get("id") if isinstance(row, dict) else None
    return f"{rel}:{value}" if isinstance(value, (str, int)) and str(value).strip() else f"{rel}:#{index}"


def _image_paths(value) -> list[str]:
    """The row's image list (the Original_Caption config has a single string)."""
    paths = [value] if isinstance(value, str) else value
    if not isinstance(paths, list) or not paths:
        raise RecordError("missing_image", "the row lists no image")
    if not all(isinstance(p, str) and p.strip() for p in paths):
        raise RecordError("missing_image", "the image list holds an empty or non-text path")
    return [p.strip() for p in paths]


def _turns(value) -> list[Turn]:
    if not isinstance(value, list) or not value:
        raise RecordError("malformed_record", "conversations is missing or not a list")
    turns = []
    for number, turn in enumerate(value):
        if not isinstance(turn, dict):
            raise RecordError("malformed_record", f"turn {number} is not an object")
        role = ROLES.get(str(turn.get("from", "")).strip())
        if role is None:
            raise RecordError("unknown_role", f"turn {number} is from {turn.get('from')!r}, not human/gpt/system")
        text = turn.get("value")
        if not isinstance(text, str) or not text.strip():
            raise RecordError("empty_turn", f"turn {number} ({turn.get('from')}) has no text")
        turns.append(Turn(role, text.strip()))
    return turns


def _same_format(frames: list[EncodedImage]) -> list[EncodedImage]:
    """One frame_format per Sample: a row mixing JPEG and PNG is stored as PNG throughout (lossless)."""
    if len({f.format for f in frames}) <= 1:
        return frames
    return [f if f.format == "png" else _as_png(f) for f in frames]


def _as_png(image: EncodedImage) -> EncodedImage:
    import io

    from PIL import Image

    with Image.open(io.BytesIO(image.data)) as img:
        buf = io.BytesIO()
        img.save(buf, format="PNG")
    return encode_image_bytes(buf.getvalue(), "converted frame")
