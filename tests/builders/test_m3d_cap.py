"""The m3d_cap builder on small generated copies in M3D-Cap's real layout (slice folders, .npy, M3D_Cap.json)."""

from __future__ import annotations

import hashlib
import json
import shutil
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from support.m3d_trees import (
    TEXT_PLAIN,
    ARTERIAL,
    AXIAL,
    BONE,
    CORONAL,
    INDEX,
    LUNG_NPY,
    PREFIX,
    SERIES,
    cap_index,
    make_m3d_cap_tree,
    npy_volume,
    volume_slices,
    write_index,
)
from support.volume_files import write_slice_folder
from support.raw_trees import read_rejects
from support.samples import build_named, samples_of

from omnivmed.builders import BuilderOptionError, LayoutError, get_builder
from omnivmed.builders.m3d import remove_diacritics, report_text, resolve_volume
from omnivmed.builders.m3d_cap import REPORT_PROMPTS, report_prompt
from omnivmed.data.volume import PRESETS, VolumeError, VolumeInput, encode_volume, read_volume
from omnivmed.data.volume.encode import from_png


def build(raw: Path, out: Path, **options):
    return build_named("m3d_cap", raw, out, **options)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return make_m3d_cap_tree(tmp_path_factory.mktemp("m3d_cap") / "raw")


@pytest.fixture(scope="module")
def built(tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("m3d_cap_out")
    result = build(tree, out)
    return result, samples_of(out)


@pytest.fixture
def copy(tree, tmp_path) -> Path:
    """A private copy of the tree to break."""
    return Path(shutil.copytree(tree, tmp_path / "raw", symlinks=True))


def by_series(samples) -> dict[str, dict[str, object]]:
    """index image path -> task -> sample"""
    found: dict[str, dict[str, object]] = {}
    for s in samples:
        found.setdefault(s.provenance.record_id, {})[s.task] = s
    return found


# --- the report rule -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("study_findings:\nLesion in the\nliver.\n", "Lesion in the liver."),
        ("history: pain\nstudy_findings: Fracture.\ndiscussion: Common.", "Fracture. discussion: Common."),
        # findings shorter than 5 characters (spaces not counted): the discussion
        ("discussion:\nA benign cyst.\nstudy_findings:\n n o \n", "A benign cyst. study_findings:  n o"),
        # findings too short and no discussion: the whole text
        ("title: X\nstudy_findings: ok", "title: X study_findings: ok"),
        # neither section: the whole text, newlines as spaces
        ("Plain\nreport text\n", "Plain report text"),
        # no findings section: the whole text, even with a discussion in it
        ("Case notes\ndiscussion: ok", "Case notes discussion: ok"),
        ("  \n ", ""),
    ],
)
def test_report_rule(text, expected):
    assert report_text(text) == expected
    assert report_text(expected) == expected  # idempotent: M3D's already filtered text.txt stays as it is


def test_remove_diacritics_is_m3ds_npy_naming():
    assert remove_diacritics("Axial_Ç_arterial_phase") == "Axial_C_arterial_phase"
    assert remove_diacritics(unicodedata.normalize("NFD", "Coronal_non_contrasté")) == "Coronal_non_contraste"
    assert remove_diacritics("Axial_bone_window") == "Axial_bone_window"


# --- a clean build ------------------------------------------------------------------------------


def test_counts_per_split_and_task(built):
    result, samples = built
    manifest = result.manifest
    assert manifest.rejects == {} and manifest.duplicates_removed == 0
    assert manifest.counts["split"] == {"test": 4, "validation": 2, "train": 4}
    assert manifest.counts["task"] == {"image_text_retrieval": 5, "report_generation": 5}
    assert manifest.counts["modality"] == {"ct": 10} and manifest.counts["visual_kind"] == {"volume": 10}
    assert [i.path for i in manifest.inputs] == [INDEX]


def test_reports_follow_m3ds_rule_for_each_text(built):
    _, samples = built
    found = by_series(samples)
    for series in SERIES:
        tasks = found[series.index_image()]
        assert set(tasks) == {"report_generation", "image_text_retrieval"}
        for sample in tasks.values():
            assert sample.conversations[1].content == series.report
            assert sample.split == series.split and sample.modality == "ct" and sample.answer_type is None
            fields = dict(sample.provenance.fields)
            assert fields["m3d_split"] == series.split and fields["case_group"] == series.group
            text_root = "M3D_Cap_npy" if series.folder is None else "M3D_Cap"
            assert sample.provenance.raw_paths[1] == f"{text_root}/{series.group}/{series.case}/text.txt"
            assert sample.provenance.license.startswith("Apache-2.0")


def test_prompts_are_picked_by_a_hash_of_the_path(built):
    _, samples = built
    for path, tasks in by_series(samples).items():
        tail = path.removeprefix(PREFIX)
        expected = REPORT_PROMPTS[int.from_bytes(hashlib.sha256(tail.encode()).digest()[:8], "big") % len(REPORT_PROMPTS)]
        assert tasks["report_generation"].conversations[0].content == "<image>\n" + expected
        assert tasks["image_text_retrieval"].conversations[0].content == "<image>"
    # The copy's prefix plays no part; over many volumes every prompt is used.
    assert report_prompt("M3D_Cap_npy/ct_case/000006/A.npy") == report_prompt("ct_case/000006/A.npy")
    assert report_prompt("ct_case/000006/A.npy") == report_prompt("M3D_Cap/ct_case/000006/A.npy")
    used = {report_prompt(f"ct_case/{n:06d}/Axial.npy") for n in range(200)}
    assert used == set(REPORT_PROMPTS)


def test_slice_folders_become_32_frames_of_256_by_the_m3d_preset(built, tree):
    _, samples = built
    found = by_series(samples)
    for series in (AXIAL, CORONAL, ARTERIAL, BONE):
        sample = found[series.index_image()]["report_generation"]
        assert sample.frame_format == "png" and len(sample.frames) == 32
        assert sample.provenance.raw_paths[0] == series.slice_dir  # the folder as on disk, diacritics and all
        fields = dict(sample.provenance.fields)
        assert fields["volume_format"] == "slices" and fields["preset"] == "m3d"
        assert sample.visual_meta.frame_indices is None
        decoded = np.stack([from_png(f) for f in sample.frames])
        # Trilinear resizing need not land on the brightest voxel: near 1, not exactly 1.
        assert decoded.shape == (32, 256, 256) and decoded.max() > 0.95 and decoded.std() > 0.05
        assert len(set(sample.frames)) >= series.n - 1  # every slice but the black first one shows
        # Exactly what the shared reader + the m3d preset make of that folder.
        expected = encode_volume(read_volume(VolumeInput("slices", tree / series.slice_dir)), PRESETS["m3d"])
        assert sample.frames == expected.frames
    bone = dict(found[BONE.index_image()]["report_generation"].provenance.fields)
    assert bone["dropped_slices"] == "1"  # the one slice of another size
    assert found[BONE.index_image()]["report_generation"].visual_meta.original_shape == (10, 64, 56)
    assert found[CORONAL.index_image()]["report_generation"].visual_meta.original_shape == (8, 64, 56)


def test_npy_volumes_are_stored_as_they_are(built):
    _, samples = built
    sample = by_series(samples)[LUNG_NPY.index_image()]["report_generation"]
    assert sample.provenance.raw_paths[0] == LUNG_NPY.npy_file
    fields = dict(sample.provenance.fields)
    assert fields["volume_format"] == "npy" and fields["preset"] == "m3d-npy"
    assert "stored as it is" in fields["normalisation"]
    decoded = np.stack([from_png(f) for f in sample.frames])
    assert decoded.shape == (32, 256, 256)
    assert np.abs(decoded - npy_volume()[0]).max() <= 0.5 / 255 + 1e-6
    assert sample.visual_meta.original_shape == (32, 256, 256)


def test_a_rerun_is_reused_and_a_changed_option_rebuilds(tree, tmp_path):
    first = build(tree, tmp_path / "out")
    again = build(tree, tmp_path / "out")
    assert not first.reused and again.reused and again.manifest == first.manifest
    changed = build(tree, tmp_path / "out", tasks="report_generation")
    assert not changed.reused and changed.manifest.counts["task"] == {"report_generation": 5}
    deeper = build(tree, tmp_path / "out", tasks="report_generation", bit_depth="16")
    assert not deeper.reused and deeper.manifest.options["bit_depth"] == "16"
    npy = next(s for s in samples_of(tmp_path / "out") if s.provenance.raw_paths[0] == LUNG_NPY.npy_file)
    assert np.abs(from_png(npy.frames[5]) - npy_volume()[0, 5]).max() <= 0.5 / 65535 + 1e-7


def test_prefix_and_index_location_do_not_change_the_samples(built, tree, tmp_path):
    _, samples = built
    for prefix, where in (("", "M3D_Cap.json"), ("M3D_Cap/", "M3D_Cap_npy/M3D_Cap.json")):
        raw = Path(shutil.copytree(tree, tmp_path / f"raw{len(prefix)}"))
        (raw / INDEX).unlink()
        write_index(raw, cap_index(prefix=prefix), where)
        out = tmp_path / f"out{len(prefix)}"
        result = build(raw, out)
        assert result.manifest.rejects == {} and [i.path for i in result.manifest.inputs] == [where]
        assert sorted(s.id for s in samples_of(out)) == sorted(s.id for s in samples)


def test_raw_slices_are_used_when_the_options_ask_for_another_recipe(copy, tmp_path):
    # An .npy beside the raw slices: M3D's own preparation, taken as it is by default...
    path = copy / AXIAL.npy_file
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, npy_volume(seed=9))
    build(copy, tmp_path / "a")
    sample = next(s for s in samples_of(tmp_path / "a") if s.provenance.record_id == AXIAL.index_image())
    assert sample.provenance.raw_paths[0] == AXIAL.npy_file and dict(sample.provenance.fields)["volume_format"] == "npy"
    # ...but another shape needs the slices (a volume with only an .npy still uses it).
    build(copy, tmp_path / "b", shape="16x64x64")
    found = by_series(samples_of(tmp_path / "b"))
    axial = found[AXIAL.index_image()]["report_generation"]
    assert axial.provenance.raw_paths[0] == AXIAL.slice_dir and len(axial.frames) == 16
    assert from_png(axial.frames[0]).shape == (64, 64)
    assert len(found[LUNG_NPY.index_image()]["report_generation"].frames) == 32


# --- bad inputs ---------------------------------------------------------------------------------


def add_entry(raw: Path, image: str, text: str, split: str = "train") -> None:
    index = json.loads((raw / INDEX).read_text())
    index[split].append({"image": image, "text": text})
    (raw / INDEX).write_text(json.dumps(index, ensure_ascii=False))


def add_case(raw: Path, case: str, name: str, *, text: str | None = TEXT_PLAIN, group: str = "ct_case") -> tuple[str, Path]:
    """A new case with text.txt (unless None) and an index entry; returns (index image path, case folder)."""
    folder = raw / "M3D_Cap" / group / case
    folder.mkdir(parents=True)
    if text is not None:
        (folder / "text.txt").write_text(text)
    image = f"{PREFIX}{group}/{case}/{name}.npy"
    add_entry(raw, image, f"{PREFIX}{group}/{case}/text.txt")
    return image, folder


def add_npy_case(raw: Path, case: str, content) -> tuple[str, str]:
    image, _ = add_case(raw, case, "Axial", group="ct_quizze")
    path = raw / "M3D_Cap_npy" / "ct_quizze" / case / "Axial.npy"
    path.parent.mkdir(parents=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        np.save(path, content)
    return image, path.relative_to(raw).as_posix()


def test_each_bad_input_is_rejected_with_its_file_and_the_rest_is_built(copy, tmp_path):
    expected = []
    # A volume that is nowhere.
    image, _ = add_case(copy, "000101", "Nothing")
    expected.append((image, image, "missing_volume"))
    # A slice that is not an image, a JPEG slice cut short, a series folder without slices.
    image, case = add_case(copy, "000102", "Broken_png")
    write_slice_folder(case / "Broken_png", volume_slices(6))
    (case / "Broken_png" / "3.png").write_bytes(b"not a png at all")
    expected.append((image, "M3D_Cap/ct_case/000102/Broken_png/3.png", "unreadable_slice"))
    image, case = add_case(copy, "000103", "Cut_jpeg")
    write_slice_folder(case / "Cut_jpeg", volume_slices(6), suffix=".jpeg")
    (case / "Cut_jpeg" / "4.jpeg").write_bytes((case / "Cut_jpeg" / "4.jpeg").read_bytes()[:300])
    expected.append((image, "M3D_Cap/ct_case/000103/Cut_jpeg/4.jpeg", "unreadable_slice"))
    image, case = add_case(copy, "000104", "Empty_series")
    (case / "Empty_series").mkdir()
    (case / "Empty_series" / "notes.txt").write_text("no slices here")
    expected.append((image, "M3D_Cap/ct_case/000104/Empty_series", "empty_folder"))
    # No text.txt; a text.txt without a report.
    image, case = add_case(copy, "000105", "Axial", text=None)
    write_slice_folder(case / "Axial", volume_slices(5))
    expected.append((image, f"{PREFIX}ct_case/000105/text.txt", "missing_text"))
    image, case = add_case(copy, "000106", "Axial", text=" \n\n ")
    write_slice_folder(case / "Axial", volume_slices(5))
    expected.append((image, "M3D_Cap/ct_case/000106/text.txt", "empty_report"))
    # Malformed .npy files.
    whole = (copy / LUNG_NPY.npy_file).read_bytes()
    for case, content, reason in (
        ("000201", b"\x93NUMPY garbage", "unreadable_npy"),
        ("000202", whole[:5000], "unreadable_npy"),
        ("000203", np.zeros((2, 4, 8, 8), dtype=np.float32), "bad_npy_shape"),
        ("000204", np.zeros((1, 4, 8, 8), dtype=np.int16), "bad_npy_dtype"),
        ("000205", np.full((4, 8, 8), np.nan, dtype=np.float32), "non_finite_voxels"),
        ("000206", np.full((4, 8, 8), 2.0, dtype=np.float32), "npy_out_of_range"),
    ):
        image, file = add_npy_case(copy, case, content)
        expected.append((image, file, reason))
    # Paths that leave the raw folder: written so, or through a symbolic link.
    add_entry(copy, "../outside/ct_case/000001/Axial.npy", AXIAL.index_text())
    expected.append(("../outside/ct_case/000001/Axial.npy", "../outside/ct_case/000001/Axial.npy", "path_escapes_raw"))
    add_entry(copy, AXIAL.index_image(), "../../etc/ct_case/000001/text.txt")
    expected.append((AXIAL.index_image(), "../../etc/ct_case/000001/text.txt", "path_escapes_raw"))
    image, case = add_case(copy, "000107", "Linked")
    write_slice_folder(tmp_path / "elsewhere", volume_slices(5))
    (case / "Linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    expected.append((image, image, "path_escapes_raw"))

    result = build(copy, tmp_path / "out")
    rejects = read_rejects(tmp_path / "out")
    assert [(r["record"], r["file"], r["reason"]) for r in rejects] == expected
    assert result.manifest.rows == 10 and result.manifest.counts["split"] == {"test": 4, "validation": 2, "train": 4}
    for r in rejects:
        assert r["file"] in r["detail"]
        assert str(tmp_path) not in json.dumps(r) and "0x" not in r["detail"]  # no user folders, no addresses


def test_a_train_entry_repeating_a_test_one_is_the_copy_dropped(copy, tmp_path):
    add_entry(copy, AXIAL.index_image(), AXIAL.index_text(), split="test")
    result = build(copy, tmp_path / "out")
    assert result.manifest.duplicates_removed == 2
    assert result.manifest.counts["split"] == {"test": 6, "validation": 2, "train": 2}


def test_malformed_index_is_one_reject(copy, tmp_path):
    (copy / INDEX).write_text('{"train": [')
    result = build(copy, tmp_path / "out")
    assert result.manifest.rows == 0 and result.manifest.rejects == {"malformed_json": 1}
    index = cap_index()
    index["train"].append({"text": AXIAL.index_text()})
    index["holdout"] = []
    (copy / INDEX).write_text(json.dumps(index))
    result = build(copy, tmp_path / "out")
    assert result.manifest.rejects == {"malformed_record": 1, "unknown_split": 1} and result.manifest.rows == 10


def test_resolver_finds_npy_before_folders_and_stays_inside(copy):
    assert resolve_volume(copy, LUNG_NPY.index_image()) == VolumeInput("npy", copy / LUNG_NPY.npy_file)
    assert resolve_volume(copy, "whatever/prefix/" + ARTERIAL.tail).path == copy / ARTERIAL.slice_dir
    assert resolve_volume(copy, CORONAL.tail).path == copy / CORONAL.slice_dir
    for bad in ("/etc/ct_case/1/a.npy", "C:/x/ct_case/1/a.npy", "ct_case/../../x.npy"):
        with pytest.raises(VolumeError) as err:
            resolve_volume(copy, bad)
        assert err.value.reason == "path_escapes_raw"
    with pytest.raises(VolumeError, match="neither"):
        resolve_volume(copy, "ct_case/000001/nothing.npy")
    # Names made by M3D's unidecode variant ("–" -> "-") still find their folder; two candidates are an error.
    dashed = copy / "M3D_Cap" / "ct_case" / "000001" / "Axial_–_delayed"
    dashed.mkdir()
    assert resolve_volume(copy, "M3D_Cap_npy/ct_case/000001/Axial_-_delayed.npy").path == dashed
    (copy / "M3D_Cap" / "ct_case" / "000001" / "Axial_+_delayed").mkdir()
    with pytest.raises(VolumeError) as err:
        resolve_volume(copy, "M3D_Cap_npy/ct_case/000001/Axial_-_delayed.npy")
    assert err.value.reason == "ambiguous_volume"


# --- layout and options -------------------------------------------------------------------------


def test_absent_or_foreign_folders_stop_with_one_line(tmp_path):
    with pytest.raises(LayoutError, match="no such folder"):
        build(tmp_path / "nowhere", tmp_path / "out")
    (tmp_path / "other" / "ct_case").mkdir(parents=True)
    with pytest.raises(LayoutError) as err:
        build(tmp_path / "other", tmp_path / "out")
    message = str(err.value)
    assert "\n" not in message and "M3D_Cap.json" in message and "download m3d_cap --from PATH" in message


def test_options_are_checked():
    with pytest.raises(BuilderOptionError, match="tasks"):
        get_builder("m3d_cap", {"tasks": "report_generation,vqa"})
    with pytest.raises(BuilderOptionError, match="tasks"):
        get_builder("m3d_cap", {"tasks": " , "})
    with pytest.raises(BuilderOptionError, match="unknown volume preset"):
        get_builder("m3d_cap", {"preset": "m4d"})
    assert get_builder("m3d_cap", {"tasks": "image_text_retrieval,image_text_retrieval"}).tasks == ("image_text_retrieval",)
