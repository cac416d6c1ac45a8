"""OMNIVMED_VOLUME_THREADS: how many threads one process gives a volume's slices (never the bytes)."""

from __future__ import annotations

import os

import numpy as np

from omnivmed.data.volume.encode import encode_slices
from omnivmed.data.volume.threads import volume_threads


def test_the_variable_sets_the_count_and_a_bad_value_falls_back(monkeypatch):
    monkeypatch.setenv("OMNIVMED_VOLUME_THREADS", "3")
    assert volume_threads() == 3
    for bad in ("0", "-2", "many", ""):
        monkeypatch.setenv("OMNIVMED_VOLUME_THREADS", bad)
        assert volume_threads() == min(4, os.cpu_count() or 1)


def test_encoded_bytes_do_not_depend_on_the_variable(monkeypatch):
    slices = np.random.default_rng(3).integers(0, 255, size=(6, 40, 32), dtype=np.uint8)
    monkeypatch.setenv("OMNIVMED_VOLUME_THREADS", "1")
    one = encode_slices(slices)
    monkeypatch.setenv("OMNIVMED_VOLUME_THREADS", "3")
    assert encode_slices(slices) == one
