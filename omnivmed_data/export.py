"""Export verified shards as the conversation JSON and media files other trainers read.

Three formats, each checked against the trainer's own loader:

* ``llava`` (LLaVA, LLaVA-NeXT): ``<split>.json``, a JSON list of
  ``{id, image | video, conversations: [{from: human|gpt, value}]}``.
  ``image`` is a path (one image) or a list of paths (LLaVA-NeXT's
  multi-image rows); ``video`` is a folder of frames, read in file-name order
  by LLaVA-NeXT. LLaVA-NeXT marks a clip with the image token, so ``<video>``
  becomes ``<image>``. LLaVA has no system turn: system turns are dropped and
  counted.
* ``sharegpt`` (LLaMA-Factory): ``<split>.json`` with ``{id, messages: [{role,
  content}], images: [paths], videos: [[frame paths]]}`` and a
  ``dataset_info.json`` naming the columns and role tags. LLaMA-Factory reads
  a video given as a list of frame paths as frames already sampled.
* ``qwen-vl`` (ms-swift, Qwen2/2.5-VL templates): ``<split>.jsonl`` with
  ``{id, messages, images, videos}``; ms-swift hands a video given as a frame
  list to ``qwen_vl_utils.fetch_video``, which takes lists of frames.

Volumes are exported like videos (their slices as a frame list, ``<video>``
for the two formats with a video token), since no trainer has a volume type.

Media go to ``media/<id[:2]>/<id>/<NNNN>.<jpg|png>``: the Samples' own bytes,
never re-encoded. Paths in the JSON are relative to the export folder (or
prefixed with ``media_root``). Outputs are deterministic; a re-run rewrites
only what changed.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from tqdm import tqdm

from omnivmed.data.fileio import fsync_dir, temporary_name, write_if_changed
from omnivmed.data.manifest import Manifest, shard_path, verify_manifest
from omnivmed.data.schema import IMAGE_TOKEN, VIDEO_TOKEN, Sample
from omnivmed.data.shards import iter_samples

FORMATS: tuple[str, ...] = ("llava", "sharegpt", "qwen-vl")
MEDIA_DIR = "media"
SUMMARY_NAME = "export.json"
DATASET_INFO = "dataset_info.json"  # LLaMA-Factory's registry of local data sets
_SUFFIX = {"jpeg": "jpg", "png": "png"}
_LLAVA_ROLES = {"user": "human", "assistant": "gpt"}


class ExportError(ValueError):
    """A manifest or request that cannot be exported; the message says why."""


@dataclass(frozen=True)
class ExportResult:
    format: str
    out: Path
    records: dict[str, int]  # annotation file -> records written
    media_files: int
    system_turns_dropped: int


def media_paths(sample: Sample) -> list[str]:
    """Where a Sample's frames go, relative to the export folder (zero-padded so name order is frame order)."""
    width = max(4, len(str(len(sample.frames) - 1)))
    suffix = _SUFFIX[sample.frame_format] if sample.frames else ""
    folder = f"{MEDIA_DIR}/{sample.id[:2]}/{sample.id}"
    return [f"{folder}/{i:0{width}d}.{suffix}" for i in range(len(sample.frames))]


def is_clip(sample: Sample) -> bool:
    """Frames that trainers take as one video input: a video clip or a volume's slices."""
    return sample.visual_kind in ("video", "volume")


class _Media:
    """Writes frames once; a re-run finds them in place with the same bytes."""

    def __init__(self, out: Path, root: str):
        self.out = out
        self.root = root.rstrip("/")
        self.written = 0

    def place(self, sample: Sample) -> list[str]:
        paths = media_paths(sample)
        for rel, data in zip(paths, sample.frames):
            write_if_changed(self.out / rel, data)
            self.written += 1
        return [f"{self.root}/{p}" if self.root else p for p in paths]

    def folder(self, paths: list[str]) -> str:
        return paths[0].rsplit("/", 1)[0]


def _llava(sample: Sample, media: _Media, dropped: Counter) -> dict:
    record: dict = {"id": sample.id}
    paths = media.place(sample)
    if sample.visual_kind == "image":
        record["image"] = paths[0]
    elif sample.visual_kind == "multi_image":
        record["image"] = paths
    elif is_clip(sample):
        record["video"] = media.folder(paths)
    turns = []
    for turn in sample.conversations:
        if turn.role == "system":
            dropped["system"] += 1
            continue
        text = turn.content.replace(VIDEO_TOKEN, IMAGE_TOKEN) if is_clip(sample) else turn.content
        turns.append({"from": _LLAVA_ROLES[turn.role], "value": text})
    record["conversations"] = turns
    return record


def _messages(sample: Sample, media: _Media, dropped: Counter, system_anywhere: bool) -> dict:
    paths = media.place(sample)
    images = [] if is_clip(sample) else paths
    videos = [paths] if is_clip(sample) else []
    messages = []
    for number, turn in enumerate(sample.conversations):
        if turn.role == "system" and number > 0 and not system_anywhere:
            dropped["system"] += 1  # LLaMA-Factory takes a system prompt only as the first message
            continue
        text = turn.content.replace(IMAGE_TOKEN, VIDEO_TOKEN) if sample.visual_kind == "volume" else turn.content
        messages.append({"role": turn.role, "content": text})
    return {"id": sample.id, "messages": messages, "images": images, "videos": videos}


def _sharegpt(sample: Sample, media: _Media, dropped: Counter) -> dict:
    return _messages(sample, media, dropped, system_anywhere=False)


def _qwen_vl(sample: Sample, media: _Media, dropped: Counter) -> dict:
    return _messages(sample, media, dropped, system_anywhere=True)


_CONVERTERS: dict[str, Callable[[Sample, _Media, Counter], dict]] = {
    "llava": _llava,
    "sharegpt": _sharegpt,
    "qwen-vl": _qwen_vl,
}


def annotation_name(fmt: str, split: str) -> str:
    return f"{split}.jsonl" if fmt == "qwen-vl" else f"{split}.json"


@contextmanager
def _atomic_text(path: Path) -> Iterator:
    """A text file written under a temporary name and renamed when complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _write_split(fmt: str, path: Path, samples: Iterator[Sample], media: _Media, dropped: Counter, bar) -> int:
    """Stream one split's records into ``path`` (a JSON list, or JSON lines for qwen-vl)."""
    convert = _CONVERTERS[fmt]
    count = 0
    with _atomic_text(path) as handle:
        if fmt != "qwen-vl":
            handle.write("[")
        for sample in samples:
            line = json.dumps(convert(sample, media, dropped), ensure_ascii=False)
            if fmt == "qwen-vl":
                handle.write(line + "\n")
            else:
                handle.write(("\n" if count == 0 else ",\n") + line)
            count += 1
            bar.update(1)
        if fmt != "qwen-vl":
            handle.write("\n]\n")
    return count


def dataset_info(name: str, files: dict[str, str]) -> dict:
    """LLaMA-Factory's ``dataset_info.json`` entries: one data set per split file."""
    return {
        f"{name}_{split}": {
            "file_name": file,
            "formatting": "sharegpt",
            "columns": {"messages": "messages", "images": "images", "videos": "videos"},
            "tags": {
                "role_tag": "role",
                "content_tag": "content",
                "user_tag": "user",
                "assistant_tag": "assistant",
                "system_tag": "system",
            },
        }
        for split, file in files.items()
    }


def verified_splits(manifest_path: Path, splits) -> tuple[Manifest, list[str]]:
    """The manifest (its shards verified) and the splits to export: ``splits``, or every split it has."""
    manifest = Manifest.load(manifest_path)
    problems = verify_manifest(manifest_path, manifest)
    if problems:
        raise ExportError(f"{manifest_path} does not verify ({len(problems)} problem(s)), first: {problems[0]}")
    present = list(dict.fromkeys(s.split for s in manifest.shards))
    wanted = present if not splits else list(splits)
    unknown = [s for s in wanted if s not in present]
    if unknown:
        raise ExportError(f"{manifest_path} has no split {', '.join(unknown)}; it has {', '.join(present) or 'none'}")
    return manifest, wanted


def export_manifest(
    manifest_path: Path,
    out: Path,
    fmt: str,
    *,
    splits: list[str] | None = None,
    media_root: str = "",
    progress: bool = True,
) -> ExportResult:
    """Export the shards of ``manifest_path`` (verified first) into ``out`` in format ``fmt``."""
    if fmt not in FORMATS:
        raise ExportError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    manifest_path, out = Path(manifest_path), Path(out)
    manifest, wanted = verified_splits(manifest_path, splits)

    media, dropped = _Media(out, media_root), Counter()
    records: dict[str, int] = {}
    total = sum(s.rows for s in manifest.shards if s.split in wanted)
    with tqdm(total=total, desc=f"export {fmt}", unit="sample", disable=not progress) as bar:
        for split in wanted:
            shards = [shard_path(manifest_path, s) for s in manifest.shards if s.split == split]
            samples = (sample for path in shards for sample in iter_samples(path))
            name = annotation_name(fmt, split)
            records[name] = _write_split(fmt, out / name, samples, media, dropped, bar)
    if fmt == "sharegpt":
        info = dataset_info(manifest.name, {split: annotation_name(fmt, split) for split in wanted})
        write_if_changed(out / DATASET_INFO, (json.dumps(info, indent=2) + "\n").encode())
    result = ExportResult(fmt, out, records, media.written, dropped["system"])
    summary = {
        "format": fmt,
        "manifest": manifest.name,
        "records": records,
        "media_files": media.written,
        "system_turns_dropped": dropped["system"],
    }
    write_if_changed(out / SUMMARY_NAME, (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode())
    return result
