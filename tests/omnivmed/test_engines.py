"""Build engines: `--engine local|ray --workers N` write the same bytes as the plain build.

On the embedded data (data/vqa_rad, data/volumes with the options the embedded
default builds them with), every engine and worker count gives sha256-identical
shards, manifest.json and rejects.jsonl. The builders' work units are checked
item for item against their generate(). The Ray tests start one local Ray for
the module and are marked slow.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from omnivmed.builders import get_builder
from omnivmed.cli.data import app

DATA = Path(__file__).resolve().parents[2] / "data"
# As omnivmed/embedded.py builds the volumes (the options are recorded in the manifest).
VOLUME_OPTIONS = {
    "license": "Apache-2.0 (TotalSegmentator repository)",
    "homepage": "https://github.com/wasserth/TotalSegmentator",
    "citation": "Wasserthal J, et al. TotalSegmentator. Radiology: Artificial Intelligence 5(5), e230024 (2023).",
}
SOURCES = {"vqa_rad": {}, "volumes": VOLUME_OPTIONS}

runner = CliRunner()


def build(source: str, out: Path, *engine_args) -> Path:
    options = [a for k, v in SOURCES[source].items() for a in ("-o", f"{k}={v}")]
    args = ["build", source, "--raw", str(DATA / source), "--out", str(out), "--no-progress", *options, *engine_args]
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return out


def digests(out: Path) -> dict[str, str]:
    """sha256 of every shard, the manifest and the rejects report."""
    files = sorted(p for p in out.rglob("*") if p.is_file() and (p.suffix == ".arrow" or p.name in ("manifest.json", "rejects.jsonl")))
    assert any(p.suffix == ".arrow" for p in files) and (out / "manifest.json") in files
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> dict[str, dict[str, str]]:
    """The plain build (no engine options) of each source."""
    root = tmp_path_factory.mktemp("plain")
    return {source: digests(build(source, root / source)) for source in SOURCES}


# -- work units ----------------------------------------------------------------------------------


def units_then_items(builder, raw: Path) -> tuple[list, list]:
    units = builder.work_units(raw)
    return units, [item for unit in units for item in builder.generate_unit(raw, unit)]


@pytest.mark.parametrize("source", SOURCES)
def test_work_units_concatenate_to_generate(source):
    builder = get_builder(source, SOURCES[source])
    raw = DATA / source
    units, items = units_then_items(builder, raw)
    assert len(units) > 1
    assert items == list(builder.generate(raw))


def test_vqa_rad_units_are_chunks_in_build_order_test_first():
    builder = get_builder("vqa_rad")
    units = builder.work_units(DATA / "vqa_rad")
    from omnivmed.builders.vqa_rad import RECORDS_PER_UNIT, split_of

    assert all(len(u.records) == RECORDS_PER_UNIT for u in units[:-1]) and 0 < len(units[-1].records) <= RECORDS_PER_UNIT
    splits = [split_of(r["phrase_type"]) for u in units for _, r in u.records]
    assert splits == sorted(splits, key=lambda s: s != "test")  # held-out first
    indexes = [i for u in units for i, _ in u.records]
    assert sorted(indexes) == list(range(len(indexes)))


def test_volumes_without_annotations_one_unit_per_volume(tmp_path):
    raw = tmp_path / "volumes"
    shutil.copytree(DATA / "volumes", raw, ignore=shutil.ignore_patterns("annotations.csv"))
    (raw / "empty_folder").mkdir()  # a leaf folder without a volume: a reject, in order
    builder = get_builder("volumes", VOLUME_OPTIONS)
    units, items = units_then_items(builder, raw)
    assert len(units) == 4
    assert items == list(builder.generate(raw))


def test_a_builder_without_units_is_one_whole_unit(tmp_path):
    from omnivmed.builders.base import Builder, SourceInfo, WholeSource

    class Plain(Builder):
        info = SourceInfo("plain", "", "", "", "")

        def check_layout(self, raw):
            pass

        def input_files(self, raw):
            return []

        def generate(self, raw):
            yield from ()

    assert Plain().work_units(tmp_path) == [WholeSource()]


# -- the local engine ----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("source", SOURCES)
def test_local_engine_writes_the_plain_bytes(plain, tmp_path, source, workers):
    out = build(source, tmp_path / "out", "--engine", "local", "--workers", workers)
    assert digests(out) == plain[source]


@pytest.mark.parametrize("args", [["--engine", "spark"], ["--workers", "0"], ["--engine", "ray", "--workers", "-1"]])
def test_bad_engine_or_workers_is_one_line_and_exit_2(tmp_path, args):
    exe = Path(sys.executable).parent / "omnivmed-data"
    run = subprocess.run(
        [str(exe), "build", "vqa_rad", "--raw", str(DATA / "vqa_rad"), "--out", str(tmp_path / "out"), *args],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --"), run.stderr
    assert not (tmp_path / "out").exists()


def test_data_cli_help_does_not_import_ray():
    code = (
        "import sys\nfrom omnivmed.cli.data import app\n"
        "try:\n    app(['build', '--help'], prog_name='omnivmed-data')\nexcept SystemExit:\n    pass\n"
        "assert 'ray' not in sys.modules, 'ray imported'\nimport omnivmed.build\nassert 'ray' not in sys.modules"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


# -- the Ray engine ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module (the engine uses a Ray already started in the process)."""
    import logging

    import ray

    ray.init(address="local", num_cpus=3, include_dashboard=False, logging_level=logging.WARNING)
    yield ray
    ray.shutdown()


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("source", SOURCES)
def test_ray_engine_writes_the_plain_bytes(plain, local_ray, tmp_path, source, workers):
    out = build(source, tmp_path / "out", "--engine", "ray", "--workers", workers)
    assert digests(out) == plain[source]


class UnitFailed(ValueError):
    pass


def fail_on_two(unit: int) -> int:
    if unit == 2:
        raise UnitFailed(f"unit {unit}: bad input")
    return unit * 10


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["local", "ray"])
def test_an_error_in_a_unit_reaches_the_caller_as_itself(local_ray, engine):
    """The CLI's one-line messages catch the builders' own error types, whichever engine ran the unit."""
    from omnivmed.engines import ordered_map

    seen = []
    with pytest.raises(UnitFailed, match="unit 2: bad input"):
        for value in ordered_map(fail_on_two, [0, 1, 2, 3], engine=engine, workers=2):
            seen.append(value)
    assert seen == [0, 10]
