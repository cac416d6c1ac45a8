"""Shared pieces of the volume builders (m3d_cap, m3d_vqa, volumes).

The options every volume builder takes, one place that turns an encoded
volume plus a dialogue into a Sample, the rejects for unreadable volumes
(with paths scrubbed of UIDs), and a small cache so that the many questions
asked about one volume read and encode it once.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Generic, TypeVar

from omnivmed.builders.base import BuilderOption, BuilderOptionError, Reject, SourceInfo
from omnivmed.data.schema import IMAGE_TOKEN, Provenance, Sample, Turn, make_sample
from omnivmed.data.volume import PRESETS, EncodedVolume, VolumeError, VolumeLimits, VolumeRecipe, recipe_from_options
from omnivmed.data.volume.dicom_privacy import redact_path
from omnivmed.data.volume.core import FOUR_D_MODES


def volume_option_specs(default_preset: str) -> tuple[BuilderOption, ...]:
    return (
        BuilderOption("preset", default_preset, f"intensity/geometry preset: {', '.join([*PRESETS, 'auto'])}"),
        BuilderOption("shape", "", "override the preset's output size, DxHxW (e.g. 32x256x256) or 'native'"),
        BuilderOption("resize_mode", "", "override the preset's resize: area or trilinear"),
        BuilderOption("bit_depth", "", "override the preset's PNG bit depth: 8 or 16"),
        BuilderOption("max_voxels", str(VolumeLimits().max_voxels), "reject volumes with more voxels than this"),
    )


@dataclass(frozen=True)
class VolumeSettings:
    recipe: VolumeRecipe | str  # "auto" resolves per volume
    limits: VolumeLimits
    four_d: str = "reject"  # 4D DICOM series: "reject" (four_dimensional) or "split" (one volume each)


def volume_settings(options: dict[str, str]) -> VolumeSettings:
    try:
        recipe = recipe_from_options(
            options["preset"],
            shape=options["shape"] or None,
            resize_mode=options["resize_mode"] or None,
            bit_depth=int(options["bit_depth"]) if options["bit_depth"] else None,
        )
        max_voxels = int(options["max_voxels"])
        if max_voxels < 1:
            raise ValueError("max_voxels must be positive")
    except ValueError as err:
        raise BuilderOptionError(str(err)) from None
    four_d = options.get("four_d", "reject")
    if four_d not in FOUR_D_MODES:
        raise BuilderOptionError(f"four_d {four_d!r} is not one of {', '.join(FOUR_D_MODES)}")
    return VolumeSettings(recipe, VolumeLimits(max_voxels=max_voxels), four_d)


def four_d_option() -> BuilderOption:
    """For builders that read DICOM series: what to do with a 4D series (DWI b-values, dynamic phases)."""
    return BuilderOption(
        "four_d",
        "reject",
        "4D DICOM series (every position repeated per b-value or time point): reject (as four_dimensional) "
        "or split (one volume per b-value / temporal position, addressed as folder#N)",
    )


def relative(path: Path | str, raw: Path) -> str:
    """POSIX path relative to the raw folder (as given when outside it), scrubbed of UIDs."""
    path = Path(path)
    if not path.is_absolute() and not str(path).startswith(str(raw)):
        return redact_path(path.as_posix())  # already relative to raw (e.g. an index entry)
    try:
        text = path.resolve().relative_to(raw.resolve()).as_posix()
    except ValueError:
        text = path.as_posix()
    return redact_path(text)


def volume_reject(err: VolumeError, raw: Path, record: str) -> Reject:
    file = relative(err.file, raw)
    return Reject(file=file, record=record, reason=err.reason, detail=f"{file}: {err.detail}")


def volume_sample(
    info: SourceInfo,
    *,
    split: str,
    task: str,
    modality: str,
    volume: EncodedVolume,
    raw_paths: tuple[str, ...],
    record_id: str,
    question: str,
    answer: str,
    answer_type: str | None = None,
    fields: tuple[tuple[str, str], ...] = (),
) -> Sample:
    """One volume and one exchange: the user turn opens with the single <image> placeholder."""
    prompt = f"{IMAGE_TOKEN}\n{question}" if question else IMAGE_TOKEN
    return make_sample(
        source=info.name,
        split=split,
        task=task,
        modality=modality,
        visual_kind="volume",
        frames=volume.frames,
        frame_format=volume.frame_format,
        visual_meta=volume.visual_meta,
        conversations=[Turn("user", prompt), Turn("assistant", answer)],
        answer_type=answer_type,
        provenance=Provenance(
            raw_paths=raw_paths,
            record_id=record_id,
            license=info.license,
            source_url=info.homepage,
            fields=tuple(fields) + volume.fields,
        ),
    )


Loaded = TypeVar("Loaded")


class EncodedVolumeCache(Generic[Loaded]):
    """The last few loaded volumes by key; rows about one volume are usually adjacent."""

    def __init__(self, load: Callable[[str], Loaded], max_items: int = 4):
        self._load = load
        self._items: OrderedDict[str, Loaded | VolumeError] = OrderedDict()
        self._max = max_items

    def get(self, key: str) -> Loaded:
        """What ``load`` gave for ``key``, or raises the VolumeError it failed with (cached too: one
        failed read, a reject for every row that names it)."""
        if key in self._items:
            self._items.move_to_end(key)
            found = self._items[key]
        else:
            try:
                found = self._load(key)
            except VolumeError as err:
                found = err
            self._items[key] = found
            if len(self._items) > self._max:
                self._items.popitem(last=False)
        if isinstance(found, VolumeError):
            raise found
        return found
