"""`--engine local|ray --workers N` on windows, mix and instruct-dataset: the plain run's bytes.

Windows: generated Cholec80-VQA trees (frame folders, and H.264 videos with one
that does not decode and a QA line without a separator, so rejects are in the
stream), cut by 1-3 local workers or Ray tasks: windows.arrow, windows.json,
rejects.jsonl and the clip cache are sha256-identical to the plain run, also on
a re-run that finds its clips in the cache. Mix: staged shards (several per
source) copied by 1-3 workers. instruct-dataset: the builds and the mix of a
small recipe with 2 workers. Bad --engine/--workers: one line, exit 2, for
each command. The Ray tests share one local Ray for the module, marked slow.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
from support.raw_trees import make_vqa_rad_subset
from support.staged_sources import write_staged
from support.surgical_trees import make_cholec80_tree
from typer.testing import CliRunner

from omnivmed.builders import get_builder
from omnivmed.cli.data import app
from omnivmed.engines.windows import engine_windows, window_units

runner = CliRunner()
STEP = 10  # a window every 10 frames of a video, every 10 files of a frame folder
FRAME_SOURCES = ("folders", "videos")


def invoke(*args) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def tree_digests(*roots: Path) -> dict[str, str]:
    """sha256 of every file under the roots (relative names), minus the output locks."""
    found = {}
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".lock")):
            found[f"{root.name}/{path.relative_to(root).as_posix()}"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


# -- windows ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def surgical_raw(tmp_path_factory) -> Path:
    """Videos 1, 5 and 7 as frame folders and as videos (video07.mp4 does not decode); one bad QA line."""
    raw = make_cholec80_tree(tmp_path_factory.mktemp("surgical") / "raw", videos=(1, 5, 7), n_frames=20, with_videos=True)
    (raw / "videos" / "video07.mp4").write_bytes(b"not a video at all")
    with open(raw / "Cholec80-VQA" / "Classification" / "1" / "100.txt", "a", encoding="utf-8") as f:
        f.write("a line without the separator\n")
    return raw


def windows(raw: Path, out: Path, frames: str, *engine_args) -> Path:
    invoke("windows", "cholec80_vqa", "--raw", raw, "--out", out, "--step", STEP, "-o", "short_side=0", "-o", f"frames={frames}", "--no-progress", *engine_args)
    return out


def window_digests(out: Path) -> dict[str, str]:
    found = {name.split("/", 1)[1]: digest for name, digest in tree_digests(out).items()}
    names = {Path(k).name for k in found}
    assert {"windows.arrow", "windows.json", "rejects.jsonl"} <= names and any(n.endswith(".jpg") for n in names)
    return found


@pytest.fixture(scope="module")
def plain_windows(surgical_raw, tmp_path_factory) -> dict[str, dict[str, str]]:
    root = tmp_path_factory.mktemp("plain-windows")
    return {frames: window_digests(windows(surgical_raw, root / frames, frames)) for frames in FRAME_SOURCES}


@pytest.mark.parametrize("frames", FRAME_SOURCES)
def test_window_units_give_the_items_of_windows(surgical_raw, tmp_path, frames):
    builder = get_builder("cholec80_vqa", {"short_side": "0", "frames": frames})
    plain = list(builder.windows(surgical_raw, tmp_path / "plain", STEP))
    per_unit = 1 if frames == "folders" else 8  # 2 windows per frame folder, 50 per video
    rejects, units = window_units(builder, surgical_raw, STEP, per_unit=per_unit)
    assert rejects and len({(u.split, u.video) for u in units}) == 3 and len(units) > 3
    for out in ("cut", "cut"):  # the second run reads the clips the first one stored
        assert list(engine_windows(builder, surgical_raw, tmp_path / out, STEP, engine="local", workers=1, per_unit=per_unit)) == plain
    reasons = {item.reason for item in plain if not hasattr(item, "clip")}
    assert reasons == ({"missing_separator", "unreadable_video"} if frames == "videos" else {"missing_separator"})


@pytest.mark.slow
def test_windows_with_two_workers_write_the_plain_bytes_and_rerun_from_the_cache(surgical_raw, plain_windows, tmp_path):
    out = windows(surgical_raw, tmp_path / "out", "videos", "--workers", 2)
    assert window_digests(out) == plain_windows["videos"]
    assert window_digests(windows(surgical_raw, out, "videos", "--workers", 2)) == plain_windows["videos"]


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("frames", FRAME_SOURCES)
def test_windows_on_local_workers_write_the_plain_bytes(surgical_raw, plain_windows, tmp_path, frames, workers):
    out = windows(surgical_raw, tmp_path / "out", frames, "--engine", "local", "--workers", workers)
    assert window_digests(out) == plain_windows[frames]


# -- mix -------------------------------------------------------------------------------------------

ALPHA = {("train", "vqa", "ct"): 60, ("train", "vqa", "mri"): 30, ("test", "vqa", "ct"): 7}
BETA = {("train", "surgical_vqa", "endoscopy"): 24, ("validation", "surgical_vqa", "endoscopy"): 3}
RECIPE = "name: enginemix\nseed: 3\nsources:\n  alpha: {take: 50}\n  beta: {take: all}\n"


@pytest.fixture(scope="module")
def staged(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("mix")
    write_staged(root / "staged", "alpha", ALPHA)
    write_staged(root / "staged", "beta", BETA, kind="video")
    recipe = root / "enginemix.yaml"
    recipe.write_text(RECIPE)
    return root / "staged", recipe


def mix(staged: tuple[Path, Path], into: Path, *engine_args) -> dict[str, str]:
    root, recipe = staged
    out, manifests = into / "out", into / "manifests"
    invoke("mix", recipe, "--staged", root, "--out", out, "--manifests", manifests, "--max-shard-mb", 1, "--no-progress", *engine_args)
    found = tree_digests(out, manifests)
    assert any(k.endswith(".arrow") for k in found) and "manifests/enginemix.manifest.json" in found
    return found


@pytest.fixture(scope="module")
def plain_mix(staged, tmp_path_factory) -> dict[str, str]:
    return mix(staged, tmp_path_factory.mktemp("plain-mix"))


def test_mix_units_are_the_input_shards_with_drawn_rows(staged):
    from omnivmed.data.mix import plan_mix, read_drawn, shard_draws
    from omnivmed.data.recipe import load_recipe

    plan = plan_mix(load_recipe(staged[1]), staged[0])
    units = [u for entry in plan.entries for u in shard_draws(entry)]
    assert len(units) > len(plan.entries)  # several shards per source
    assert sum(batch.num_rows for u in units for batch in read_drawn(u)) == plan.rows


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_mix_on_local_workers_writes_the_plain_bytes(staged, plain_mix, tmp_path, workers):
    assert mix(staged, tmp_path, "--engine", "local", "--workers", workers) == plain_mix


# -- instruct-dataset ------------------------------------------------------------------------------

PIPELINE_RECIPE = """
name: engine-instruct
seed: 1
stage: 3
sources:
  vqa_rad:
    take: 0.5
    build: {source: vqa_rad, raw: vqa_rad}
  cholec80_vqa:
    take: all
    build: {source: cholec80_vqa, raw: cholec80_vqa, options: {short_side: "0"}}
"""


@pytest.fixture(scope="module")
def pipeline_inputs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("pipeline")
    make_vqa_rad_subset(root / "raw" / "vqa_rad", 60)
    make_cholec80_tree(root / "raw" / "cholec80_vqa")
    recipe = root / "engine-instruct.yaml"
    recipe.write_text(PIPELINE_RECIPE)
    return root / "raw", recipe


def instruct(inputs: tuple[Path, Path], into: Path, *engine_args) -> dict[str, str]:
    raw, recipe = inputs
    staged, out, manifests = into / "staged", into / "out", into / "manifests"
    invoke("instruct-dataset", "--recipe", recipe, "--raw", raw, "--staged", staged, "--out-root", out, "--manifests", manifests, "--no-progress", *engine_args)
    # The builds' clip caches are their working state, not outputs (shards, manifests, rejects, data card).
    found = {name: digest for name, digest in tree_digests(staged, out, manifests).items() if "/clips/" not in name}
    assert "manifests/engine-instruct.manifest.json" in found and "staged/vqa_rad/manifest.json" in found
    return found


@pytest.mark.slow
def test_instruct_dataset_with_two_workers_writes_the_plain_bytes(pipeline_inputs, tmp_path):
    assert instruct(pipeline_inputs, tmp_path / "workers", "--workers", 2) == instruct(pipeline_inputs, tmp_path / "plain")


# -- bad options -----------------------------------------------------------------------------------

COMMANDS = {
    "windows": ["windows", "cholec80_vqa", "--raw", "{raw}", "--out", "{out}"],
    "mix": ["mix", "{recipe}", "--staged", "{raw}", "--out", "{out}", "--manifests", "{out}/manifests"],
    "instruct-dataset": ["instruct-dataset", "--recipe", "{recipe}", "--raw", "{raw}", "--staged", "{out}/staged", "--out-root", "{out}", "--manifests", "{out}/manifests"],
}


@pytest.mark.parametrize("args", [["--engine", "spark"], ["--workers", "0"]], ids=["engine", "workers"])
@pytest.mark.parametrize("command", COMMANDS)
def test_bad_engine_or_workers_is_one_line_and_exit_2(tmp_path, command, args):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)
    (tmp_path / "raw").mkdir()
    out = tmp_path / "out"
    line = [a.format(raw=tmp_path / "raw", out=out, recipe=recipe) for a in COMMANDS[command]]
    exe = Path(sys.executable).parent / "omnivmed-data"
    run = subprocess.run([str(exe), *line, *args], capture_output=True, text=True)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {args[0]}"), run.stderr
    assert not out.exists()


# -- Ray -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module (the engines use a Ray already started in the process)."""
    ray = pytest.importorskip("ray")
    import logging

    ray.init(address="local", num_cpus=3, include_dashboard=False, logging_level=logging.WARNING)
    yield ray
    ray.shutdown()


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_windows_on_ray_write_the_plain_bytes(surgical_raw, plain_windows, local_ray, tmp_path, workers):
    out = windows(surgical_raw, tmp_path / "out", "videos", "--engine", "ray", "--workers", workers)
    assert window_digests(out) == plain_windows["videos"]


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_mix_on_ray_writes_the_plain_bytes(staged, plain_mix, local_ray, tmp_path, workers):
    assert mix(staged, tmp_path, "--engine", "ray", "--workers", workers) == plain_mix


@pytest.mark.slow
def test_instruct_dataset_on_ray_writes_the_plain_bytes(pipeline_inputs, local_ray, tmp_path):
    assert instruct(pipeline_inputs, tmp_path / "ray", "--engine", "ray", "--workers", 2) == instruct(pipeline_inputs, tmp_path / "plain")
