"""omnivmed-data show: one sample by id, id prefix or question id; in the terminal and as a preview page."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from support.samples import jpeg
from support.staged_sources import write_staged
from typer.testing import CliRunner

from omnivmed.cli.data import app
from omnivmed.data.combine import combine_manifests
from omnivmed.data.lookup import SampleNotFound, find_sample
from omnivmed.data.manifest import Manifest
from omnivmed.data.schema import Provenance, Turn, make_sample
from omnivmed.data.shards import ShardWriter

runner = CliRunner()


def slake_like(root: Path, source: str, qid: str) -> Path:
    """A source whose question id sits in a provenance field (as SLAKE's builder keeps it)."""
    sample = make_sample(
        source=source, split="test", task="vqa", modality="mri", visual_kind="image",
        frames=[jpeg(len(source), 24)], frame_format="jpeg", answer_type="closed",
        conversations=[Turn("user", f"<image>\nIs this {source} an MRI?"), Turn("assistant", "Yes")],
        provenance=Provenance(("img/1.jpg",), f"test.json:{qid}", "CC-BY-4.0", "https://example.org", (("qid", qid),)),
    )  # fmt: skip
    out = root / source
    with ShardWriter(out) as writer:
        writer.write(sample)
        shards = writer.close()
    Manifest(name=source, shards=shards, counts={"source": {source: 1}}).save(out / "manifest.json")
    return out / "manifest.json"


@pytest.fixture
def volumes(tmp_path) -> Path:
    return write_staged(tmp_path, "ct_src", {("train", "vqa", "ct"): 10, ("test", "vqa", "ct"): 3}, kind="volume")


def ids_of(manifest: Path) -> list[str]:
    from omnivmed.data.manifest import shard_path
    from omnivmed.data.shards import iter_samples

    loaded = Manifest.load(manifest)
    return [s.id for info in loaded.shards for s in iter_samples(shard_path(manifest, info))]


def one_line(result) -> str:
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


def test_show_by_id_prints_labels_conversation_frames_and_provenance(volumes):
    wanted = ids_of(volumes)[4]
    result = runner.invoke(app, ["show", str(volumes), wanted], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"sample {wanted}" in out and "source ct_src · split" in out and "visual kind volume" in out
    assert "frames: 6 JPEG (16x16)" in out and "  5: 16x16" in out
    assert "Question" in out and "answer" in out and "user" in out and "assistant" in out
    assert re.search(r"record id\s+ct_src-\d+", out) and "meta spacing_mm" in out and "stored in" in out


def test_a_folder_and_an_id_prefix_are_accepted(volumes):
    wanted = ids_of(volumes)[0]
    prefix = next(wanted[:n] for n in range(4, 33) if sum(i.startswith(wanted[:n]) for i in ids_of(volumes)) == 1)
    result = runner.invoke(app, ["show", str(volumes.parent), prefix], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert f"sample {wanted}" in result.output


def test_question_id_by_record_id_and_by_qid_field(volumes, tmp_path):
    by_record = runner.invoke(app, ["show", str(volumes), "ct_src-2", "--question-id"], env={"COLUMNS": "200"})
    assert by_record.exit_code == 0, by_record.output
    assert re.search(r"record id\s+ct_src-2\b", by_record.output)
    a, b = slake_like(tmp_path, "slake_a", "77"), slake_like(tmp_path, "slake_b", "77")
    both = tmp_path / "both" / "manifest.json"
    combine_manifests("both", [a, b], both)
    assert find_sample(a, "77", question_id=True).row["source"] == "slake_a"
    ambiguous = runner.invoke(app, ["show", str(both), "77", "--question-id"])
    assert ambiguous.exit_code == 2
    line = one_line(ambiguous)
    assert "2 samples match question id '77'" in line and "(slake_a)" in line and "--source" in line
    narrowed = runner.invoke(app, ["show", str(both), "77", "--question-id", "--source", "slake_b"], env={"COLUMNS": "200"})
    assert narrowed.exit_code == 0, narrowed.output
    assert "source slake_b" in narrowed.output and "field qid" in narrowed.output


def test_unknown_ids_are_one_line_naming_the_manifest_and_the_nearest_ids(volumes):
    known = ids_of(volumes)[0]
    typo = known[:10] + ("0" if known[10] != "0" else "1") * 22
    result = runner.invoke(app, ["show", str(volumes), typo])
    assert result.exit_code == 2
    line = one_line(result)
    assert str(volumes) in line and f"no sample with id {typo!r}" in line and "13 samples searched" in line
    assert "nearest: " in line and known in line
    missing_qid = runner.invoke(app, ["show", str(volumes), "nope-1", "--question-id"])
    assert missing_qid.exit_code == 2 and "no sample with question id 'nope-1'" in one_line(missing_qid)
    other_source = runner.invoke(app, ["show", str(volumes), known, "--source", "slake"])
    assert other_source.exit_code == 2 and "(source slake)" in one_line(other_source)
    with pytest.raises(SampleNotFound, match="no sample with id"):
        find_sample(volumes, "zz")


def test_bad_manifest_and_html_values_are_one_line(volumes, tmp_path):
    not_manifest = tmp_path / "x.json"
    not_manifest.write_text("[1, 2]")
    result = runner.invoke(app, ["show", str(not_manifest), "abc"])
    assert result.exit_code == 2 and "not a manifest" in one_line(result)
    absent = runner.invoke(app, ["show", str(tmp_path / "absent"), "abc"])
    assert absent.exit_code == 2 and "no such manifest" in one_line(absent)
    folder = runner.invoke(app, ["show", str(volumes), ids_of(volumes)[0], "--html", str(tmp_path)])
    assert folder.exit_code == 2 and "is a folder" in one_line(folder)
    shard = next((volumes.parent / "train").glob("*.arrow"))
    shard.write_bytes(b"not arrow")
    broken = runner.invoke(app, ["show", str(volumes), "abc"])
    assert broken.exit_code == 2 and "not an Arrow IPC stream" in one_line(broken)


def test_html_writes_a_preview_page_of_that_sample(volumes, tmp_path):
    wanted = ids_of(volumes)[7]
    page = tmp_path / "pages" / "one.html"
    result = runner.invoke(app, ["show", str(volumes), wanted, "--html", str(page)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    text = page.read_text(encoding="utf-8")
    data = json.loads(re.search(r'<script type="application/json" id="omnivmed-data">(.*?)</script>', text, re.S).group(1))
    assert [s["id"] for s in data["samples"]] == [wanted] and data["rows"] == 13
    sample = data["samples"][0]
    assert sample["visual_kind"] == "volume" and len(sample["frames"]) == 6 and sample["frames"][0].startswith("data:image/jpeg;base64,")
    assert f"ct_src: {wanted}" in text  # the title
