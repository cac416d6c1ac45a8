"""The clip spec: positions, anchors, stride, padding, resizing, JPEG, ids and the clip cache."""

from __future__ import annotations

import dataclasses
import io
import json

import cv2
import numpy as np
import pytest
from PIL import Image

from omnivmed.data.video import (
    Clip,
    ClipCache,
    ClipMaker,
    ClipSpec,
    FolderFrames,
    VideoError,
    VideoFrames,
    clip_id,
    clip_positions,
    encode_jpeg,
    jpeg_size,
    resize_short_side,
    resized_shape,
)
from support.video_files import decode_index, write_index_frames, write_index_video

# --------------------------------------------------------------------------- spec


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"length": 0}, "length must be an integer >= 1"),
        ({"length": 2.0}, "length must be an integer >= 1"),
        ({"stride": 0}, "stride must be an integer >= 1"),
        ({"stride": True}, "stride must be an integer >= 1"),
        ({"anchor": "start"}, "anchor must be one of end, center"),
        ({"short_side": -1}, "short_side must be an integer >= 0"),
        ({"jpeg_quality": 0}, "jpeg_quality must be an integer in 1-100"),
        ({"jpeg_quality": 101}, "jpeg_quality must be an integer in 1-100"),
        ({"at_start": "skip"}, "at_start must be one of pad, drop"),
    ],
)
def test_spec_is_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ClipSpec(**kwargs)


VARIANTS = [
    {"length": 9},
    {"stride": 2},
    {"anchor": "center"},
    {"short_side": 0},
    {"short_side": 256},
    {"jpeg_quality": 91},
    {"at_start": "drop"},
]


def test_key_names_every_parameter_and_ids_follow_it():
    base = ClipSpec()
    assert base.key() == (
        "clip-v2;length=8;stride=1;anchor=end;short_side=224;jpeg_quality=90;at_start=pad;"
        "jpeg=opencv-baseline-420;resize=area-by-divisor-then-linear-down-linear-up"
    )
    digest = "ab" * 32
    # a fixed input gives this id on every run, on every machine (no clock, pid or chance)
    assert clip_id(digest, [0, 0, 1, 2], base) == "604b749f02470d6125ebe3e756806695"
    ids = {clip_id(digest, [0, 0, 1, 2], dataclasses.replace(base, **v)) for v in VARIANTS}
    assert len(ids) == len(VARIANTS) and clip_id(digest, [0, 0, 1, 2], base) not in ids
    assert clip_id(digest, [0, 1, 1, 2], base) != clip_id(digest, [0, 0, 1, 2], base)
    assert clip_id("cd" * 32, [0, 0, 1, 2], base) != clip_id(digest, [0, 0, 1, 2], base)


# --------------------------------------------------------------------------- positions


@pytest.mark.parametrize(
    "anchor_index, spec, expected, padded",
    [
        (10, ClipSpec(length=4, stride=1), [7, 8, 9, 10], 0),
        (10, ClipSpec(length=4, stride=3), [1, 4, 7, 10], 0),
        (2, ClipSpec(length=4, stride=1), [0, 0, 1, 2], 1),  # pad: the first frame repeated
        (2, ClipSpec(length=4, stride=2), [0, 0, 0, 2], 2),
        (0, ClipSpec(length=3), [0, 0, 0], 2),
        (10, ClipSpec(length=5, anchor="center"), [8, 9, 10, 11, 12], 0),
        (10, ClipSpec(length=4, anchor="center", stride=2), [6, 8, 10, 12], 0),  # k//2 before the anchor
        (18, ClipSpec(length=5, anchor="center", stride=1), [16, 17, 18, 19, 19], 1),  # the last frame repeated
        (1, ClipSpec(length=5, anchor="center", stride=1), [0, 0, 1, 2, 3], 1),
        (10, ClipSpec(length=1), [10], 0),
    ],
)
def test_clip_positions(anchor_index, spec, expected, padded):
    assert clip_positions(range(20), anchor_index, spec) == (expected, padded)
    assert clip_positions(list(range(20)), anchor_index, spec) == (expected, padded)
    if padded:
        with pytest.raises(VideoError) as caught:
            clip_positions(range(20), anchor_index, dataclasses.replace(spec, at_start="drop"), "v.mp4")
        assert caught.value.reason == "before_start" and caught.value.file == "v.mp4"
    else:
        assert clip_positions(range(20), anchor_index, dataclasses.replace(spec, at_start="drop")) == (expected, 0)


def test_positions_are_positions_in_the_available_frames():
    """The stride counts the source's frames in order, whatever their numbers."""
    available = [3, 10, 11, 40, 41, 42, 100]
    assert clip_positions(available, 41, ClipSpec(length=3, stride=2)) == ([3, 11, 41], 0)
    assert clip_positions(available, 42, ClipSpec(length=3, stride=2)) == ([10, 40, 42], 0)
    assert clip_positions(available, 10, ClipSpec(length=3, stride=1)) == ([3, 3, 10], 1)
    assert clip_positions(available, 100, ClipSpec(length=3, anchor="center")) == ([42, 100, 100], 1)


# --------------------------------------------------------------------------- made clips


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_index_video(tmp_path_factory.mktemp("clips") / "v.mp4", 80, codec="libx264", size=(96, 128), gop=12)


def test_clip_fields(video):
    spec = ClipSpec(length=4, stride=2, short_side=48, jpeg_quality=85)
    with VideoFrames(video) as source:
        maker = ClipMaker(spec)
        clip = maker.clip(source, 40)
        frames, indices, padded = maker.decode(source, 40)
    assert clip.frame_indices == (34, 36, 38, 40) == tuple(indices) and clip.padded == padded == 0
    assert clip.fps == 12.5  # 25 fps source, every second frame
    assert clip.timestamps_s == (34 / 25, 36 / 25, 38 / 25, 40 / 25)
    assert clip.size == (96, 128) and clip.frame_size == (48, 64)
    assert len(clip.id) == 32 and all(c in "0123456789abcdef" for c in clip.id)
    # the stored frames are exactly: decoded source frame -> resize -> JPEG
    assert clip.frames == tuple(encode_jpeg(resize_short_side(f, 48), 85) for f in frames)
    assert maker.made == 1 and maker.reused == 0 and maker.padded_clips == 0


def test_padded_clip_repeats_the_first_frame(video):
    with VideoFrames(video) as source:
        maker = ClipMaker(ClipSpec(length=6, stride=1, short_side=0))
        clip = maker.clip(source, 2)
    assert clip.frame_indices == (0, 0, 0, 0, 1, 2) and clip.padded == 3 and maker.padded_clips == 1
    assert clip.frames[0] == clip.frames[3] and clip.timestamps_s[:4] == (0.0,) * 4
    decoded = [np.asarray(Image.open(io.BytesIO(f)).convert("RGB")) for f in clip.frames]
    assert [decode_index(f) for f in decoded] == [0, 0, 0, 0, 1, 2]


@pytest.mark.parametrize(
    "shape, short_side, expected, interpolation",
    [
        ((96, 128), 48, (48, 64), cv2.INTER_AREA),
        ((96, 128), 120, (120, 160), cv2.INTER_LINEAR),
        ((128, 96), 48, (64, 48), cv2.INTER_AREA),  # portrait: the width is the short side
        ((272, 640), 224, (224, 527), cv2.INTER_LINEAR),  # 640 * 224 / 272 = 527.06; under 2x, no integer step
        ((96, 128), 96, (96, 128), None),
        ((96, 128), 0, (96, 128), None),
    ],
)
def test_resize_to_the_short_side(shape, short_side, expected, interpolation):
    frame = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    assert resized_shape(*shape, short_side) == expected
    out = resize_short_side(frame, short_side)
    assert out.shape == (*expected, 3)
    if interpolation is None:
        assert out is frame
    else:
        assert np.array_equal(out, cv2.resize(frame, expected[::-1], interpolation=interpolation))


@pytest.mark.parametrize(
    "shape, first_step",
    [
        ((480, 854), 2),  # Cholec80's size: 2x area, then 427x240 -> 399x224 bilinear
        ((720, 1280), 2),  # 3 does not divide 1280: 2x area, then 1.6x bilinear
        ((1080, 1920), 4),  # 4x area, then 1.2x bilinear
    ],
)
def test_shrinking_takes_an_integer_area_step_then_a_bilinear_one(shape, first_step):
    frame = np.random.default_rng(1).integers(0, 256, (*shape, 3), dtype=np.uint8)
    height, width = shape
    expected = resized_shape(height, width, 224)
    step = cv2.resize(frame, (width // first_step, height // first_step), interpolation=cv2.INTER_AREA)
    reference = cv2.resize(step, expected[::-1], interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(resize_short_side(frame, 224), reference)


def test_shrinking_without_an_integer_step_and_2x_left_is_one_area_step():
    frame = np.random.default_rng(2).integers(0, 256, (97, 131, 3), dtype=np.uint8)  # 97 is prime
    expected = resized_shape(97, 131, 24)
    assert np.array_equal(resize_short_side(frame, 24), cv2.resize(frame, expected[::-1], interpolation=cv2.INTER_AREA))


def test_the_two_step_shrink_stays_close_to_one_area_step():
    rng = np.random.default_rng(3)
    texture = cv2.GaussianBlur(rng.integers(0, 256, (480, 854, 3), dtype=np.uint8), (0, 0), 2)
    one_step = cv2.resize(texture, resized_shape(480, 854, 224)[::-1], interpolation=cv2.INTER_AREA)
    error = np.mean((resize_short_side(texture, 224).astype(np.float64) - one_step) ** 2)
    assert 10 * np.log10(255**2 / error) > 40  # dB


def test_aspect_ratio_is_kept_in_the_clip(tmp_path):
    folder = write_index_frames(tmp_path / "f", range(3), size=(128, 96))
    clip = ClipMaker(ClipSpec(length=2, short_side=32)).clip(FolderFrames(folder), 2)
    assert clip.size == (128, 96) and clip.frame_size == (43, 32)  # 128 * 32 / 96 = 42.67
    big = ClipMaker(ClipSpec(length=2, short_side=192)).clip(FolderFrames(folder), 2)
    assert big.frame_size == (256, 192)
    # frames made bigger still show their index (blocks of 32 px, read back at the original size)
    image = Image.open(io.BytesIO(big.frames[-1])).convert("RGB").resize((96, 128), Image.BILINEAR)
    assert decode_index(np.asarray(image)) == 2


@pytest.mark.parametrize("quality", [50, 90])
def test_jpeg_quality_is_used(video, quality):
    with VideoFrames(video) as source:
        clip = ClipMaker(ClipSpec(length=1, jpeg_quality=quality, short_side=0)).clip(source, 5)
    stored = Image.open(io.BytesIO(clip.frames[0]))
    assert stored.format == "JPEG" and stored.size == (128, 96)
    reference = io.BytesIO()
    Image.fromarray(np.zeros((96, 128, 3), np.uint8)).save(reference, format="JPEG", quality=quality)
    assert stored.quantization == Image.open(reference).quantization  # libjpeg's tables for that quality
    assert stored.layer[0][1:3] == (2, 2)  # luma sampled 2x2: 4:2:0


def test_jpeg_size_reads_the_header():
    data = encode_jpeg(np.zeros((37, 53, 3), np.uint8), 90)
    assert jpeg_size(data) == (37, 53)


def test_clips_are_the_same_bytes_on_every_run_and_thread_count(video):
    spec = ClipSpec(length=5, stride=2)
    before = cv2.getNumThreads()
    clips = []
    try:
        for threads in (1, 4):
            cv2.setNumThreads(threads)
            with VideoFrames(video) as source:
                clips.append([ClipMaker(spec).clip(source, a) for a in (4, 60, 30)])
    finally:
        cv2.setNumThreads(before)
    assert clips[0] == clips[1]
    assert len({c.id for c in clips[0]}) == 3


def test_overlapping_clips_reuse_shared_frames_and_give_the_same_bytes(video):
    spec = ClipSpec(length=8, stride=5, short_side=48)  # 36 frames per clip, one every 25: 3 shared
    with VideoFrames(video) as source:
        maker = ClipMaker(spec)
        clips = [maker.clip(source, a) for a in (35, 60)]
        decoded = source.decoded_frames
        again = maker.clip(source, 60)  # every frame known: nothing decoded
        assert source.decoded_frames == decoded
    assert set(clips[0].frame_indices) & set(clips[1].frame_indices) == {25, 30, 35}
    for clip in (*clips, again):
        with VideoFrames(video) as source:
            fresh = ClipMaker(spec).clip(source, clip.frame_indices[-1])
        assert clip == fresh
        frames = source_frames(video, clip.frame_indices)
        assert clip.frames == tuple(encode_jpeg(resize_short_side(f, 48), 90) for f in frames)


def source_frames(video, indices):
    with VideoFrames(video) as source:
        return source.read(indices)


FORK_SCRIPT = """
import multiprocessing, sys
from omnivmed.data.video import ClipMaker, ClipSpec, VideoFrames

def clip_in(path, anchor):
    with VideoFrames(path) as source:
        return ClipMaker(ClipSpec(length=3)).clip(source, anchor)

if __name__ == "__main__":
    parent = clip_in(sys.argv[1], 30)  # the parent's pool exists now
    with multiprocessing.get_context("fork").Pool(1) as pool:
        child = pool.apply_async(clip_in, (sys.argv[1], 30)).get(timeout=30)
    assert child == parent
    print("same clip")
"""


def test_the_frame_pool_works_in_a_forked_child(video, tmp_path):
    import multiprocessing
    import subprocess
    import sys

    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    # In a fresh interpreter: a test runner's own threads (pytest-xdist's) must not be the ones a fork inherits.
    script = tmp_path / "fork_clip.py"
    script.write_text(FORK_SCRIPT)
    done = subprocess.run([sys.executable, str(script), str(video)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "same clip", done.stderr[-2000:]  # a hang: the child waits on the parent's threads


def test_ids_follow_the_source_bytes_not_its_name(tmp_path, video):
    copy = tmp_path / "renamed.mp4"
    copy.write_bytes(video.read_bytes())
    other = write_index_video(tmp_path / "other.mp4", 80, codec="libx264", first_index=1)
    spec = ClipSpec(length=3)
    ids = []
    for path in (video, copy, other):
        with VideoFrames(path) as source:
            ids.append(ClipMaker(spec).clip(source, 20).id)
    assert ids[0] == ids[1] != ids[2]
    with VideoFrames(video) as source:
        assert {ClipMaker(dataclasses.replace(spec, **v)).clip(source, 20).id for v in VARIANTS[1:]}.isdisjoint({ids[0]})


def test_folder_clips_without_fps(tmp_path):
    folder = write_index_frames(tmp_path / "f", range(5))
    clip = ClipMaker(ClipSpec(length=3)).clip(FolderFrames(folder), 4)
    assert clip.fps is None and clip.timestamps_s is None
    clip = ClipMaker(ClipSpec(length=3, stride=2)).clip(FolderFrames(folder, fps=1.0), 4)
    assert clip.fps == 0.5 and clip.timestamps_s == (0.0, 2.0, 4.0)


# --------------------------------------------------------------------------- cache


def test_cache_round_trip(tmp_path, video):
    cache = ClipCache(tmp_path / "cache")
    with VideoFrames(video) as source:
        clip = ClipMaker(ClipSpec(length=4, stride=3)).clip(source, 7)
    assert cache.get(clip.id) is None
    cache.put(clip)
    folder = tmp_path / "cache" / clip.id[:2] / clip.id
    assert sorted(p.name for p in folder.iterdir()) == ["0000.jpg", "0001.jpg", "0002.jpg", "0003.jpg", "clip.json"]
    assert (folder / "0002.jpg").read_bytes() == clip.frames[2]
    assert json.loads((folder / "clip.json").read_text())["frame_indices"] == [0, 1, 4, 7]
    assert cache.get(clip.id) == clip
    assert ClipCache(tmp_path / "cache").get(clip.id) == clip
    cache.put(clip)  # again: nothing changes
    assert cache.get(clip.id) == clip
    no_fps = Clip(id="0" * 32, frames=(clip.frames[0],), frame_indices=(3,), timestamps_s=None, fps=None, padded=0, size=(9, 8))
    cache.put(no_fps)
    assert cache.get(no_fps.id) == no_fps


def test_a_damaged_clip_is_made_again(tmp_path, video):
    cache = ClipCache(tmp_path / "cache")
    spec = ClipSpec(length=3)
    with VideoFrames(video) as source:
        clip = ClipMaker(spec, cache).clip(source, 30)
        (tmp_path / "cache" / clip.id[:2] / clip.id / "0001.jpg").write_bytes(b"\xff\xd8 half a frame")
        assert cache.get(clip.id) is None
        maker = ClipMaker(spec, cache)
        assert maker.clip(source, 30) == clip and maker.made == 1
    assert cache.get(clip.id) == clip


def test_stale_temporaries_are_removed(tmp_path, video):
    root = tmp_path / "cache"
    with VideoFrames(video) as source:
        clip = ClipMaker(ClipSpec(length=2)).clip(source, 9)
    stale = root / clip.id[:2] / f".{clip.id}.tmp"  # a build killed while writing this clip
    stale.mkdir(parents=True)
    (stale / "0000.jpg").write_bytes(clip.frames[0][:100])
    cache = ClipCache(root)
    assert not stale.exists() and cache.removed_temporaries == 1
    assert cache.get(clip.id) is None
    stale.mkdir()  # left while the cache is open: put writes under a name of its own
    cache.put(clip)
    assert cache.get(clip.id) == clip and not list(stale.parent.glob(f".{clip.id}.*-*.tmp"))
    assert ClipCache(root).removed_temporaries == 1 and not stale.exists()  # the next build removes it


def test_processes_of_one_build_write_beside_each_other(tmp_path, video):
    """Workers open the cache with clean=False (no removing another's clip in the making); the
    first to store a clip wins and a second put of it finds it there."""
    from omnivmed.data.video import ClipCacheReader

    root = tmp_path / "cache"
    with VideoFrames(video) as source:
        clip = ClipMaker(ClipSpec(length=2)).clip(source, 9)
    build = ClipCache(root)
    in_making = root / clip.id[:2] / f".{clip.id}.4242-00000000.tmp"  # another worker's put, under way
    in_making.mkdir(parents=True)
    worker = ClipCache(root, clean=False)
    assert in_making.exists() and worker.removed_temporaries == 0
    worker.put(clip)
    second = ClipCache(root, clean=False)
    second.put(clip)
    assert build.get(clip.id) == clip and sorted(p.name for p in (root / clip.id[:2]).iterdir()) == [in_making.name, clip.id]
    # A reader finds finished clips and writes nothing, also where the folder is absent.
    reader = ClipCacheReader(root)
    assert reader.get(clip.id) == clip and reader.removed_temporaries == 0 and in_making.exists()
    nowhere = ClipCacheReader(tmp_path / "absent")
    nowhere.put(clip)
    assert nowhere.get(clip.id) is None and not (tmp_path / "absent").exists()


def test_a_rerun_reuses_finished_clips_and_makes_the_rest(tmp_path, video):
    spec = ClipSpec(length=4, stride=2, short_side=32)
    anchors = [1, 20, 60, 61, 79]
    root = tmp_path / "cache"
    with VideoFrames(video) as source:
        first = ClipMaker(spec, ClipCache(root))
        done = [first.clip(source, a) for a in anchors[2:]]  # then the build is killed
        assert (first.made, first.reused, first.padded_clips) == (3, 0, 0)
    with VideoFrames(video) as source:
        second = ClipMaker(spec, ClipCache(root))
        clips = [second.clip(source, a) for a in anchors]
        assert (second.made, second.reused, second.padded_clips) == (2, 3, 1)
        assert source.decoded_frames <= 21 + 4  # frames up to 20 (and the B-frame delay): the rest came from the cache
    assert clips[2:] == done
    with VideoFrames(video) as source:
        fresh = [ClipMaker(spec).clip(source, a) for a in anchors]
    assert clips == fresh
