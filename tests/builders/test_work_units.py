"""Work units of the builders: their concatenation is generate(), so every engine writes the same bytes.

Each builder with units is split on the embedded data (data/) or on a
generated tree of its real layout (tests/support/*_trees.py), into more than
one unit, and the units' items in order must equal ``generate()`` item for
item. Builds with ``--workers 2`` (spawned processes) must write the plain
build's bytes: shards, manifest (with the builder's counters) and rejects.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from support.m3d_trees import make_m3d_cap_tree, make_m3d_vqa_tree
from support.surgical_trees import make_cholec80_tree, make_endovis18_tree, make_psiava_tree, write_lines

from omnivmed.build import build_source
from omnivmed.builders import get_builder
from omnivmed.builders.base import ReadyItems, WholeSource

DATA = Path(__file__).resolve().parents[2] / "data"


def units_then_items(builder, raw: Path, out: Path | None = None) -> tuple[list, list]:
    if out is not None:
        builder.begin(out)
    units = builder.work_units(raw)
    return units, [item for unit in units for item in builder.generate_unit(raw, unit)]


def assert_units_are_generate(name: str, raw: Path, out: Path | None = None, **options) -> list:
    builder = get_builder(name, options)
    units, items = units_then_items(builder, raw, out)
    assert len(units) > 1 and not any(isinstance(u, WholeSource) for u in units)
    plain = get_builder(name, options)
    if out is not None:
        plain.begin(out)
    assert items == list(plain.generate(raw))
    assert builder.counters() == plain.counters()
    return units


# -- 2D rows -------------------------------------------------------------------------------------


def test_slake_units_are_chunks_of_english_records_held_out_first():
    units = assert_units_are_generate("slake", DATA / "slake")
    splits = [u.split for u in units]
    assert splits == sorted(splits, key=["test", "validation", "train"].index)
    assert all(r.get("q_lang") != "zh" for u in units for _, r in u.records)


def test_slake_unreadable_split_file_is_a_unit_of_its_reject(tmp_path):
    raw = tmp_path / "slake"
    shutil.copytree(DATA / "slake", raw)
    (raw / "validate.json").write_text("[{", encoding="utf-8")
    units = assert_units_are_generate("slake", raw)
    ready = [u for u in units if isinstance(u, ReadyItems)]
    assert len(ready) == 1 and ready[0].items[0].reason == "malformed_json"


def test_pathvqa_lxmert_units(tmp_path):
    assert_units_are_generate("pathvqa", DATA / "pathvqa")


def test_pathvqa_parquet_units_are_split_files(tmp_path):
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    def png(value: int) -> bytes:
        buf = io.BytesIO()
        Image.new("L", (8, 8), value).save(buf, format="PNG")
        return buf.getvalue()

    for split in ("train", "test"):
        rows = [{"image": {"bytes": png(i), "path": f"{i}.png"}, "question": f"q{i}?", "answer": "yes"} for i in range(3)]
        (tmp_path / "data").mkdir(exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), tmp_path / "data" / f"{split}-00000-of-00001.parquet")
    units = assert_units_are_generate("pathvqa", tmp_path)
    assert [u.path for u in units] == ["data/test-00000-of-00001.parquet", "data/train-00000-of-00001.parquet"]


# -- volumes -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def m3d_cap(tmp_path_factory) -> Path:
    return make_m3d_cap_tree(tmp_path_factory.mktemp("m3d_cap") / "raw")


def test_m3d_cap_one_unit_per_volume(m3d_cap):
    units = assert_units_are_generate("m3d_cap", m3d_cap)
    images = [u.entries[0][1]["image"] for u in units]
    assert len(images) == len(set(images))  # the tree's entries name distinct volumes


def test_m3d_cap_unknown_split_and_a_bad_split_are_units_of_rejects(tmp_path, m3d_cap):
    raw = tmp_path / "raw"
    shutil.copytree(m3d_cap, raw)
    index = raw / "M3D_Cap" / "M3D_Cap.json"
    data = json.loads(index.read_text(encoding="utf-8"))
    data["extra"] = []
    data["validation"] = "not a list"
    index.write_text(json.dumps(data), encoding="utf-8")
    units = assert_units_are_generate("m3d_cap", raw)
    reasons = [item.reason for u in units if isinstance(u, ReadyItems) for item in u.items]
    assert sorted(reasons) == ["malformed_json", "unknown_split"]


def test_m3d_vqa_units_are_runs_of_rows_about_one_volume(tmp_path):
    raw = make_m3d_vqa_tree(tmp_path / "raw")
    units = assert_units_are_generate("m3d_vqa", raw)
    volume_units = [u for u in units if not isinstance(u, ReadyItems)]
    assert all(len({row["Image Path"] for _, row in u.rows}) == 1 for u in volume_units)
    assert all("Text" not in row for u in volume_units for _, row in u.rows)  # the unused report stays home


# -- clips ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, make",
    [("cholec80_vqa", make_cholec80_tree), ("endovis18_vqa", make_endovis18_tree), ("psiava_vqa", make_psiava_tree)],
)
def test_surgical_units_are_one_video_each(tmp_path, name, make):
    raw = make(tmp_path / "raw")
    units = assert_units_are_generate(name, raw, tmp_path / "out", short_side="0")
    videos = [u for u in units if not isinstance(u, ReadyItems)]
    assert len(videos) > 1 and all(len({(r.split, r.video) for r in u.records}) == 1 for u in videos)


def test_surgical_layout_rejects_come_first_as_one_unit(tmp_path):
    raw = make_cholec80_tree(tmp_path / "raw")
    write_lines(raw / "Cholec80-VQA" / "Classification" / "1" / "400.txt", ["a line without the separator"])
    units = assert_units_are_generate("cholec80_vqa", raw, tmp_path / "out", short_side="0")
    assert isinstance(units[0], ReadyItems) and units[0].items[0].reason == "missing_separator"


# -- builds with 2 workers -----------------------------------------------------------------------


def digests(out: Path) -> dict[str, str]:
    files = sorted(p for p in out.rglob("*") if p.is_file() and (p.suffix == ".arrow" or p.name in ("manifest.json", "rejects.jsonl")))
    assert any(p.suffix == ".arrow" for p in files)
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def build_twice(name: str, raw: Path, tmp_path: Path, **options) -> tuple[dict, dict]:
    plain = build_source(get_builder(name, options), raw, tmp_path / "plain", progress=False)
    pooled = build_source(get_builder(name, options), raw, tmp_path / "pooled", progress=False, workers=2)
    assert plain.manifest.counters == pooled.manifest.counters
    return digests(tmp_path / "plain"), digests(tmp_path / "pooled")


def test_slake_two_workers_write_the_plain_bytes(tmp_path):
    plain, pooled = build_twice("slake", DATA / "slake", tmp_path)
    assert plain == pooled


def test_cholec80_two_workers_write_the_plain_bytes_and_counters(tmp_path):
    raw = make_cholec80_tree(tmp_path / "raw")
    plain, pooled = build_twice("cholec80_vqa", raw, tmp_path, short_side="0")
    assert plain == pooled
    manifest = json.loads((tmp_path / "pooled" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["counters"] == {"clips_padded": 2}  # frame 100 of each video: counted in the workers


def test_m3d_cap_two_workers_write_the_plain_bytes(tmp_path, m3d_cap):
    plain, pooled = build_twice("m3d_cap", m3d_cap, tmp_path)
    assert plain == pooled


# -- PubMedVision and its byte offsets -----------------------------------------------------------


def pubmedvision_tree(tmp_path: Path, rows: int, zips: int = 0) -> Path:
    from support.pubmedvision_trees import image_bytes, vqa_row, write_tree

    names = [f"images/pmc_{n}_0.jpg" for n in range(4)]
    data = [
        vqa_row(
            f"r{n}",
            [names[n % 4]] if n % 5 else [names[n % 4], names[(n + 1) % 4]],
            # Some rows without a placeholder (counted), some with a tag no vocabulary lists (counted).
            [("human", f"<image>\nQuestion é {n}?" if n % 3 else f"Question ü {n}?"), ("gpt", f"Answer {n}.")],
            "Thermography" if n % 7 == 0 else "CT",
            "Chest",
        )
        for n in range(rows)
    ]
    data[5]["image"] = ["images/missing.jpg"]  # a reject inside a unit
    return write_tree(tmp_path / "raw", instruction=data, alignment=data[:7], images=image_bytes(names), zips=zips)


@pytest.mark.parametrize("zips", [0, 2])
def test_pubmedvision_units_are_row_runs_by_byte_offset(tmp_path, monkeypatch, zips):
    import omnivmed.builders.pubmedvision as pubmedvision

    monkeypatch.setattr(pubmedvision, "ROWS_PER_UNIT", 4)
    raw = pubmedvision_tree(tmp_path, 19, zips)
    units = assert_units_are_generate("pubmedvision", raw, subset="both")
    assert [u.count for u in units] == [4, 3] + [4, 4, 4, 4, 3]  # alignment's 7 rows, then instruction's 19
    counters = get_builder("pubmedvision", {"subset": "both"})
    list(counters.generate(raw))
    assert counters.counters()["placeholders_added"] > 0 and counters.counters()["modality_unspecified"] > 0


def test_pubmedvision_broken_file_and_broken_zip_are_units_of_rejects(tmp_path, monkeypatch):
    import omnivmed.builders.pubmedvision as pubmedvision

    monkeypatch.setattr(pubmedvision, "ROWS_PER_UNIT", 4)
    raw = pubmedvision_tree(tmp_path, 9, zips=2)
    text = (raw / pubmedvision.INSTRUCTION_JSON).read_text(encoding="utf-8")
    (raw / pubmedvision.INSTRUCTION_JSON).write_text(text[: len(text) * 2 // 3], encoding="utf-8")  # breaks off
    (raw / "images_1.zip").write_bytes(b"PK\x03\x04 not really a zip")
    units = assert_units_are_generate("pubmedvision", raw)
    reasons = [item.reason for u in units if isinstance(u, ReadyItems) for item in u.items]
    assert reasons == ["malformed_json", "unreadable_zip"]


def test_json_rows_at_reads_from_any_offset_across_buffer_chunks(tmp_path, monkeypatch):
    import omnivmed.builders.json_stream as json_stream

    monkeypatch.setattr(json_stream, "CHUNK_CHARS", 7)  # every element crosses a chunk boundary
    rows = [{"id": n, "text": "é" * n + "\r\n"} for n in range(12)]
    path = tmp_path / "rows.json"
    path.write_text("[\r\n" + ",\r\n  ".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\r\n]", encoding="utf-8")
    found = list(json_stream.json_rows_with_offsets(path, tmp_path))
    assert [row for _, row, _ in found] == rows
    for index, _, offset in found:
        assert json_stream.json_rows_at(path, offset, len(rows) - index) == rows[index:]


# -- MIMIC-CXR -----------------------------------------------------------------------------------


def test_mimic_cxr_units_are_study_chunks_then_vqa_runs(tmp_path, monkeypatch):
    import omnivmed.builders.mimic_cxr as mimic_cxr
    import omnivmed.builders.mimic_cxr_vqa as mimic_cxr_vqa
    from support.mimic_trees import write_mimic_tree

    monkeypatch.setattr(mimic_cxr, "STUDIES_PER_UNIT", 2)
    monkeypatch.setattr(mimic_cxr_vqa, "ROWS_PER_UNIT", 2)
    raw = write_mimic_tree(tmp_path / "raw")
    units = assert_units_are_generate("mimic_cxr", raw, tasks="report,vqa")
    kinds = [type(u).__name__ for u in units]
    assert "StudyChunk" in kinds and "VqaRun" in kinds
    assert kinds.index("VqaRun") > max(i for i, k in enumerate(kinds) if k == "StudyChunk")  # reports first
    counted = get_builder("mimic_cxr", {"tasks": "report,vqa"})
    counted.work_units(raw)
    assert counted.counters() == {"preferred_image_missing": 1}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["slake", "cholec80_vqa"])
def test_ray_two_workers_write_the_plain_bytes(tmp_path, name):
    pytest.importorskip("ray")
    raw = DATA / "slake" if name == "slake" else make_cholec80_tree(tmp_path / "raw")
    options = {} if name == "slake" else {"short_side": "0"}
    plain = build_source(get_builder(name, options), raw, tmp_path / "plain", progress=False)
    on_ray = build_source(get_builder(name, options), raw, tmp_path / "ray", progress=False, engine="ray", workers=2)
    assert plain.manifest.counters == on_ray.manifest.counters
    assert digests(tmp_path / "plain") == digests(tmp_path / "ray")
