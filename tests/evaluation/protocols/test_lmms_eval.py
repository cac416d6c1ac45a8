"""lmms-eval's SLAKE scorer, hand-computed."""

from __future__ import annotations

import pytest

from omnivmed.evaluation.items import CLOSED, OPEN, EvalItem
from omnivmed.evaluation.protocols import get_protocol
from omnivmed.evaluation.protocols.lmms_eval import normalize_answer

lmms = get_protocol("lmms-eval")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes.", "yes"),
        ("True", "yes"),
        ("nope", "no"),
        ("X-Ray", "xray"),  # punctuation to space, then the x-ray alias
        ("x ray", "xray"),
        ("Lung (left)", "lung"),
        ("  Left  Lung! ", "left lung"),
        ("two", "two"),  # no number words
        ("是的", "yes"),
        ("", ""),
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_exact_match_after_normalisation_with_breakdowns():
    def item(answer, prediction, answer_type, modality, content):
        return EvalItem("s", "q", answer, prediction, answer_type,
                        extra=(("modality", modality), ("content_type", content)))

    items = [
        item("Yes", "yes.", CLOSED, "CT", "Organ"),
        item("No", "No nodule", CLOSED, "MRI", "Abnormality"),  # strict: wrong
        item("Liver", "liver", OPEN, "X-Ray", "Organ"),
        item("2", "two", OPEN, "CT", "Quantity"),  # wrong: number words stay words
    ]
    metrics = lmms(items)
    assert metrics["slake_accuracy"] == 0.5
    assert metrics["slake_closed_accuracy"] == 0.5
    assert metrics["slake_open_accuracy"] == 0.5
    assert metrics["slake_ct_accuracy"] == 0.5
    assert metrics["slake_mri_accuracy"] == 0.0
    assert metrics["slake_xray_accuracy"] == 1.0
    assert metrics["slake_organ_accuracy"] == 1.0
    assert metrics["slake_quantity_accuracy"] == 0.0
    assert metrics["slake_color_accuracy"] == 0.0  # no item: 0.0, as lmms-eval returns


def test_modality_falls_back_to_the_item_field():
    item = EvalItem("s", "q", "CT", "ct", OPEN, modality="CT")
    assert lmms([item])["slake_ct_accuracy"] == 1.0
