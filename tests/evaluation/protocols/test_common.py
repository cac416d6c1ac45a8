"""The LLaVA-Med / MultiMedEval answer normaliser and the benchmark lookup, quirks included."""

from __future__ import annotations

import pytest

from omnivmed.evaluation.items import EvalItem
from omnivmed.evaluation.protocols.common import M3D, SLAKE, SURGICAL, benchmark_kind, vqa_normalize


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("left lung.", "left lung"),
        ("two", "2"),
        ("none", "0"),  # "none" is a number word for the peers
        ("the heart", "heart"),
        ("x-ray", "x ray"),  # a mark without a space next to it becomes a space
        ("x - ray", "x ray"),  # with a space next to it, it is deleted
        ("yes, it is", "yes it is"),
        ("1,000 mm", "1000 mm"),  # a digit-comma-digit deletes every mark
        ("1.5", "1.5"),  # a period before a digit stays
        ("a.b", "ab"),  # any other period is deleted, not spaced
        ("dont", "don't"),
        ("what's: this*", "what's: this*"),  # apostrophe, colon and * are not in the list
    ],
)
def test_vqa_normalize(text, expected):
    assert vqa_normalize(text) == expected


def test_vqa_normalize_deletes_at_most_32_periods():
    # the peers pass re.UNICODE (32) as re.sub's count
    assert vqa_normalize(".".join("w" * 34)) == "w" * 33 + ".w"


def test_benchmark_kind_reads_the_extra_entry_then_the_item_shape():
    def item(**fields):
        return EvalItem("1", "q", "a", "p", "open", **fields)

    assert benchmark_kind(item(extra=(("benchmark", "SLAKE"),))) == SLAKE
    assert benchmark_kind(item(extra=(("benchmark", "M3D-VQA"),))) == M3D
    assert benchmark_kind(item(extra=(("benchmark", "EndoVis18-VQA"),))) == SURGICAL
    assert benchmark_kind(item(answer_choice="A", choices=("x", "y", "z", "w"))) == M3D
    assert benchmark_kind(item(question_type="plane")) == M3D
    assert benchmark_kind(item(question_type="PLANE")) == ""  # VQA-RAD's own question type
