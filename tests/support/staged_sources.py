"""Staged sources written straight with the shard writer: chosen counts per (split, task, modality).

For mix tests that need exact strata; frames are real encoded JPEGs (support.samples.jpeg),
volumes and videos carry several frames, so every visual kind can be staged.
"""

from __future__ import annotations

import zlib
from pathlib import Path

from support.samples import jpeg

from omnivmed.data.output import MANIFEST_NAME
from omnivmed.data.manifest import COUNT_AXES, Manifest, SourceCard
from omnivmed.data.schema import IMAGE_TOKEN, VIDEO_TOKEN, Provenance, Turn, VisualMeta, make_sample
from omnivmed.data.shards import ShardWriter

FRAMES = {"image": 1, "multi_image": 2, "volume": 6, "video": 5, "none": 0}


def staged_sample(source: str, split: str, task: str, modality: str, i: int, kind: str = "image", variant: int = 0):
    n = FRAMES[kind]
    token = VIDEO_TOKEN if kind == "video" else IMAGE_TOKEN
    placeholders = "" if kind == "none" else "\n".join([token] * (n if kind == "multi_image" else 1)) + "\n"
    meta = None
    if kind == "video":
        meta = VisualMeta(fps=5.0, timestamps_s=tuple(k / 5 for k in range(n)), frame_indices=tuple(range(n)))
    elif kind == "volume":
        meta = VisualMeta(spacing_mm=(3.0, 1.0, 1.0), frame_indices=tuple(range(n)))
    return make_sample(
        source=source,
        split=split,
        task=task,
        modality=modality,
        visual_kind=kind,
        frames=[jpeg(zlib.crc32(f'{source}/{i}/{k}/{variant}'.encode()), 16) for k in range(n)],
        frame_format="jpeg" if n else None,
        conversations=[Turn("user", f"{placeholders}Question {i} about {task} in {modality}?"), Turn("assistant", f"answer {i} {'x ' * (i % 7)}")],
        answer_type="open" if task == "vqa" else None,
        visual_meta=meta,
        provenance=Provenance((f"{source}/{i}.jpg",), f"{source}-{i}", "CC0-1.0", "https://example.org", (("k", str(i)),)),
    )


def write_staged(
    root: Path,
    name: str,
    strata: dict[tuple[str, str, str], int],
    *,
    kind: str = "image",
    variant: int = 0,
    batch_rows: int = 16,
    license: str = "CC0-1.0",
) -> Path:
    """``<root>/<name>/`` with ``strata[(split, task, modality)]`` samples each; returns the manifest path."""
    out = Path(root) / name
    counts = {axis: {} for axis in COUNT_AXES}
    i = 0
    with ShardWriter(out, batch_rows=batch_rows, max_shard_bytes=40_000) as writer:
        for (split, task, modality), n in sorted(strata.items()):
            for _ in range(n):
                sample = staged_sample(name, split, task, modality, i, kind, variant)
                writer.write(sample)
                for axis in COUNT_AXES:
                    value = getattr(sample, axis)
                    counts[axis][value] = counts[axis].get(value, 0) + 1
                i += 1
        shards = writer.close()
    manifest = Manifest(
        name=name,
        shards=shards,
        counts={a: dict(sorted(c.items())) for a, c in counts.items()},
        sources=[SourceCard(name, f"https://example.org/{name}", license, f"Citation of {name}")],
        rejects_report="rejects.jsonl",
    )
    (out / "rejects.jsonl").write_text("")
    manifest.save(out / MANIFEST_NAME)
    return out / MANIFEST_NAME
