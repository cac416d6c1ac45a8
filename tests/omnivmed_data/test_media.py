"""The image caches: one per build, and one per process for work units that never serves a changed file."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from omnivmed.data import media
from omnivmed.data.media import ImageCache, MediaError, unit_image_cache


def _jpeg(value: int) -> bytes:
    return cv2.imencode(".jpg", np.full((16, 24, 3), value, np.uint8))[1].tobytes()


@pytest.fixture
def reads(monkeypatch):
    """The files fully decoded, in order (every cache miss decodes)."""
    seen: list[str] = []
    real = media.encode_image_bytes

    def counting(data: bytes, name: str):
        seen.append(name)
        return real(data, name)

    monkeypatch.setattr(media, "encode_image_bytes", counting)
    return seen


def test_a_unit_cache_is_kept_across_units_and_decodes_each_image_once(tmp_path, reads):
    (tmp_path / "a.jpg").write_bytes(_jpeg(10))
    (tmp_path / "b.jpg").write_bytes(_jpeg(200))
    for _ in range(3):  # three work units of the same source in one worker
        cache = unit_image_cache(tmp_path)
        assert cache.get("a.jpg").data == _jpeg(10)
        assert cache.get("b.jpg").height == 16
    assert reads == ["a.jpg", "b.jpg"]
    assert unit_image_cache(tmp_path) is unit_image_cache(tmp_path / "sub" / "..")
    with pytest.raises(MediaError, match="no such image"):
        unit_image_cache(tmp_path).get("missing.jpg")


def test_a_unit_cache_reads_a_file_again_once_it_changed(tmp_path, reads):
    image = tmp_path / "a.jpg"
    image.write_bytes(_jpeg(10))
    assert unit_image_cache(tmp_path).get("a.jpg").data == _jpeg(10)
    other = _jpeg(90)
    assert len(other) == len(_jpeg(10))  # the same size: only the times and the bytes differ
    image.write_bytes(other)
    stamp = image.stat().st_mtime_ns + 1_000_000
    os.utime(image, ns=(stamp, stamp))  # coarse clocks: make sure the change is visible
    assert unit_image_cache(tmp_path).get("a.jpg").data == other
    image.write_bytes(b"\xff\xd8\xff" + b"\0" * 40)  # now broken: refused by name, not served from the cache
    with pytest.raises(MediaError, match="a.jpg: cannot decode image"):
        unit_image_cache(tmp_path).get("a.jpg")
    image.unlink()
    with pytest.raises(MediaError, match="no such image"):
        unit_image_cache(tmp_path).get("a.jpg")
    assert reads == ["a.jpg", "a.jpg", "a.jpg"]


def test_a_build_cache_is_bounded_and_least_recently_used_goes_first(tmp_path, reads):
    for name, value in (("a.jpg", 1), ("b.jpg", 2), ("c.jpg", 3)):
        (tmp_path / name).write_bytes(_jpeg(value))
    cache = ImageCache(tmp_path, max_items=2)
    for name in ("a.jpg", "b.jpg", "a.jpg", "c.jpg", "a.jpg", "b.jpg"):
        cache.get(name)
    assert reads == ["a.jpg", "b.jpg", "c.jpg", "b.jpg"]  # b was the least recent when c came in


def test_a_process_keeps_the_unit_caches_of_two_folders_at_most(tmp_path, reads):
    folders = [tmp_path / name for name in ("vqa_rad", "slake", "pathvqa")]
    for folder in folders:
        folder.mkdir()
        (folder / "a.jpg").write_bytes(_jpeg(50))
        unit_image_cache(folder).get("a.jpg")
    unit_image_cache(folders[2]).get("a.jpg")  # the newest folder is still held
    unit_image_cache(folders[0]).get("a.jpg")  # the oldest was let go: read again
    assert reads == ["a.jpg"] * 4
