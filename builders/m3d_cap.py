"""M3D-Cap: CT volumes of Radiopaedia cases with their reports (Bai et al. 2024).

Reads a copy the user already has (the hub copy was taken down): the index
``M3D_Cap.json`` (at the top, in ``M3D_Cap/`` or in ``M3D_Cap_npy/``), a dict
of ``train``/``validation``/``test`` lists of ``{"image": ".../Series.npy",
"text": ".../text.txt"}``, and for each entry either M3D's prepared ``.npy``
or the raw slice folder ``M3D_Cap/{ct_case,ct_quizze}/<case>/<series>/`` (see
:mod:`omnivmed.builders.m3d`). The splits are M3D's own.

Each entry gives, per configured task, a ``report_generation`` sample (one of
a few report instructions, picked by a hash of the volume's path, never at
random) and an ``image_text_retrieval`` sample (the volume alone, answered by
its report). The report is the text M3D trains on: the findings, else the
discussion, else the whole text.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from omnivmed.builders.base import HELD_OUT_FIRST, Builder, BuilderItem, BuilderOption, LayoutError, ReadyItems, Reject, Unit, runs
from omnivmed.builders.m3d import (
    canonical_path,
    comma_list,
    group_of,
    load_volume,
    prefers_slices,
    report_text,
    resolve_text,
    resolve_volume,
    source_info,
)
from omnivmed.builders.volume_samples import (
    EncodedVolumeCache,
    relative,
    volume_option_specs,
    volume_reject,
    volume_sample,
    volume_settings,
)
from omnivmed.builders.vqa2d import load_json
from omnivmed.data.schema import SchemaError
from omnivmed.data.volume import VolumeError
from omnivmed.data.volume.encode import PNG_ENCODING

INDEX_NAME = "M3D_Cap.json"
INDEX_LOCATIONS = (INDEX_NAME, f"M3D_Cap/{INDEX_NAME}", f"M3D_Cap_npy/{INDEX_NAME}")
TASKS = ("report_generation", "image_text_retrieval")
# The index's split keys -> ours ("val" is not in M3D's file; accepted for hand-made indexes).
SPLIT_KEYS = {"test": "test", "validation": "validation", "val": "validation", "train": "train"}

INFO = source_info(
    "m3d_cap",
    "M3D-Cap: CT volumes of Radiopaedia cases (ct_case, ct_quizze) with their reports, as report generation and "
    "volume-text retrieval; from your own copy (M3D_Cap.json plus M3D's .npy files or the raw slice folders).",
)

REPORT_PROMPTS: tuple[str, ...] = (
    "Write a radiology report describing the findings in this CT volume.",
    "Describe the findings of this CT scan.",
    "What does this CT scan show? Write the findings as a report.",
    "Generate a concise report of the findings in this 3D CT image.",
    "Caption this CT volume with its key findings.",
    "Summarize the radiological findings visible in this CT examination.",
)


def report_prompt(image_path: str) -> str:
    """The report instruction for a volume: fixed by a sha256 of its path from ct_case/ct_quizze on.

    The copy-specific prefix plays no part, so every copy gives a volume the same prompt.
    """
    digest = hashlib.sha256(canonical_path(image_path).encode("utf-8")).digest()
    return REPORT_PROMPTS[int.from_bytes(digest[:8], "big") % len(REPORT_PROMPTS)]


@dataclass(frozen=True)
class VolumeEntries:
    """A work unit: one volume, as the consecutive index entries of one split that name it."""

    key: str  # the index's split key
    entries: tuple[tuple[int, Any], ...]  # (position in the split's list, entry)


def _image_of(indexed: tuple[int, Any]):
    entry = indexed[1]
    return entry.get("image") if isinstance(entry, dict) else None


def find_index(raw: Path) -> Path | None:
    return next((raw / p for p in INDEX_LOCATIONS if (raw / p).is_file()), None)


class M3dCapBuilder(Builder):
    info = INFO
    frame_encoding = PNG_ENCODING
    option_specs = (
        *volume_option_specs("m3d"),
        BuilderOption("tasks", ",".join(TASKS), f"comma list of the tasks to emit per volume: {', '.join(TASKS)}"),
    )

    def configure(self) -> None:
        self.settings = volume_settings(self.options)
        self.tasks = comma_list(self.options["tasks"], TASKS, "tasks", INFO.name)

    def check_layout(self, raw: Path) -> None:
        expected = (
            f"expected {INDEX_NAME} (at the top, in M3D_Cap/ or in M3D_Cap_npy/) with the ct_case/ct_quizze volumes "
            f"as M3D's .npy files or slice folders; M3D-Cap is no longer downloadable, so pass your own copy with "
            f"`omnivmed-data download {INFO.name} --from PATH`"
        )
        if not raw.is_dir():
            raise LayoutError(f"{raw}: no such folder ({expected})")
        if find_index(raw) is None:
            raise LayoutError(f"{raw}: not an M3D-Cap copy: {expected}")

    def input_files(self, raw: Path) -> list[Path]:
        index = find_index(raw)
        return [index] if index is not None else []

    def estimated_records(self, raw: Path) -> int | None:
        index = find_index(raw)
        try:
            data = json.loads(index.read_text(encoding="utf-8"))
        except (OSError, ValueError, AttributeError):
            return None
        if not isinstance(data, dict):
            return None
        entries = sum(len(v) for k, v in data.items() if k in SPLIT_KEYS and isinstance(v, list))
        return entries * len(self.tasks)

    def generate(self, raw: Path) -> Iterator[BuilderItem]:
        cache = EncodedVolumeCache(lambda path: load_volume(raw, path, self.settings))
        rel_index = relative(find_index(raw), raw)
        for unit in self._units(raw):
            yield from self._unit_items(raw, rel_index, unit, cache)

    def work_units(self, raw: Path) -> list[Unit]:
        return list(self._units(raw))

    def generate_unit(self, raw: Path, unit: Unit) -> Iterator[BuilderItem]:
        if isinstance(unit, VolumeEntries):
            cache = EncodedVolumeCache(lambda path: load_volume(raw, path, self.settings), max_items=1)
            yield from self._unit_items(raw, relative(find_index(raw), raw), unit, cache)
        else:
            yield from super().generate_unit(raw, unit)

    def _units(self, raw: Path) -> Iterator[VolumeEntries | ReadyItems]:
        """The index's rejects, then per split (held-out first) its entries in runs about one volume."""
        index = find_index(raw)
        rel_index = relative(index, raw)
        data, reject = load_json(index, raw, dict)
        if reject is not None:
            yield ReadyItems((reject,))
            return
        unknown = tuple(
            Reject(rel_index, key, "unknown_split", f"{rel_index}: split {key!r} is not one of {', '.join(SPLIT_KEYS)}")
            for key in data
            if key not in SPLIT_KEYS
        )
        if unknown:
            yield ReadyItems(unknown)
        order = {split: n for n, split in enumerate(HELD_OUT_FIRST)}
        for key in sorted((k for k in data if k in SPLIT_KEYS), key=lambda k: order[SPLIT_KEYS[k]]):
            entries = data[key]
            if not isinstance(entries, list):
                yield ReadyItems((Reject(rel_index, key, "malformed_json", f"{rel_index}: split {key!r} is not a list of entries"),))
                continue
            for run in runs(list(enumerate(entries)), _image_of):
                yield VolumeEntries(key, run)

    def _unit_items(self, raw: Path, rel_index: str, unit, cache: EncodedVolumeCache) -> Iterator[BuilderItem]:
        if isinstance(unit, ReadyItems):
            yield from unit.items
            return
        for n, entry in unit.entries:
            yield from self._entry(raw, rel_index, unit.key, n, entry, cache)

    def _entry(self, raw: Path, rel_index: str, key: str, n: int, entry, cache: EncodedVolumeCache) -> Iterator[BuilderItem]:
        image = entry.get("image") if isinstance(entry, dict) else None
        if not isinstance(image, str) or not image.strip():
            yield Reject(rel_index, f"{key}[{n}]", "malformed_record", f"{rel_index} {key}[{n}]: no 'image' path")
            return
        record = image
        text = entry.get("text")
        if not isinstance(text, str) or not text.strip():
            yield Reject(rel_index, record, "missing_text", f"{rel_index} {key}[{n}]: no 'text' path")
            return
        try:
            report, text_file = _report(raw, text)
        except VolumeError as err:
            # A volume that is nowhere is the bigger gap: say so (and that the text fails too).
            try:
                resolve_volume(raw, image, prefer_slices=prefers_slices(self.settings))
            except VolumeError as missing:
                also = f" (and {err.file}: {err.detail})"
                yield volume_reject(VolumeError(missing.reason, missing.file, missing.detail + also), raw, record)
                return
            yield Reject(err.file, record, err.reason, f"{err.file}: {err.detail}")
            return
        try:
            volume, volume_file = cache.get(image)
        except VolumeError as err:
            yield volume_reject(err, raw, record)
            return
        fields = (("m3d_split", key), ("case_group", group_of(image) or ""))
        for task in self.tasks:
            try:
                yield volume_sample(
                    INFO,
                    split=SPLIT_KEYS[key],
                    task=task,
                    modality="ct",
                    volume=volume,
                    raw_paths=(volume_file, text_file),
                    record_id=record,
                    question=report_prompt(image) if task == "report_generation" else "",
                    answer=report,
                    fields=fields,
                )
            except SchemaError as err:
                yield Reject(text_file, record, "schema", f"{text_file}: {err}")


def _report(raw: Path, text_path: str) -> tuple[str, str]:
    """(report, relative text file); VolumeError (reason missing_text, unreadable_text, empty_report...) otherwise."""
    path = resolve_text(raw, text_path)
    if path is None:
        raise VolumeError("missing_text", text_path, "no such text file in the raw folder")
    rel = relative(path, raw)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise VolumeError("unreadable_text", rel, f"cannot read ({getattr(err, 'strerror', None) or err.__class__.__name__})") from None
    report = report_text(text)
    if not report:
        raise VolumeError("empty_report", rel, "the text file holds no report")
    return report, rel
