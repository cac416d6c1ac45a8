"""Generated index videos shared by the video tests (written once per session)."""

from __future__ import annotations

import pytest

from support.video_files import IndexVideo, write_index_videos


@pytest.fixture(scope="session")
def index_videos(tmp_path_factory) -> dict[str, IndexVideo]:
    return write_index_videos(tmp_path_factory.mktemp("index_videos"))
