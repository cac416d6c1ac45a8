"""A static preview page: sampled Samples of every visual kind in one self-contained HTML file.

Frames are inlined as data URIs and the samples as a JSON block, so the page
opens from disk without a server or network. Volumes show as a scrubbable
strip of slices, videos as a strip with Play; each sample shows its
conversation and provenance. Which samples appear is a seeded draw over row
positions per visual kind; only the drawn rows are decoded (batch by batch,
so memory stays flat however large the set).
"""

from __future__ import annotations

import base64
import html
import json
from importlib import resources
from pathlib import Path

import numpy as np

from omnivmed.data.batches import stream_batches
from omnivmed.data.fileio import write_if_changed
from omnivmed.data.manifest import Manifest, shard_path
from omnivmed.data.schema import VISUAL_KINDS

PREVIEW_NAME = "preview.html"
DEFAULT_PER_KIND = 4
MAX_FRAMES = 64  # a longer volume or clip shows this many, evenly spaced
_MIME = {"jpeg": "image/jpeg", "png": "image/png"}


def preview_positions(manifest_path: Path, manifest: Manifest, per_kind: int, seed: int) -> list[tuple[int, int]]:
    """(shard index, row) of up to ``per_kind`` samples of each visual kind, in kind then row order."""
    by_kind: dict[str, list[tuple[int, int]]] = {}
    for i, shard in enumerate(manifest.shards):
        row = 0
        for batch in stream_batches(shard_path(manifest_path, shard)):
            for kind in batch.column("visual_kind").to_pylist():
                by_kind.setdefault(kind, []).append((i, row))
                row += 1
    chosen = []
    for kind in VISUAL_KINDS:
        pool = by_kind.get(kind, [])
        if len(pool) > per_kind:
            rng = np.random.default_rng([seed, VISUAL_KINDS.index(kind)])
            pool = [pool[j] for j in sorted(rng.choice(len(pool), size=per_kind, replace=False))]
        chosen.extend(pool)
    return chosen


def write_preview(manifest_path: Path, out: Path, *, per_kind: int = DEFAULT_PER_KIND, seed: int | None = None) -> int:
    """Write the page to ``out``; returns how many samples it shows."""
    manifest_path = Path(manifest_path)
    manifest = Manifest.load(manifest_path)
    seed = (manifest.seed or 0) if seed is None else seed
    positions = preview_positions(manifest_path, manifest, per_kind, seed)
    samples = [_page_sample(row) for row in _rows_at(manifest_path, manifest, positions)]
    kinds = sorted({s["visual_kind"] for s in samples})
    note = f"up to {per_kind} per visual kind ({', '.join(kinds) or 'none'}), seed {seed}"
    payload = {"name": manifest.name, "rows": manifest.rows, "note": note, "samples": samples}
    write_if_changed(Path(out), render_page(f"{manifest.name}: preview", payload).encode())
    return len(samples)


def _rows_at(manifest_path: Path, manifest: Manifest, positions: list[tuple[int, int]]) -> list[dict]:
    """The rows at ``positions``, in that order, streamed batch by batch (only their shards are read)."""
    found: dict[tuple[int, int], dict] = {}
    for shard_index in sorted({i for i, _ in positions}):
        wanted = sorted(row for i, row in positions if i == shard_index)
        start = 0
        for batch in stream_batches(shard_path(manifest_path, manifest.shards[shard_index])):
            inside = [row - start for row in wanted if start <= row < start + batch.num_rows]
            if inside:
                for row, values in zip(inside, batch.take(inside).to_pylist()):
                    found[(shard_index, row + start)] = values
            start += batch.num_rows
    return [found[p] for p in positions]


def render_page(title: str, payload: dict) -> str:
    template = resources.files("omnivmed.data").joinpath("templates/preview.html").read_text(encoding="utf-8")
    # "</" inside the JSON block would end the <script> element early.
    data = json.dumps(payload, ensure_ascii=False, sort_keys=True).replace("</", "<\\/")
    return template.replace("{{TITLE}}", html.escape(title)).replace("{{DATA}}", data)


def _page_sample(row: dict) -> dict:
    frames = row["frames"]
    keep = _spaced(len(frames))
    mime = _MIME.get(row["frame_format"] or "", "application/octet-stream")
    meta = row["visual_meta"] or {}
    labels = _frame_labels(row["visual_kind"], meta, keep)
    prov = row["provenance"]
    provenance = {
        "record_id": prov["record_id"],
        "raw_paths": prov["raw_paths"],
        "license": prov["license"],
        "source_url": prov["source_url"],
        **{f"field {kv['key']}": kv["value"] for kv in prov["fields"]},
        **{f"meta {k}": v for k, v in meta.items() if v is not None and k != "timestamps_s"},
    }
    if len(keep) < len(frames):
        provenance["preview"] = f"{len(keep)} of {len(frames)} frames, evenly spaced"
    return {
        "id": row["id"],
        "source": row["source"],
        "split": row["split"],
        "task": row["task"],
        "modality": row["modality"],
        "visual_kind": row["visual_kind"],
        "answer_type": row["answer_type"],
        "fps": meta.get("fps"),
        "frames": [f"data:{mime};base64,{base64.b64encode(frames[i]).decode()}" for i in keep],
        "labels": labels,
        "conversations": row["conversations"],
        "provenance": provenance,
    }


def _spaced(n: int) -> list[int]:
    if n <= MAX_FRAMES:
        return list(range(n))
    return sorted({round(i * (n - 1) / (MAX_FRAMES - 1)) for i in range(MAX_FRAMES)})


def _frame_labels(kind: str, meta: dict, keep: list[int]) -> list[str]:
    """'slice 12' / 't=0.40 s' per shown frame, from visual_meta when it has them."""
    times = meta.get("timestamps_s")
    indices = meta.get("frame_indices")
    if kind == "video" and times:
        return [f"t={times[i]:.2f} s" for i in keep]
    if kind == "volume":
        return [f"slice {indices[i] if indices else i}" for i in keep]
    return ["" for _ in keep]


def write_sample_page(manifest: Manifest, row: dict, out: Path) -> None:
    """A page of one sample (``omnivmed-data show --html``): the same template and layout as the set's preview."""
    payload = {"name": manifest.name, "rows": manifest.rows, "note": f"sample {row['id']}", "samples": [_page_sample(row)]}
    write_if_changed(Path(out), render_page(f"{manifest.name}: {row['id']}", payload).encode())
