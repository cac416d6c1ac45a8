"""The second mode: whole videos cut into fixed-length windows for captioning."""

from __future__ import annotations

import pytest

from omnivmed.data.video import ClipMaker, ClipSpec, FolderFrames, VideoFrames, clip_positions, iter_windows, window_starts
from support.video_files import decode_index, write_index_frames, write_index_video


@pytest.mark.parametrize(
    "n, spec, step, expected",
    [
        (20, ClipSpec(length=4, stride=1), 4, [3, 7, 11, 15, 19]),  # back to back
        (20, ClipSpec(length=4, stride=1), 2, [3, 5, 7, 9, 11, 13, 15, 17, 19]),  # overlapping
        (20, ClipSpec(length=4, stride=2), 6, [6, 12, 18]),
        (20, ClipSpec(length=4, stride=2), 10, [6, 16]),  # gaps between windows
        (20, ClipSpec(length=5, stride=1, anchor="center"), 5, [2, 7, 12, 17]),
        (20, ClipSpec(length=4, stride=3, anchor="center"), 7, [6, 13]),
        (7, ClipSpec(length=8), 1, []),  # shorter than one window
        (8, ClipSpec(length=8), 100, [7]),
    ],
)
def test_window_anchors(n, spec, step, expected):
    assert window_starts(range(n), spec, step) == expected
    assert window_starts(list(range(100, 100 + n)), spec, step) == [100 + a for a in expected]
    for anchor in expected:  # whole windows only: never padded
        assert clip_positions(range(n), anchor, spec)[1] == 0


@pytest.mark.parametrize("step", [0, -2, 1.5, True])
def test_step_is_validated(step):
    with pytest.raises(ValueError, match="step must be an integer >= 1"):
        window_starts(range(10), ClipSpec(), step)


def test_windows_of_a_video(tmp_path):
    path = write_index_video(tmp_path / "v.mkv", 100, codec="libx264", gop=25)
    spec = ClipSpec(length=8, stride=3, short_side=0)
    with VideoFrames(path) as source:
        maker = ClipMaker(spec)
        windows = list(iter_windows(source, maker))  # step: one window after the other
        assert [w.frame_indices[0] for w in windows] == [0, 24, 48, 72]
        assert all(w.padded == 0 and w.fps == 25 / 3 for w in windows)
        assert maker.made == 4 and maker.padded_clips == 0
        assert source.seeks == 0 and source.decoded_frames <= 100
        frames, indices, _ = maker.decode(source, windows[2].frame_indices[-1])
        assert [decode_index(f) for f in frames] == indices == list(windows[2].frame_indices)


def test_windows_of_a_frame_folder(tmp_path):
    folder = write_index_frames(tmp_path / "f", range(0, 30, 3))  # frames 0, 3, ..., 27
    windows = list(iter_windows(FolderFrames(folder), ClipMaker(ClipSpec(length=3, short_side=0)), step=2))
    assert [w.frame_indices for w in windows] == [(0, 3, 6), (6, 9, 12), (12, 15, 18), (18, 21, 24)]
