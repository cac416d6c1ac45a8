"""Row filters of a recipe entry: modality, answer type, question type, visual kind, frames, tokens.

A filter is applied to the label columns of a staged shard's record batches
(the frame list's offsets for the frame count, the conversations for the
token count; frame bytes are never decoded). :class:`FilterPass` keeps what
one pass over an entry's pool saw, so that a filter on something the source
does not record at all is an error rather than an empty draw:

* ``answer_types`` on a source none of whose rows has an answer type (captions,
  reports) is an error; rows without one are dropped where others have one.
* ``question_types`` are the sources' own labels, lower-cased, read from the
  provenance fields in :data:`QUESTION_TYPE_FIELDS` (VQA-RAD ``question_type``,
  whose "PRES, POS" counts as both; SLAKE and MIMIC-CXR-VQA ``content_type``;
  M3D-VQA ``question_type`` 1-5 and ``question_type_name``). A source with no
  such field (PathVQA, captions) is an error, and so is a value that no row of
  the source carries (the message lists the ones it has).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from omnivmed.data.token_counts import conversation_texts, count_tokens

QUESTION_TYPE_FIELDS: tuple[str, ...] = ("question_type", "question_type_name", "content_type")
_LISTED = 30  # question types named in an error at most


class FilterError(ValueError):
    """A filter that the staged data cannot answer; the message names the recipe entry and why."""


@dataclass(frozen=True)
class RowFilter:
    """Keep a row only when it passes every given condition (None: no condition)."""

    modalities: tuple[str, ...] | None = None
    answer_types: tuple[str, ...] | None = None
    question_types: tuple[str, ...] | None = None  # lower-cased
    visual_kinds: tuple[str, ...] | None = None
    min_frames: int | None = None
    max_frames: int | None = None
    min_tokens: int | None = None
    max_tokens: int | None = None
    tokenizer: str | None = None  # names the tokenizer of min_tokens/max_tokens
    where: str = field(default="", compare=False)  # "<recipe>: sources.<entry>.filter", for errors

    def describe(self) -> str:
        """One line for the manifest and the data card, e.g. ``modalities ct,mri; tokens <= 2048 (qwen2.5)``."""
        parts = [
            f"{label} {','.join(values)}"
            for label, values in (
                ("modalities", self.modalities),
                ("answer types", self.answer_types),
                ("question types", self.question_types),
                ("visual kinds", self.visual_kinds),
            )
            if values
        ]
        if self.min_frames is not None or self.max_frames is not None:
            parts.append(f"frames {_bounds(self.min_frames, self.max_frames)}")
        if self.tokenizer:
            parts.append(f"tokens {_bounds(self.min_tokens, self.max_tokens)} ({self.tokenizer})")
        return "; ".join(parts)

    def disjoint_from(self, other: "RowFilter") -> bool:
        """True when no row can pass both (two entries on one manifest may then share splits and tasks)."""
        for mine, theirs in (
            (self.modalities, other.modalities),
            (self.answer_types, other.answer_types),
            (self.visual_kinds, other.visual_kinds),
        ):
            if mine and theirs and not set(mine) & set(theirs):
                return True
        if _apart((self.min_frames, self.max_frames), (other.min_frames, other.max_frames)):
            return True
        same_tokens = self.tokenizer is not None and self.tokenizer == other.tokenizer
        return same_tokens and _apart((self.min_tokens, self.max_tokens), (other.min_tokens, other.max_tokens))


def _bounds(low: int | None, high: int | None) -> str:
    if low is not None and high is not None:
        return f"{low}-{high}"
    return f">= {low}" if low is not None else f"<= {high}"


def _apart(a: tuple[int | None, int | None], b: tuple[int | None, int | None]) -> bool:
    (a_lo, a_hi), (b_lo, b_hi) = a, b
    return (a_hi is not None and b_lo is not None and a_hi < b_lo) or (b_hi is not None and a_lo is not None and b_hi < a_lo)


class FilterPass:
    """One entry's filter over the batches of its pool, in order; :meth:`check` once they are all seen."""

    def __init__(self, row_filter: RowFilter, source: str):
        self.filter = row_filter
        self.source = source  # the staged manifest, named in errors
        self.before = 0  # rows that reached the filter (those of the entry's splits and tasks)
        self._answer_types_seen = False
        self._question_types_seen: set[str] = set()

    def mask(self, batch: pa.RecordBatch, pool: np.ndarray) -> np.ndarray:
        """``pool`` (the rows of the entry's splits and tasks) narrowed to the rows passing the filter."""
        f = self.filter
        keep = pool.copy()
        self.before += int(keep.sum())
        for column, values in (("modality", f.modalities), ("visual_kind", f.visual_kinds), ("answer_type", f.answer_types)):
            if values:
                keep &= _is_in(batch.column(column), values)
        if f.answer_types:
            self._answer_types_seen |= bool(pc.any(pc.is_valid(pc.filter(batch.column("answer_type"), pool))).as_py())
        if f.min_frames is not None or f.max_frames is not None:
            frames = pc.list_value_length(batch.column("frames")).to_numpy(zero_copy_only=False)
            keep &= _within(frames, f.min_frames, f.max_frames)
        if f.question_types:
            keep &= self._question_types(batch, pool)
        if f.tokenizer and keep.any():
            # Only rows still in the running are tokenised: the costliest condition goes last.
            rows = np.flatnonzero(keep)
            texts = conversation_texts(batch.column("conversations").take(pa.array(rows)))
            keep[rows] = _within(count_tokens(texts, f.tokenizer), f.min_tokens, f.max_tokens)
        return keep

    def _question_types(self, batch: pa.RecordBatch, pool: np.ndarray) -> np.ndarray:
        fields = pc.struct_field(batch.column("provenance"), "fields")
        owner = pc.list_parent_indices(fields).to_numpy(zero_copy_only=False)
        pairs = pc.list_flatten(fields)
        labelled = pc.is_in(pc.struct_field(pairs, "key"), value_set=pa.array(QUESTION_TYPE_FIELDS)).to_numpy(zero_copy_only=False)
        labels = pc.filter(pc.struct_field(pairs, "value"), labelled)
        owner = owner[labelled]
        # "PRES, POS" is two labels; every label of a row is compared lower-cased.
        parts = pc.split_pattern(pc.utf8_lower(labels), ",")
        part_owner = owner[pc.list_parent_indices(parts).to_numpy(zero_copy_only=False)]
        names = pc.utf8_trim_whitespace(pc.list_flatten(parts))
        in_pool = pool[part_owner]
        self._question_types_seen.update(pc.unique(pc.filter(names, pa.array(in_pool))).to_pylist())
        hits = pc.is_in(names, value_set=pa.array(self.filter.question_types)).to_numpy(zero_copy_only=False)
        keep = np.zeros(batch.num_rows, dtype=bool)
        keep[part_owner[hits]] = True
        return keep

    def check(self) -> None:
        """Raise FilterError when a condition asks for something the source does not record."""
        f, where = self.filter, self.filter.where
        if not self.before:
            return  # nothing of the entry's splits and tasks: the shortfall check speaks for it
        if f.answer_types and not self._answer_types_seen:
            raise FilterError(f"{where}.answer_types: no row of {self.source} has an answer type (open/closed); drop the condition for this source")
        if f.question_types:
            seen = sorted(self._question_types_seen - {""})
            if not seen:
                raise FilterError(
                    f"{where}.question_types: no row of {self.source} records a question type "
                    f"(provenance field {', '.join(QUESTION_TYPE_FIELDS)}); drop the condition for this source"
                )
            unknown = [q for q in f.question_types if q not in self._question_types_seen]
            if unknown:
                listed = ", ".join(seen[:_LISTED]) + (f" and {len(seen) - _LISTED} more" if len(seen) > _LISTED else "")
                raise FilterError(
                    f"{where}.question_types: {', '.join(map(repr, unknown))} not found in {self.source} "
                    f"(rows of the entry's splits and tasks); it has: {listed}"
                )


def _is_in(column: pa.Array, values: tuple[str, ...]) -> np.ndarray:
    return pc.is_in(column, value_set=pa.array(values)).fill_null(False).to_numpy(zero_copy_only=False)


def _within(values: np.ndarray, low: int | None, high: int | None) -> np.ndarray:
    keep = np.ones(len(values), dtype=bool)
    if low is not None:
        keep &= values >= low
    if high is not None:
        keep &= values <= high
    return keep
