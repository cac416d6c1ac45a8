"""The manifest: a typed description of a set of shards, and its verification.

A manifest is the contract between the builders and the trainer: every shard
with its rows, bytes and digest (``blake3:<hex>``; ``sha256:<hex>`` in manifests
written before format 2), the schema fingerprint, counts along every
axis the trainer mixes by, the inputs' checksums, and what was rejected.
It holds no clock time, so two builds of the same input write the same bytes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import pyarrow as pa

from omnivmed import __version__
from omnivmed.data.fileio import atomic_write_bytes, file_digest, split_digest
from omnivmed.data.schema import SCHEMA_FINGERPRINT, SCHEMA_VERSION, schema_fingerprint_of

# 2: shards carry "digest" ("blake3:<hex>") instead of "sha256". Format 1 still loads and verifies.
# 3: the output has a frame table (``frame_table``: frames shared by the splits' shards); written only then,
#    so a tool that cannot resolve frame refs refuses the manifest instead of misreading its shards.
MANIFEST_FORMAT = 2
SHARED_FRAMES_FORMAT = 3
READABLE_FORMATS = (1, 2, 3)
COUNT_AXES: tuple[str, ...] = ("source", "split", "task", "modality", "visual_kind")


class ManifestError(ValueError):
    """A manifest file that cannot be read as a manifest."""


@dataclass(frozen=True)
class ShardInfo:
    path: str  # relative to the manifest's folder, POSIX separators
    split: str
    rows: int
    bytes: int
    digest: str  # "<algorithm>:<hex>": "blake3:..." for new shards, "sha256:..." from format-1 manifests

    def __post_init__(self):
        # A bare 64-hex digest is what format 1 (and older callers) meant: sha256.
        if ":" not in self.digest and len(self.digest) == 64:
            object.__setattr__(self, "digest", f"sha256:{self.digest}")
        split_digest(self.digest)

    @property
    def algorithm(self) -> str:
        return self.digest.partition(":")[0]

    @property
    def sha256(self) -> str:
        """Deprecated alias of :attr:`digest` (the algorithm-prefixed digest, whatever the algorithm),
        kept so code that copies shard entries (``ShardInfo(..., s.sha256)``) stays exact."""
        return self.digest


@dataclass(frozen=True)
class FrameFile:
    """One file of a frame table (frame_table.py): the frames the split shards reference."""

    path: str  # relative to the manifest's folder, POSIX separators
    frames: int
    bytes: int
    digest: str

    def __post_init__(self):
        split_digest(self.digest)


@dataclass(frozen=True)
class InputFile:
    path: str  # relative to the raw source folder
    bytes: int
    sha256: str


@dataclass(frozen=True)
class SourceCard:
    name: str
    homepage: str
    license: str
    citation: str


@dataclass
class Manifest:
    name: str
    schema_version: str = SCHEMA_VERSION
    schema_fingerprint: str = SCHEMA_FINGERPRINT
    tool_version: str = __version__
    shards: list[ShardInfo] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    sources: list[SourceCard] = field(default_factory=list)
    inputs: list[InputFile] = field(default_factory=list)
    # Builder settings that shaped the output (e.g. the volume preset); "source.option" keys when combined.
    options: dict[str, str] = field(default_factory=dict)
    # Builder-specific counts that are not rejects (e.g. clips padded at a video's start).
    counters: dict[str, int] = field(default_factory=dict)
    duplicates_removed: int = 0
    rejects: dict[str, int] = field(default_factory=dict)
    rejects_report: str | None = None
    recipe: str | None = None
    recipe_sha256: str | None = None
    seed: int | None = None
    format: int = MANIFEST_FORMAT
    # The frame table's files, when the shards share one (``--frames shared``); the key is written only then.
    frame_table: list[FrameFile] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.shards)

    def to_json(self) -> str:
        data = asdict(self)
        if self.frame_table:
            data["format"] = SHARED_FRAMES_FORMAT
        else:
            del data["frame_table"]  # manifests without one keep format 2, byte for byte
        return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    def save(self, path: Path) -> None:
        atomic_write_bytes(Path(path), self.to_json().encode())

    @classmethod
    def from_dict(cls, data: dict, origin: str = "<manifest>") -> "Manifest":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ManifestError(f"{origin}: unknown manifest keys {sorted(unknown)}")
        if data.get("format") not in READABLE_FORMATS:
            raise ManifestError(
                f"{origin}: manifest format {data.get('format')!r}, expected one of {', '.join(map(str, READABLE_FORMATS))}"
            )
        try:
            return cls(
                **{
                    **data,
                    "format": MANIFEST_FORMAT,  # loaded into today's layout; saving writes format 2
                    "shards": [_shard_from_dict(s) for s in data.get("shards", [])],
                    "sources": [SourceCard(**s) for s in data.get("sources", [])],
                    "inputs": [InputFile(**i) for i in data.get("inputs", [])],
                    "frame_table": [FrameFile(**f) for f in data.get("frame_table", [])],
                }
            )
        except (TypeError, ValueError) as err:
            raise ManifestError(f"{origin}: {err}") from None

    @classmethod
    def load(cls, path: Path) -> "Manifest":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ManifestError(f"{path}: no such manifest") from None
        except json.JSONDecodeError as err:
            raise ManifestError(f"{path}: not valid JSON ({err})") from None
        return cls.from_dict(data, origin=str(path))


def _shard_from_dict(entry: dict) -> ShardInfo:
    """A shard entry of either layout: format 2's ``digest``, or format 1's bare-hex ``sha256``."""
    if "sha256" in entry and "digest" not in entry:
        entry = {**entry, "digest": f"sha256:{entry['sha256']}"}
        del entry["sha256"]
    return ShardInfo(**entry)


def shard_path(manifest_path: Path, shard: ShardInfo) -> Path:
    return Path(manifest_path).parent / shard.path


def verify_manifest(manifest_path: Path, manifest: Manifest | None = None) -> list[str]:
    """Check every shard against the manifest; return one line per problem.

    Checks, per shard: present, byte size, digest (with the algorithm the
    manifest names), row count, and the schema fingerprint stored in the file;
    and that the manifest's own fingerprint is the one this version of the tool
    writes.
    """
    manifest_path = Path(manifest_path)
    manifest = manifest or Manifest.load(manifest_path)
    problems: list[str] = []
    if manifest.schema_fingerprint != SCHEMA_FINGERPRINT:
        problems.append(
            f"{manifest_path}: schema fingerprint {manifest.schema_fingerprint[:12]} "
            f"(schema {manifest.schema_version}) does not match this tool's {SCHEMA_FINGERPRINT[:12]} "
            f"(schema {SCHEMA_VERSION})"
        )
    tables_intact = True
    for frame_file in manifest.frame_table:
        problem = _file_problem(Path(manifest_path).parent / frame_file.path, frame_file.path, frame_file.bytes, frame_file.digest)
        if problem:
            problems.append(problem)
            tables_intact = False
    for shard in manifest.shards:
        path = shard_path(manifest_path, shard)
        problem = _file_problem(path, shard.path, shard.bytes, shard.digest)
        if problem:
            problems.append(problem)
            continue
        problems.extend(_check_shard_contents(path, shard, manifest, check_refs=tables_intact))
    return problems


def _file_problem(path: Path, name: str, size: int, digest: str) -> str | None:
    """Present, of the recorded size and digest (with the algorithm the manifest names)?"""
    if not path.is_file():
        return f"{name}: missing"
    found_size = path.stat().st_size
    if found_size != size:
        return f"{name}: {found_size} bytes, manifest says {size}"
    algorithm, expected = split_digest(digest)
    found = file_digest(path, algorithm).partition(":")[2]
    if found != expected:
        return f"{name}: {algorithm} {found[:12]}..., manifest says {expected[:12]}..."
    return None


def _check_shard_contents(path: Path, shard: ShardInfo, manifest: Manifest, *, check_refs: bool) -> list[str]:
    import pyarrow.compute as pc

    from omnivmed.data.frame_table import (
        REFERENCING_FINGERPRINT,
        FrameTableError,
        is_referencing,
        open_frame_table,
        table_folder,
    )

    expected_fingerprint = manifest.schema_fingerprint
    highest = -1
    try:
        with pa.memory_map(str(path)) as source:
            reader = pa.ipc.open_stream(source)
            referencing = is_referencing(reader.schema)
            found = schema_fingerprint_of(reader.schema)
            rows = 0
            for batch in reader:
                rows += batch.num_rows
                if referencing and batch.num_rows:
                    top = pc.max(batch.column("frame_refs").flatten()).as_py()
                    highest = max(highest, -1 if top is None else top)
    except (pa.ArrowInvalid, OSError) as err:
        return [f"{shard.path}: not a readable Arrow IPC stream ({err})"]
    problems = []
    if referencing:
        if not manifest.frame_table:
            problems.append(f"{shard.path}: references a frame table the manifest does not list")
        if found != REFERENCING_FINGERPRINT or expected_fingerprint != SCHEMA_FINGERPRINT:
            problems.append(f"{shard.path}: schema fingerprint {found[:12]} is not this tool's frame-referencing schema")
        elif check_refs:
            try:
                frames = len(open_frame_table(table_folder(path, reader.schema)))
            except (FrameTableError, OSError) as err:
                problems.append(f"{shard.path}: {err}")
            else:
                if highest >= frames:
                    problems.append(f"{shard.path}: frame ref {highest} past its frame table's {frames:,} frames")
    elif found != expected_fingerprint:
        problems.append(f"{shard.path}: schema fingerprint {found[:12]} does not match manifest {expected_fingerprint[:12]}")
    if rows != shard.rows:
        problems.append(f"{shard.path}: {rows} rows, manifest says {shard.rows}")
    return problems


def load_intact_manifest(manifest_path: Path, matches: Callable[[Manifest], bool] = lambda m: True) -> Manifest | None:
    """The manifest at ``manifest_path`` when it loads, ``matches`` it and its shards verify; None
    otherwise (the up-to-date checks of build and mix: anything less means redo the work).
    ``matches`` runs first, so a manifest of other inputs is never hashed."""
    if not manifest_path.is_file():
        return None
    try:
        manifest = Manifest.load(manifest_path)
    except ManifestError:
        return None
    if not matches(manifest) or verify_manifest(manifest_path, manifest):
        return None
    return manifest
