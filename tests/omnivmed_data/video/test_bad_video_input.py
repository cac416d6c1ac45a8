"""Bad input: every reject is a VideoError with the file, a reason and a message that is the
same on every run (no absolute paths, no object addresses)."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

from omnivmed.data.video import ClipMaker, ClipSpec, FolderFrames, VideoError, VideoFrames, open_frames
from omnivmed.data.video.clips import clip_positions
from support.video_files import decode_index, sequential_frames, truncated_copy, write_index_frames, write_index_video


def reject(call, *args, **kwargs) -> VideoError:
    with pytest.raises(VideoError) as caught:
        call(*args, **kwargs)
    return caught.value


def assert_clean(err: VideoError, tmp_path) -> None:
    assert str(err) == f"{err.file}: {err.detail}"
    assert str(tmp_path) not in err.detail and os.sep + "tmp" not in err.detail
    assert not re.search(r"0x[0-9a-f]{6,}", err.detail)


@pytest.mark.parametrize("content", [bytes(range(256)) * 40, b""], ids=["random_bytes", "empty"])
def test_unreadable_file(tmp_path, content):
    path = tmp_path / "clip.mp4"
    path.write_bytes(content)
    for call in (VideoFrames, open_frames):
        err = reject(call, path)
        assert err.reason == "unreadable_video" and err.file == str(path)
        assert_clean(err, tmp_path)
    # the same message for the same bytes wherever they lie (no path, no address in it)
    elsewhere = tmp_path / "other" / "renamed.mp4"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(content)
    assert reject(open_frames, elsewhere).detail == reject(open_frames, path).detail


def test_nothing_there(tmp_path):
    err = reject(open_frames, tmp_path / "nope.mp4")
    assert err.reason == "unreadable_video" and err.detail == "no such file or folder"


def test_truncated_mp4_reads_up_to_the_cut(tmp_path):
    whole = write_index_video(tmp_path / "whole.mp4", 150, codec="libx264")  # index at the front
    reference = sequential_frames(whole)
    cut = truncated_copy(whole, tmp_path / "cut.mp4", 0.5)
    with VideoFrames(cut) as source:
        assert len(source.indices()) == 150  # what the container states
        assert source.truncated  # its index places frames past the end of the file
        frames = source.read([10, 11, 12])
        assert all(np.array_equal(f, reference[i]) for f, i in zip(frames, [10, 11, 12]))
        err = reject(source.read, [140])
        assert err.reason == "truncated_video" and err.file == str(cut)
        # the decoder fails on the last, partial packet, or the frames just end
        assert re.search(r"of its 150 frames lie past its end$|but states 150 frames \(frame 140 wanted\)$", err.detail)
        assert_clean(err, tmp_path)
        maker = ClipMaker(ClipSpec(length=4))
        assert reject(maker.clip, source, 149).reason == "truncated_video"
        # the reader recovers for frames before the cut
        frames, indices, _ = maker.decode(source, 20)
        assert [decode_index(f) for f in frames] == indices == [17, 18, 19, 20]


def test_truncated_mp4_without_its_index_is_unreadable(tmp_path):
    whole = write_index_video(tmp_path / "whole.mp4", 60, codec="libx264", faststart=False)  # moov at the end
    err = reject(VideoFrames, truncated_copy(whole, tmp_path / "cut.mp4", 0.7))
    assert err.reason == "unreadable_video"
    assert_clean(err, tmp_path)


def test_truncated_matroska(tmp_path):
    """Matroska states no frame count: the frames are the packets there, the header's
    duration tells that the rest was cut off."""
    whole = write_index_video(tmp_path / "whole.mkv", 200, codec="libx264")
    cut = truncated_copy(whole, tmp_path / "cut.mkv", 0.6)
    with VideoFrames(cut) as source:
        n = len(source.indices())
        assert 50 < n < 200 and source.promised_frames == 200 and source.truncated
        assert decode_index(source.read([n // 2])[0]) == n // 2
        err = reject(source.read, [190])
        assert err.reason == "truncated_video" and err.file == str(cut)
        assert f"{n} of the 200 frames" in err.detail
        assert reject(source.read, [200]).reason == "missing_frame"


def test_missing_frame_index(tmp_path):
    video = write_index_video(tmp_path / "v.mp4", 30, codec="mpeg4")
    with VideoFrames(video) as source:
        for index in (30, -1, 1000):
            err = reject(source.read, [2, index])
            assert err.reason == "missing_frame" and err.file == str(video) and f"no frame {index}" in err.detail
        err = reject(ClipMaker(ClipSpec()).clip, source, 30)
        assert err.reason == "missing_frame"
    folder = write_index_frames(tmp_path / "f", [0, 1, 2, 4])
    with FolderFrames(folder) as source:
        err = reject(source.read, [3])
        assert err.reason == "missing_frame" and err.file == str(folder) and "frames 0-4, 4 in all" in err.detail
        assert reject(ClipMaker(ClipSpec(length=2)).clip, source, 3).reason == "missing_frame"
    err = reject(clip_positions, [0, 1, 2], 7, ClipSpec(), "seq_1/left_frames")
    assert err.reason == "missing_frame" and err.file == "seq_1/left_frames"


def test_empty_folder(tmp_path):
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "readme.txt").write_text("no frames")
    (tmp_path / "frames" / "cover.png").write_bytes(b"no integer in the name")
    for call in (FolderFrames, open_frames):
        err = reject(call, tmp_path / "frames")
        assert err.reason == "empty_folder" and err.file == str(tmp_path / "frames")
        assert_clean(err, tmp_path)


def test_unreadable_frame_in_a_folder(tmp_path):
    folder = write_index_frames(tmp_path / "f", range(10))
    (folder / "4.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))  # a PNG signature and junk
    truncated_copy(folder / "6.png", folder / "6.png", 0.5)
    with FolderFrames(folder) as source:
        assert [decode_index(f) for f in source.read([0, 1, 2, 3])] == [0, 1, 2, 3]  # the rest is fine
        for bad in (4, 6):
            err = reject(source.read, [3, bad])
            assert err.reason == "unreadable_frame" and err.file == str(folder / f"{bad}.png")
            assert_clean(err, tmp_path)
        assert reject(ClipMaker(ClipSpec(length=3)).clip, source, 5).reason == "unreadable_frame"


def test_two_files_with_one_index(tmp_path):
    folder = write_index_frames(tmp_path / "f", range(3))
    write_index_frames(folder, [1], "frame{:03d}.png")
    err = reject(FolderFrames, folder)
    assert err.reason == "duplicate_frame" and err.detail == "frames 1.png and frame001.png both have index 1"


def test_frames_of_different_sizes_in_one_clip(tmp_path):
    folder = write_index_frames(tmp_path / "f", range(4))
    write_index_frames(folder, [2], size=(112, 128))
    maker = ClipMaker(ClipSpec(length=2))
    assert maker.clip(FolderFrames(folder), 1).size == (96, 128)
    err = reject(maker.clip, FolderFrames(folder), 3)
    assert err.reason == "mixed_frame_sizes" and "96x128, 112x128" in err.detail


def test_clip_past_the_start_is_dropped_on_request(tmp_path):
    video = write_index_video(tmp_path / "v.mp4", 30, codec="libx264")
    with VideoFrames(video) as source:
        drop = ClipMaker(ClipSpec(length=8, stride=2, at_start="drop"))
        err = reject(drop.clip, source, 13)
        assert err.reason == "before_start" and err.file == str(video) and "1 frame(s) before the start" in err.detail
        assert drop.clip(source, 14).padded == 0
        centred = ClipMaker(ClipSpec(length=5, anchor="center", at_start="drop"))
        assert "past the end" in reject(centred.clip, source, 28).detail
        assert drop.made == 1 and centred.made == 0
