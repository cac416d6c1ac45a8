"""The paper's seven benchmarks, read from our own builders' held-out splits.

A benchmark is a source, the split the paper evaluates on and a rule that
gives every question the *source's own* id, so an answer file written by any
other tool (LLaVA-Med's ``{"question_id", "text"}`` lines) matches our
ground truth. Ground truth comes from a built manifest (a staged source, or a
mix that holds the split); building from a raw folder is the app's job
(``omnivmed/eval_ground_truth.py``), which then reads the built manifest here.

| benchmark | source | split | question id | question type |
| --- | --- | --- | --- | --- |
| vqa_rad | vqa_rad | test (phrase_type test_*: 451) | VQA-RAD ``qid`` | VQA-RAD ``question_type`` |
| slake | slake (English) | test (1,061) | SLAKE ``qid`` | SLAKE ``content_type`` |
| pathvqa | pathvqa | test (6,761 in LXMERT pvqa_test.json) | LXMERT ``<img_id>:<index>`` (parquet: ``<file>#<row>``) | - |
| m3d_vqa | m3d_vqa | test (M3D_VQA_test.csv) | ``<m3d split>#<row>:<closed or open>`` | plane, phase, organ, abnormality, location |
| cholec80_vqa | cholec80_vqa | validation (held-out videos) | ``<video>/<frame>\\|<question>`` | our task (phase, tool...) |
| endovis18_vqa | endovis18_vqa | validation (seq 1, 5, 16) | ``<seq_N>/<frame>\\|<question>`` | our task |
| psiava_vqa | psiava_vqa | validation (Val/) | ``<case>/<frame>\\|<question>`` | our task (location, phase, step) |

The surgical sets have no test split: the anchors (Surgical-VQA, SurgicalGPT)
report on their held-out videos, which our builders call validation. Only
their ``Classification`` lines are benchmark questions (accuracy over the
answer classes); the ``Sentence`` lines are free text.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator

from omnivmed.data.manifest import Manifest, ManifestError, shard_path
from omnivmed.data.output import MANIFEST_NAME
from omnivmed.data.schema import IMAGE_TOKEN, VIDEO_TOKEN
from omnivmed.data.shards import ShardSchemaError, open_shard
from omnivmed.evaluation.errors import EvalInputError
from omnivmed.evaluation.items import EvalItem

# Row columns read for ground truth (frames are read only when a predictor needs them).
_COLUMNS = ("id", "source", "split", "task", "modality", "visual_kind", "frame_format", "conversations", "answer_type", "provenance")


@dataclass(frozen=True)
class GtRecord:
    """One benchmark question as our shards hold it, ready to become an :class:`EvalItem`."""

    question_id: str  # the source's own id (see the module table)
    sample_id: str  # ours (the Sample id)
    split: str
    question: str  # the user turn without its <image>/<video> placeholder
    answer: str  # as the source wrote it (M3D closed: the answer text; the letter is answer_choice)
    answer_type: str  # closed / open
    question_type: str = ""
    modality: str = ""
    visual_kind: str = "image"
    frame_format: str | None = None
    n_frames: int = 0
    choices: tuple[str, ...] = ()
    answer_choice: str = ""
    extra: tuple[tuple[str, str], ...] = ()  # ("benchmark", name), then the source's fields kept in provenance
    shard: str = ""  # the shard that holds the frames ...
    row: int = -1  # ... and the row

    def item(self, prediction: str) -> EvalItem:
        return EvalItem(
            question_id=self.question_id,
            question=self.question,
            answer=self.answer,
            prediction=prediction,
            answer_type=self.answer_type,
            sample_id=self.sample_id,
            question_type=self.question_type,
            modality=self.modality,
            choices=self.choices,
            answer_choice=self.answer_choice,
            extra=self.extra,
        )

    def field(self, key: str, default: str = "") -> str:
        return dict(self.extra).get(key, default)


@dataclass(frozen=True)
class Benchmark:
    name: str
    title: str  # as the paper's tables print it
    source: str  # the builder whose shards hold it
    split: str  # the split the paper evaluates on
    paper_table: str  # "Table 1", "Table 2", "Table 3"
    question_id: Callable[[dict], str]
    question_type: Callable[[dict], str] = lambda row: ""
    keep: Callable[[dict], bool] = lambda row: True
    note: str = ""


def _fields(row: dict) -> dict[str, str]:
    return {kv["key"]: kv["value"] for kv in row["provenance"]["fields"]}


def _record_id(row: dict) -> str:
    return row["provenance"]["record_id"]


def _slake_qid(row: dict) -> str:
    return _fields(row).get("qid") or _record_id(row)


def _m3d_qid(row: dict) -> str:
    # record_id is "<csv path>#<row>:<form>"; the id keeps the M3D split file and drops our path.
    tail = _record_id(row).rsplit("#", 1)[-1]
    return f"{_fields(row).get('m3d_split', 'test')}#{tail}"


def _surgical_qid(row: dict) -> str:
    fields = _fields(row)
    return f"{fields.get('video', '')}/{fields.get('frame', '')}|{user_text(row)}"


def _surgical_keep(row: dict) -> bool:
    return _fields(row).get("variant", "Classification") == "Classification"


def _surgical(name: str, title: str) -> Benchmark:
    return Benchmark(
        name=name,
        title=title,
        source=name,
        split="validation",
        paper_table="Table 3",
        question_id=_surgical_qid,
        question_type=lambda row: row["task"],
        keep=_surgical_keep,
        note="held-out videos (the anchors' test set; our builders call it validation); Classification lines only",
    )


BENCHMARKS: "OrderedDict[str, Benchmark]" = OrderedDict(
    (b.name, b)
    for b in (
        Benchmark("vqa_rad", "VQA-RAD", "vqa_rad", "test", "Table 1", _record_id, lambda row: _fields(row).get("question_type", "")),
        Benchmark("slake", "SLAKE", "slake", "test", "Table 1", _slake_qid, lambda row: _fields(row).get("content_type", ""), note="English rows only"),
        Benchmark("pathvqa", "PathVQA", "pathvqa", "test", "Table 1", _record_id, note="closed = yes/no answer (no answer_type in the source)"),
        Benchmark("m3d_vqa", "M3D-VQA", "m3d_vqa", "test", "Table 2", _m3d_qid, lambda row: _fields(row).get("question_type_name", "")),
        _surgical("cholec80_vqa", "Cholec80-VQA"),
        _surgical("endovis18_vqa", "EndoVis18-VQA"),
        _surgical("psiava_vqa", "PSI-AVA-VQA"),
    )
)


def benchmark_names() -> list[str]:
    return list(BENCHMARKS)


def get_benchmark(name: str) -> Benchmark:
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise EvalInputError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}") from None


def parse_benchmarks(text: str) -> list[Benchmark]:
    """'vqa_rad,slake' -> benchmarks, in the order given; 'all' -> every one."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        return list(BENCHMARKS.values())
    if not names:
        raise EvalInputError("no benchmark named")
    return [get_benchmark(n) for n in names]


def user_text(row: dict) -> str:
    """The first user turn without its visual placeholders."""
    for turn in row["conversations"]:
        if turn["role"] == "user":
            text = turn["content"].replace(IMAGE_TOKEN, "").replace(VIDEO_TOKEN, "")
            return text.strip()
    return ""


def assistant_text(row: dict) -> str:
    for turn in row["conversations"]:
        if turn["role"] == "assistant":
            return turn["content"].strip()
    return ""


_CHOICES = re.compile(r"\sChoices:\s*A\.\s(?P<A>.*?)\sB\.\s(?P<B>.*?)\sC\.\s(?P<C>.*?)\sD\.\s(?P<D>.*)$", re.S)


def m3d_choices(question: str) -> tuple[str, ...]:
    """The four options M3D appends to a closed question ('... Choices: A. x B. y C. z D. w')."""
    match = _CHOICES.search(question)
    return tuple(match.group(letter).strip() for letter in "ABCD") if match else ()


def record_of(benchmark: Benchmark, row: dict, shard: str = "", index: int = -1, n_frames: int = 0) -> GtRecord:
    """A shard row (``Sample.to_row()`` form, frames optional) as a ground-truth record."""
    fields = _fields(row)
    question = user_text(row)
    answer = assistant_text(row)
    choices: tuple[str, ...] = ()
    letter = ""
    if benchmark.name == "m3d_vqa" and row["answer_type"] == "closed":
        choices = m3d_choices(question)
        letter = fields.get("answer_choice", "")
        prefix = f"{letter}. "
        if answer.startswith(prefix):
            answer = answer[len(prefix) :]
    return GtRecord(
        question_id=benchmark.question_id(row),
        sample_id=row["id"],
        split=row["split"],
        question=question,
        answer=answer,
        answer_type=row["answer_type"] or "open",
        question_type=benchmark.question_type(row),
        modality=row["modality"],
        visual_kind=row["visual_kind"],
        frame_format=row["frame_format"],
        n_frames=n_frames,
        choices=choices,
        answer_choice=letter,
        extra=(("benchmark", benchmark.name), *sorted(fields.items())),
        shard=shard,
        row=index,
    )


def manifest_file(path: Path) -> Path:
    """A manifest path from a manifest file or a folder holding ``manifest.json``."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise EvalInputError(f"{path}: no such manifest")
    return path


def load_manifest(path: Path) -> tuple[Path, Manifest]:
    path = manifest_file(path)
    try:
        return path, Manifest.load(path)
    except ManifestError as err:
        raise EvalInputError(str(err).splitlines()[0]) from None


def iter_rows(manifest_path: Path, source: str, splits: tuple[str, ...]) -> Iterator[tuple[dict, str, int, int]]:
    """(row without frames, shard path, row index, number of frames) of ``source`` in ``splits``, in shard order."""
    import pyarrow.compute as pc

    manifest_path, manifest = load_manifest(manifest_path)
    for info in manifest.shards:
        if info.split not in splits:
            continue
        path = shard_path(manifest_path, info)
        try:
            table = open_shard(path)
        except (ShardSchemaError, OSError) as err:
            raise EvalInputError(f"{path}: {str(err).splitlines()[0]}") from None
        counts = pc.list_value_length(table.column("frames")).to_pylist()
        for index, row in enumerate(table.select(list(_COLUMNS)).to_pylist()):
            if row["source"] == source and row["split"] in splits:
                yield row, str(path), index, counts[index] or 0


def read_ground_truth(benchmark: Benchmark, manifest_path: Path, split: str | None = None) -> list[GtRecord]:
    """The benchmark's questions in ``split`` (default: the paper's) from a built manifest.

    Raises :class:`EvalInputError` (one line) when the manifest holds none, or two questions share an id.
    """
    split = split or benchmark.split
    records: list[GtRecord] = []
    seen: dict[str, str] = {}
    found_splits: set[str] = set()
    for row, shard, index, n_frames in iter_rows(manifest_path, benchmark.source, ("train", "validation", "test")):
        found_splits.add(row["split"])
        if row["split"] != split or not benchmark.keep(row):
            continue
        record = record_of(benchmark, row, shard, index, n_frames)
        if record.question_id in seen:
            raise EvalInputError(
                f"{manifest_file(manifest_path)}: {benchmark.name} question id {record.question_id!r} is shared by "
                f"samples {seen[record.question_id]} and {record.sample_id}"
            )
        seen[record.question_id] = record.sample_id
        records.append(record)
    if not records:
        where = f"splits present: {', '.join(sorted(found_splits))}" if found_splits else f"no {benchmark.source} rows at all"
        raise EvalInputError(f"{manifest_file(manifest_path)}: no {benchmark.source} {split} questions ({where})")
    return records


@lru_cache(maxsize=8)
def _table(path: str):
    return open_shard(Path(path))


def frames_of(record: GtRecord) -> tuple[bytes, ...]:
    """The encoded frames of a record's sample (its shard is memory-mapped once and kept)."""
    if not record.shard:
        return ()
    return tuple(_table(record.shard).column("frames")[record.row].as_py())
