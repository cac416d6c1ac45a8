"""Shared fixtures: the vendored real data and small generated raw trees."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# No test may reach a model or data set hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from support.raw_trees import VQA_RAD, make_vqa_rad_subset  # noqa: E402


@pytest.fixture
def vqa_rad_dir() -> Path:
    return VQA_RAD


@pytest.fixture
def small_vqa_rad(tmp_path) -> Path:
    """A VQA-RAD tree in the official layout with the first 40 rows and their images."""
    return make_vqa_rad_subset(tmp_path / "vqa_rad", 40)
