"""The windows writer leaves no temporary behind: neither a killed run's nor its own when a window fails."""

from __future__ import annotations

import pytest

from omnivmed.builders import get_builder
from omnivmed.caption_inputs import write_caption_inputs
from support.surgical_trees import make_cholec80_tree


@pytest.fixture(scope="module")
def cholec80(tmp_path_factory):
    return make_cholec80_tree(tmp_path_factory.mktemp("c80") / "raw", with_videos=True)


def _builder():
    return get_builder("cholec80_vqa", {"frames": "videos", "short_side": "0", "variants": "Classification"})


def test_a_killed_runs_temporaries_are_removed(cholec80, tmp_path):
    stale = [tmp_path / ".windows.arrow.4242-0badf00d.tmp", tmp_path / ".windows.json.4242-0badf00d.tmp",
             tmp_path / ".rejects.jsonl.4242-0badf00d.tmp"]  # fmt: skip
    for path in stale:
        path.write_bytes(b"half a file")
    keep = tmp_path / ".notes.txt.1-2.tmp"  # not ours: left alone
    keep.write_bytes(b"x")
    result = write_caption_inputs(_builder(), cholec80, tmp_path, step=50, progress=False)
    assert result.windows > 0
    assert not any(p.exists() for p in stale) and keep.exists()
    assert sorted(p.name for p in tmp_path.glob(".*.tmp")) == [keep.name]


def test_a_failing_window_leaves_no_temporary(cholec80, tmp_path):
    def windows_then_failure():
        yield from _builder().windows(cholec80, tmp_path, 50)
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_caption_inputs(_builder(), cholec80, tmp_path, step=50, progress=False, windows=windows_then_failure())
    assert not list(tmp_path.glob(".*.tmp")) and not (tmp_path / "windows.arrow").exists()
