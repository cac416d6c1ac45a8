"""The embedded default's staged VQA-RAD, SLAKE and Cholec80-VQA, built once per session."""

from __future__ import annotations

import pytest

from support.eval_fixtures import build_eval_staged


@pytest.fixture(scope="session")
def staged(tmp_path_factory):
    return build_eval_staged(tmp_path_factory.getbasetemp() / "eval-ground-truth")
