"""Find one Sample in a manifest's shards by its id (or an id prefix) or by its source's question id.

Only the id column (or provenance's record_id and fields) is scanned, over
memory-mapped shards with Arrow compute; then the one matching row is turned
into Python values. The frames of other rows are never read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from omnivmed.data.manifest import Manifest, shard_path
from omnivmed.data.shards import map_shard

QUESTION_ID_FIELD = "qid"  # the provenance field SLAKE's builder keeps; VQA-RAD's qid is the record_id itself
MAX_SUGGESTIONS = 3


class SampleNotFound(LookupError):
    """No sample (or several) for the id asked; the message is one line naming the manifest and the id."""


@dataclass(frozen=True)
class FoundSample:
    row: dict  # the Sample's row in schema form (Sample.to_row())
    shard: str  # path relative to the manifest's folder
    index: int  # row within the shard


def _question_rows(table: pa.Table, question_id: str) -> pa.Array:
    """Rows whose provenance record_id is ``question_id`` or whose ``qid`` field is."""
    provenance = table.column("provenance").combine_chunks()
    by_record = pc.equal(pc.struct_field(provenance, "record_id"), question_id)
    fields = pc.struct_field(provenance, "fields")
    flat = pc.list_flatten(fields)
    hit = pc.and_(pc.equal(pc.struct_field(flat, "key"), QUESTION_ID_FIELD), pc.equal(pc.struct_field(flat, "value"), question_id))
    by_field = pc.list_parent_indices(fields).filter(pc.fill_null(hit, False))
    rows = set(pc.indices_nonzero(pc.fill_null(by_record, False)).to_pylist()) | set(by_field.to_pylist())
    return sorted(rows)


def find_sample(manifest_path: Path, key: str, *, question_id: bool = False, source: str | None = None) -> FoundSample:
    """The one sample whose id is ``key`` (or, failing that, the only id starting with it) or, with
    ``question_id``, whose source question id is ``key``; ``source`` narrows the search."""
    manifest_path = Path(manifest_path)
    manifest = Manifest.load(manifest_path)
    exact, prefixed = [], []
    mapped = {}
    for info in manifest.shards:
        mapped[info.path] = map_shard(shard_path(manifest_path, info))  # memory-mapped, zero-copy
        table = mapped[info.path].table
        keep = None if source is None else pc.equal(table.column("source"), source)
        if question_id:
            rows = _question_rows(table, key)
        else:
            ids = table.column("id")
            rows = pc.indices_nonzero(pc.equal(ids, key)).to_pylist()
            if not rows and not exact:
                prefixed += [(info.path, i) for i in pc.indices_nonzero(pc.starts_with(ids, key)).to_pylist()]
        exact += [(info.path, i) for i in rows if keep is None or keep[i].as_py()]
    tables = {p: m.table for p, m in mapped.items()}
    hits = exact or [(p, i) for p, i in prefixed if source is None or tables[p].column("source")[i].as_py() == source]
    what = f"question id {key!r}" if question_id else f"id {key!r}"
    where = f"{manifest_path}" + (f" (source {source})" if source else "")
    if not hits:
        near = [] if question_id else nearest_ids(tables.values(), key)
        hint = f"; nearest: {', '.join(near)}" if near else ""
        raise SampleNotFound(f"{where}: no sample with {what} ({manifest.rows:,} samples searched){hint}")
    if len(hits) > 1:
        listed = ", ".join(f"{tables[p].column('id')[i].as_py()} ({tables[p].column('source')[i].as_py()})" for p, i in hits[:5])
        raise SampleNotFound(f"{where}: {len(hits)} samples match {what}: {listed}; give a sample id or --source")
    path, index = hits[0]
    # The only row turned into Python objects (and whose frames are read, from a frame table if it has one).
    row = mapped[path].resolve_table(tables[path].slice(index, 1)).to_pylist()[0]
    return FoundSample(row, path, index)


def nearest_ids(tables, key: str, limit: int = MAX_SUGGESTIONS) -> list[str]:
    """Ids sharing the longest prefix with ``key`` (cheap: a prefix scan of the id column per length tried)."""
    for length in range(len(key) - 1, 0, -1):
        found = []
        for table in tables:
            ids = table.column("id")
            found += ids.filter(pc.starts_with(ids, key[:length])).to_pylist()[: limit - len(found)]
            if len(found) >= limit:
                break
        if found:
            return sorted(found)
    return []
