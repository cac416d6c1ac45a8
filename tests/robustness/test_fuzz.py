"""Seeded random mutations of the real annotation files in data/ (VQA-RAD, SLAKE, PathVQA).

Record-level mutations keep the file valid JSON (a key dropped, a value of
the wrong type, a record that is not an object, a path leaving the raw
folder, ...): the build never shows a traceback, and every record no mutation
touched is still built. Byte-level mutations (flips, cuts, insertions) may
break the JSON itself: the build then ends with one error line or a rejects
report, never a traceback.
"""

from __future__ import annotations

import copy
import json
import random
import shutil
from pathlib import Path
from typing import Callable

import pytest
from support.raw_trees import DATA, VQA_RAD_JSON, make_vqa_rad_subset
from support.samples import jpeg, samples_of
from typer.testing import CliRunner

from omnivmed.cli.data import app

runner = CliRunner()

ODD_VALUES = (None, "", " ", 0, -1, 1e308, True, [], {}, "x" * 5000, "../../../etc/passwd", "/etc/passwd", "\u0000", "🙂", {"nested": [1]})
ODD_RECORDS = (None, 42, "a string", [], {}, [1, 2])


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def check_no_traceback(result) -> None:
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code in (0, 1, 2), result.output
    if result.exit_code:
        assert sum(line.startswith("error:") for line in result.output.splitlines()) == 1, result.output


def built_ids(out: Path) -> set[str]:
    if not (out / "manifest.json").is_file():
        return set()
    return {s.provenance.record_id for s in samples_of(out)}


def mutate_record(rng: random.Random, record):
    """One JSON-valid change to one record (or the record replaced)."""
    if not isinstance(record, dict) or rng.random() < 0.15:
        return rng.choice(ODD_RECORDS)
    record = copy.deepcopy(record)
    key = rng.choice(sorted(record))
    if rng.random() < 0.3:
        del record[key]
    elif isinstance(record[key], dict) and record[key] and rng.random() < 0.5:  # PathVQA's sentf/labelf
        inner = rng.choice(sorted(record[key]))
        value = record[key][inner]
        if isinstance(value, list) and value and rng.random() < 0.6:
            value[rng.randrange(len(value))] = rng.choice(ODD_VALUES)
        else:
            record[key][inner] = rng.choice(ODD_VALUES)
    else:
        record[key] = rng.choice(ODD_VALUES)
    return record


def mutate_records(rng: random.Random, rows: list, n: int) -> tuple[list, set[int]]:
    rows = list(rows)
    touched = set(rng.sample(range(len(rows)), min(n, len(rows))))
    for i in touched:
        rows[i] = mutate_record(rng, rows[i])
    return rows, touched


def mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.choice(("flip", "cut", "insert", "delete", "truncate"))
        at = rng.randrange(max(1, len(data)))
        if op == "flip" and data:
            data[at] ^= 1 << rng.randrange(8)
        elif op == "cut":
            del data[at : at + rng.randint(1, 200)]
        elif op == "insert":
            data[at:at] = rng.choice([b"{", b"]", b",", b'"', b"\xff\xfe", b"null", b"\\u12", b"1e999999"])
        elif op == "delete" and data:
            del data[at]
        else:
            data = data[:at]
    return bytes(data)


# -- the three sources, as (raw tree, annotation files, how a record maps to built ids) ------------


def vqa_rad_tree(tmp: Path) -> tuple[Path, dict[str, list]]:
    raw = make_vqa_rad_subset(tmp, 25)
    return raw, {VQA_RAD_JSON: json.loads((raw / VQA_RAD_JSON).read_text())}


def vqa_rad_ids(name: str, record) -> Callable[[str], bool]:
    qid = str(record.get("qid")) if isinstance(record, dict) else None
    return lambda rid: rid == qid


def slake_tree(tmp: Path) -> tuple[Path, dict[str, list]]:
    slake = DATA / "slake"
    files = {}
    for name in ("train.json", "validate.json", "test.json"):
        rows = [r for r in json.loads((slake / name).read_text(encoding="utf-8")) if (slake / "imgs" / r["img_name"]).is_file()]
        files[name] = [r for r in rows if r.get("q_lang") == "en"][:8] + [r for r in rows if r.get("q_lang") == "zh"][:2]
        for r in files[name]:
            target = tmp / "imgs" / r["img_name"]
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                shutil.copyfile(slake / "imgs" / r["img_name"], target)
    return tmp, files


def slake_ids(name: str, record) -> Callable[[str], bool]:
    qid = f"{name}:{record.get('qid')}" if isinstance(record, dict) else None
    return lambda rid: rid == qid


def pathvqa_tree(tmp: Path) -> tuple[Path, dict[str, list]]:
    entries = json.loads((DATA / "pathvqa" / "pvqa_val.json").read_text(encoding="utf-8"))[:10]
    (tmp / "images" / "val").mkdir(parents=True)
    for n, entry in enumerate(entries):  # the vendored copy has no images: small real JPEGs stand in
        (tmp / "images" / "val" / f"{entry['img_id']}.jpg").write_bytes(jpeg(n, 24))
    return tmp, {"pvqa_val.json": entries}


def pathvqa_ids(name: str, record) -> Callable[[str], bool]:
    img_id = record.get("img_id") if isinstance(record, dict) else None
    return lambda rid: isinstance(img_id, str) and rid.startswith(f"{img_id}:")


SOURCES = {
    "vqa_rad": (vqa_rad_tree, vqa_rad_ids),
    "slake": (slake_tree, slake_ids),
    "pathvqa": (pathvqa_tree, pathvqa_ids),
}


def write_files(raw: Path, files: dict[str, list]) -> None:
    for name, rows in files.items():
        (raw / name).write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_record_mutations_never_lose_an_untouched_record(tmp_path, source):
    make_tree, ids_of = SOURCES[source]
    raw, files = make_tree(tmp_path / "raw")
    write_files(raw, files)
    baseline = run("build", source, "--raw", raw, "--out", tmp_path / "base", "--no-progress")
    assert baseline.exit_code == 0, baseline.output
    expected = built_ids(tmp_path / "base")
    assert expected
    for seed in range(10):
        rng = random.Random(f"{source}-{seed}")
        mutated, touched_ids = {}, []
        for name, rows in files.items():
            new_rows, touched = mutate_records(rng, rows, rng.randint(1, 3))
            mutated[name] = new_rows
            touched_ids += [ids_of(name, rows[i]) for i in touched]
        write_files(raw, mutated)
        out = tmp_path / f"out-{seed}"
        result = run("build", source, "--raw", raw, "--out", out, "--no-progress")
        check_no_traceback(result)
        untouched = {rid for rid in expected if not any(hit(rid) for hit in touched_ids)}
        missing = untouched - built_ids(out)
        assert not missing, (seed, sorted(missing), result.output)
        if (out / "rejects.jsonl").is_file():
            for line in (out / "rejects.jsonl").read_text().splitlines():
                reject = json.loads(line)
                assert reject["file"] and reject["reason"] and reject["detail"]
                assert " at 0x" not in reject["detail"]


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_byte_mutations_end_in_one_line_or_a_report_never_a_traceback(tmp_path, source):
    make_tree, _ = SOURCES[source]
    raw, files = make_tree(tmp_path / "raw")
    write_files(raw, files)
    originals = {name: (raw / name).read_bytes() for name in files}
    for seed in range(12):
        rng = random.Random(f"bytes-{source}-{seed}")
        name = rng.choice(sorted(originals))
        (raw / name).write_bytes(mutate_bytes(rng, originals[name]))
        result = run("build", source, "--raw", raw, "--out", tmp_path / f"out-{seed}", "--no-progress")
        check_no_traceback(result)
        if result.exit_code:
            line = next(line for line in result.output.splitlines() if line.startswith("error:"))
            assert name in line or str(raw) in line, line
        (raw / name).write_bytes(originals[name])


def test_identical_builds_write_identical_rejects(tmp_path):
    """Rejects carry no object reprs, addresses or timestamps: two builds, the same bytes."""
    raw, files = vqa_rad_tree(tmp_path / "raw")
    rows = files[VQA_RAD_JSON]
    (raw / "VQA_RAD Image Folder" / "garbage.jpg").write_bytes(b"definitely not an image")
    (raw / "VQA_RAD Image Folder" / "cut.jpg").write_bytes((raw / "VQA_RAD Image Folder" / rows[0]["image_name"]).read_bytes()[:300])
    rows[1]["image_name"], rows[2]["image_name"], rows[3]["question"] = "garbage.jpg", "cut.jpg", None
    rows[4]["image_name"] = "nowhere.jpg"
    write_files(raw, files)
    for out in ("a", "b"):
        assert run("build", "vqa_rad", "--raw", raw, "--out", tmp_path / out, "--no-progress").exit_code == 0
    first = (tmp_path / "a" / "rejects.jsonl").read_bytes()
    assert first == (tmp_path / "b" / "rejects.jsonl").read_bytes()
    assert b"object at" not in first and b"0x" not in first and first.count(b"\n") == 4
