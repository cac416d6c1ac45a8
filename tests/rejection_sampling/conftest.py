"""Windows of the generated surgical tree, made once per session (they are only read)."""

from __future__ import annotations

import pytest

from support.caption_fixtures import make_windows


@pytest.fixture(scope="session")
def windows(tmp_path_factory):
    return make_windows(tmp_path_factory.mktemp("caption-windows"))
