"""Export verified shards as a Hugging Face Hub dataset folder: Parquet per config and split, images declared.

The folder (what ``datasets.load_dataset(folder)``, the Hub's viewer, polars
and DuckDB read)::

    README.md                                    YAML front matter: configs (data_files per split),
                                                 dataset_info, license, task_categories; body: the data
                                                 card (figures, counts, sources with licenses and citations)
    data/<source>/<split>-00000-of-00002.parquet one folder per source
    figures/*.png, stats.json                    the data card's figures and statistics
    export.json                                  what this export wrote (a re-run removes what it no longer writes)

Configs: one per source, and ``default`` with every source (its data_files
are globs over the per-source folders, so no row is stored twice). Per source
because sources come under different terms (CC0, CC-BY, PhysioNet
credentialed...): ``load_dataset(repo, "vqa_rad")`` takes exactly the sources
whose license a user accepts. A mix is drawn for one training stage, so the
stage is a property of the whole export (named in the card), not a config.

Columns: the Sample's own, with ``frames`` as ``List(Image())`` ({bytes, path}
structs holding the shard's encoded bytes, never re-encoded; self-contained)
and ``conversations`` as ``[{from, value}]`` with ShareGPT's role names
(human, gpt, system: a one-to-one renaming of user, assistant, system), plus
``num_frames``, so filters need not touch the frames. The ``datasets``
features sit in each file's schema metadata under the ``huggingface`` key,
as ``datasets`` writes them, so images decode even without the README.

Parquet is written the way ``datasets``' own ``push_to_hub`` writes it: row
groups of at most 100 MB of Arrow data (the Hub viewer reads one row group at
a time), files of at most 500 MB, frames uncompressed and PLAIN-encoded (they
are JPEG/PNG already), other columns snappy with dictionaries, a page index,
and content-defined chunking (so the Hub's Xet storage deduplicates a
re-upload). The same shards give the same bytes.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from omnivmed.data.batches import stream_batches
from omnivmed.data.card_stats import collect_stats
from omnivmed.data.datacard import FIGURES_DIR, STATS_NAME, render_datacard_body
from omnivmed.data.export import SUMMARY_NAME, ExportError, verified_splits
from omnivmed.data.fileio import fsync_dir, temporary_name, write_if_changed
from omnivmed.data.figures import write_figures
from omnivmed.data.manifest import Manifest, shard_path

DATA_DIR = "data"
CARD_NAME = "README.md"
DEFAULT_CONFIG = "default"
ROW_GROUP_BYTES = 100 << 20  # datasets.config.MAX_ROW_GROUP_SIZE: what the Hub viewer reads at once
FILE_BYTES = 500 << 20  # datasets.config.MAX_SHARD_SIZE
SHAREGPT_ROLES = {"system": "system", "user": "human", "assistant": "gpt"}
_CONFIG_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

# Hub license ids for the SPDX names our sources state; anything else is "other" (the card says which).
_HUB_LICENSES = {
    "cc0-1.0", "cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-4.0", "cc-by-nc-sa-4.0", "cc-by-nc-nd-4.0",
    "apache-2.0", "mit", "bsd-2-clause", "bsd-3-clause", "odc-by", "odbl", "pddl", "cdla-permissive-2.0",
}  # fmt: skip
_TASK_CATEGORIES = {
    "vqa": "visual-question-answering",
    "surgical_vqa": "visual-question-answering",
    "report_generation": "image-to-text",
    "image_caption": "image-to-text",
    "video_caption": "video-text-to-text",
}


def hf_features():
    """The ``datasets`` features of an exported row (frames decode to PIL images)."""
    from datasets import Features, Image, List, Value

    text = Value("string")
    return Features(
        {
            "id": text,
            "source": text,
            "split": text,
            "task": text,
            "modality": text,
            "visual_kind": text,
            "answer_type": text,
            "num_frames": Value("int32"),
            "frame_format": text,
            "frames": List(Image()),
            "conversations": List({"from": text, "value": text}),
            "visual_meta": {
                "spacing_mm": List(Value("float64")),
                "orientation": List(Value("float64")),
                "original_shape": List(Value("int64")),
                "fps": Value("float64"),
                "timestamps_s": List(Value("float64")),
                "frame_indices": List(Value("int64")),
            },
            "provenance": {
                "raw_paths": List(text),
                "record_id": text,
                "license": text,
                "source_url": text,
                "fields": List({"key": text, "value": text}),
            },
        }
    )


def _frames_as_images(frames: pa.ListArray) -> pa.Array:
    """list<binary> -> list<struct<bytes, path>> (datasets' Image storage), zero-copy for the bytes."""
    flat = frames.flatten()  # honours a sliced array's offset
    offsets = pc.subtract(frames.offsets, frames.offsets[0])
    images = pa.StructArray.from_arrays([flat, pa.nulls(len(flat), pa.string())], names=["bytes", "path"])
    return pa.ListArray.from_arrays(offsets, images)


def _conversations_as_sharegpt(conversations: pa.ListArray) -> pa.Array:
    role, content = conversations.flatten().flatten()
    names = pa.array(list(SHAREGPT_ROLES))
    renamed = pa.array(list(SHAREGPT_ROLES.values())).take(pc.index_in(role, value_set=names))
    offsets = pc.subtract(conversations.offsets, conversations.offsets[0])
    return pa.ListArray.from_arrays(offsets, pa.StructArray.from_arrays([renamed, content], names=["from", "value"]))


def hf_batch(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """A shard batch in the export's columns (Arrow compute only: no Python object per row)."""
    frames = batch.column("frames")
    derived = {
        "num_frames": pc.list_value_length(frames),
        "frames": _frames_as_images(frames),
        "conversations": _conversations_as_sharegpt(batch.column("conversations")),
    }
    arrays = [derived[name] if name in derived else batch.column(name) for name in schema.names]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


@dataclass
class _Part:
    """One (config, split): converted batches gathered into row groups, files rolled over by size."""

    folder: Path
    split: str
    schema: pa.Schema
    writer_options: dict
    row_group_bytes: int
    file_bytes: int
    rows: int = 0
    arrow_bytes: int = 0
    temporaries: list[Path] = field(default_factory=list)
    finals: list[Path] = field(default_factory=list)
    _pending: list[pa.RecordBatch] = field(default_factory=list)
    _pending_bytes: int = 0
    _writer: pq.ParquetWriter | None = None
    _file_arrow_bytes: int = 0

    def add(self, batch: pa.RecordBatch) -> None:
        # A batch larger than a row group is cut into slices of about row_group_bytes (rows sized by its mean).
        total = max(1, batch.nbytes)
        step = max(1, batch.num_rows * self.row_group_bytes // total)
        for start in range(0, batch.num_rows, step):
            piece = batch.slice(start, step)
            size = total * piece.num_rows // batch.num_rows
            if self._pending and self._pending_bytes + size > self.row_group_bytes:
                self._write_row_group()
            self._pending.append(piece)
            self._pending_bytes += size

    def _write_row_group(self) -> None:
        table = pa.Table.from_batches(self._pending, schema=self.schema)
        if self._writer is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.temporaries.append(temporary_name(self.folder / f"{self.split}-{len(self.temporaries):05d}.parquet"))
            self._writer = pq.ParquetWriter(str(self.temporaries[-1]), self.schema, **self.writer_options)
        self._writer.write_table(table, row_group_size=table.num_rows)  # one row group
        self.rows += table.num_rows
        self.arrow_bytes += self._pending_bytes
        self._file_arrow_bytes += self._pending_bytes
        self._pending, self._pending_bytes = [], 0
        if self._file_arrow_bytes >= self.file_bytes:
            self._close_file()

    def _close_file(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer, self._file_arrow_bytes = None, 0

    def finish(self) -> list[Path]:
        """Close the last file and give every file its ``-NNNNN-of-MMMMM`` name; returns the final paths."""
        if self._pending:
            self._write_row_group()
        self._close_file()
        total = len(self.temporaries)
        for index, tmp in enumerate(self.temporaries):
            final = self.folder / f"{self.split}-{index:05d}-of-{total:05d}.parquet"
            _replace_if_changed(tmp, final)
            self.finals.append(final)
        fsync_dir(self.folder)
        return self.finals

    def abort(self) -> None:
        self._close_file()
        for tmp in self.temporaries:
            tmp.unlink(missing_ok=True)


def _replace_if_changed(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` over ``final`` unless ``final`` already holds these bytes (a re-run keeps mtimes)."""
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    if final.is_file() and final.stat().st_size == tmp.stat().st_size and final.read_bytes() == tmp.read_bytes():
        tmp.unlink()
    else:
        os.replace(tmp, final)


def _writer_options(features, schema: pa.Schema) -> dict:
    from datasets import config
    from datasets.arrow_writer import get_parquet_column_options

    return {
        "use_content_defined_chunking": config.DEFAULT_CDC_OPTIONS,
        "write_page_index": True,
        **get_parquet_column_options(features, schema),
    }


@dataclass(frozen=True)
class HfExportResult:
    out: Path
    configs: dict[str, dict[str, int]]  # config -> split -> rows
    files: list[str]  # relative to out
    rows: int


def check_hf_out(out: Path) -> None:
    """Write into a missing or empty folder, or over an earlier hf export (the re-run rule of every export).

    Anything else is refused: ``--push`` uploads the whole folder, so a stray file would go to the Hub.
    """
    if not out.exists() or not any(out.iterdir()):
        return
    try:
        earlier = json.loads((out / SUMMARY_NAME).read_text(encoding="utf-8")).get("format")
    except (OSError, ValueError, AttributeError):
        earlier = None
    if earlier != "hf":
        raise ExportError(
            f"--out {out}: not empty and not an earlier hf export (no {SUMMARY_NAME} with format hf); "
            "--push uploads the whole folder, so choose a new or empty folder"
        )


def export_hf(
    manifest_path: Path,
    out: Path,
    *,
    splits: list[str] | None = None,
    row_group_bytes: int = ROW_GROUP_BYTES,
    file_bytes: int = FILE_BYTES,
    progress: bool = True,
) -> HfExportResult:
    """Export the shards of ``manifest_path`` (verified first) into ``out`` as a Hub dataset folder."""
    manifest_path, out = Path(manifest_path), Path(out)
    manifest, wanted = verified_splits(manifest_path, splits)
    sources = sorted(manifest.counts.get("source", {})) or sorted({c.name for c in manifest.sources})
    bad = [s for s in sources if s == DEFAULT_CONFIG or not _CONFIG_NAME.match(s)]
    if bad:
        raise ExportError(f"{manifest_path}: source name {bad[0]!r} cannot be a Hub config name")
    check_hf_out(out)

    features = hf_features()
    schema = features.arrow_schema
    options = _writer_options(features, schema)
    parts: dict[tuple[str, str], _Part] = {}
    total = sum(s.rows for s in manifest.shards if s.split in wanted)
    try:
        with tqdm(total=total, desc="export hf", unit="sample", disable=not progress) as bar:
            for split in wanted:
                for info in (s for s in manifest.shards if s.split == split):
                    for batch in stream_batches(shard_path(manifest_path, info)):
                        _route(hf_batch(batch, schema), split, parts, out, schema, options, row_group_bytes, file_bytes)
                        bar.update(batch.num_rows)
        written = {key: part.finish() for key, part in sorted(parts.items())}
    except BaseException:
        for part in parts.values():
            part.abort()
        raise
    files = sorted(p.relative_to(out).as_posix() for paths in written.values() for p in paths)
    _remove_stale(out, files)
    configs = _config_table(parts, wanted)
    stats = collect_stats(manifest_path, manifest)
    write_if_changed(out / STATS_NAME, stats.to_json().encode())  # the card's cross-counts point here
    figures = write_figures(stats, out / FIGURES_DIR)
    figure_links = {name: path.relative_to(out).as_posix() for name, path in figures.items()}
    card = render_hf_card(manifest, parts, wanted, features, figure_links, stats)
    write_if_changed(out / CARD_NAME, card.encode())
    summary = {"format": "hf", "manifest": manifest.name, "configs": configs, "files": files}
    write_if_changed(out / SUMMARY_NAME, (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode())
    return HfExportResult(out, configs, files, sum(p.rows for p in parts.values()))


def _route(batch, split, parts, out, schema, options, row_group_bytes, file_bytes) -> None:
    """Send each source's rows of ``batch`` to its (source, split) part, in shard order."""
    source = batch.column("source")
    names = pc.unique(source).to_pylist()
    for name in names:
        rows = batch.filter(pc.equal(source, name)) if len(names) > 1 else batch
        part = parts.get((name, split))
        if part is None:
            part = parts[(name, split)] = _Part(out / DATA_DIR / name, split, schema, options, row_group_bytes, file_bytes)
        part.add(rows)


def _remove_stale(out: Path, files: list[str]) -> None:
    """Parquet files an earlier export wrote and this one did not (another split or source)."""
    summary = out / SUMMARY_NAME
    if not summary.is_file():
        return
    earlier = json.loads(summary.read_text(encoding="utf-8")).get("files", [])
    for rel in set(earlier) - set(files):
        path = out / rel
        if rel.startswith(f"{DATA_DIR}/") and rel.endswith(".parquet") and path.is_file():
            path.unlink()
            if not any(path.parent.iterdir()):
                path.parent.rmdir()


def _config_table(parts: dict[tuple[str, str], _Part], splits: list[str]) -> dict[str, dict[str, int]]:
    table: dict[str, dict[str, int]] = {DEFAULT_CONFIG: {}}
    for (source, split), part in sorted(parts.items()):
        table.setdefault(source, {})[split] = part.rows
    for split in splits:
        table[DEFAULT_CONFIG][split] = sum(p.rows for (_, s), p in parts.items() if s == split)
    return table


def hub_licenses(manifest: Manifest) -> list[str]:
    """The sources' licenses as Hub license ids (``other`` for free-text terms, spelled out in the card)."""
    found = {c.license.strip().lower() for c in manifest.sources}
    return sorted({name if name in _HUB_LICENSES else "other" for name in found}) or ["other"]


def task_categories(manifest: Manifest) -> list[str]:
    tasks = manifest.counts.get("task", {})
    kinds = set(manifest.counts.get("visual_kind", {}))
    found = {_TASK_CATEGORIES[t] for t in tasks if t in _TASK_CATEGORIES}
    if kinds - {"none"}:
        found.add("image-text-to-text")
    if "video" in kinds and any(t.endswith("_recognition") for t in tasks):
        found.add("video-classification")
    return sorted(found)


def _size_category(rows: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if rows < limit:
            return name
    return "1M<n<10M"


def render_hf_card(manifest, parts, splits, features, figures, stats) -> str:
    """README.md: the Hub's YAML (configs, dataset_info, license, tasks) over the data card's body."""
    from datasets.info import DatasetInfo, DatasetInfosDict
    from datasets.splits import SplitDict, SplitInfo
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCardData

    rows = sum(p.rows for p in parts.values())
    card_data = DatasetCardData(
        license=hub_licenses(manifest),
        task_categories=task_categories(manifest),
        tags=["medical"],
        pretty_name=manifest.name,
        size_categories=[_size_category(rows)],
    )
    infos, configs = {}, {}
    for config in [DEFAULT_CONFIG, *sorted({source for source, _ in parts})]:
        chosen = {split: [p for (source, s), p in parts.items() if s == split and config in (DEFAULT_CONFIG, source)] for split in splits}
        chosen = {split: ps for split, ps in chosen.items() if ps}
        split_dict = SplitDict()
        for split, ps in chosen.items():
            split_dict.add(SplitInfo(name=split, num_bytes=sum(p.arrow_bytes for p in ps), num_examples=sum(p.rows for p in ps)))
        download = sum(path.stat().st_size for ps in chosen.values() for p in ps for path in p.finals)
        infos[config] = DatasetInfo(
            config_name=config,
            features=features,
            splits=split_dict,
            download_size=download,
            dataset_size=sum(s.num_bytes for s in split_dict.values()),
        )
        folder = "*" if config == DEFAULT_CONFIG else config
        configs[config] = {"data_files": [{"split": split, "path": f"{DATA_DIR}/{folder}/{split}-*.parquet"} for split in chosen]}
    DatasetInfosDict(infos).to_dataset_card_data(card_data)
    MetadataConfigs(configs).to_dataset_card_data(card_data)

    body = render_datacard_body(manifest, stats=stats, figures=figures)  # the card without its shard-format intro
    stage = manifest.options.get("recipe.stage")
    intro = [
        f"# {manifest.name}",
        "",
        f"{rows:,} sample{'' if rows == 1 else 's'} exported by `omnivmed-data export --format hf` from omnivmed shards "
        f"(schema {manifest.schema_version}, fingerprint `{manifest.schema_fingerprint[:16]}`, omnivmed {manifest.tool_version})"
        + (f" for training stage {stage}" if stage else "")
        + ". Frames are the shards' own JPEG/PNG bytes (a list of images per sample: one image, several images, a "
        "volume's slices in order or a clip's frames in time order); conversations are `[{from, value}]` with "
        "`human`, `gpt` and `system` turns.",
        "",
        "Configs: `default` holds every source; each source is also a config of its own (sources come under "
        "different licenses: see Sources below).",
        "",
        "```python",
        "from datasets import load_dataset",
        f'ds = load_dataset("<this repo or folder>", "{DEFAULT_CONFIG}")   # frames decode to PIL images',
        "```",
        "",
        "```python",
        "import polars as pl   # reads only the columns a query names: frames stay on disk",
        f'pl.scan_parquet("{DATA_DIR}/*/*.parquet").filter(pl.col("modality") == "ct").select("id", "conversations").collect()',
        "```",
        "",
    ]
    return f"---\n{card_data.to_yaml()}\n---\n" + "\n".join(intro) + "\n" + body


def require_token(repo_id: str) -> None:
    """Stop before any work when ``--push`` could not upload: no token in HF_TOKEN or the login cache."""
    import huggingface_hub

    if not huggingface_hub.get_token():
        raise ExportError(f"--push {repo_id}: no Hugging Face token found; run `hf auth login` (or set HF_TOKEN) and run again")


def push_export(folder: Path, repo_id: str, *, private: bool = False) -> str:
    """Upload an export folder to the Hub as dataset ``repo_id``; returns the repo's URL.

    Needs a token (``HF_TOKEN`` or ``hf auth login``'s cache); without one, says how to log in.
    """
    import huggingface_hub

    require_token(repo_id)
    api = huggingface_hub.HfApi()
    try:
        url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type="dataset",
            ignore_patterns=[".*"],  # temporaries of an interrupted run
            commit_message=f"omnivmed-data export --format hf ({Path(folder).name})",
        )
    except Exception as err:  # noqa: BLE001 - network, auth and offline errors all become one line
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ExportError(f"--push {repo_id}: upload failed ({type(err).__name__}: {first})") from None
    return str(url)
