"""omnivmed-paper: the OmniV-Med tables' figures, hand-computed."""

from __future__ import annotations

import pytest

from omnivmed.evaluation.items import CLOSED, OPEN, EvalItem
from omnivmed.evaluation.protocols import get_protocol

paper = get_protocol("omnivmed-paper")
M3D = (("benchmark", "m3d-vqa"),)
CHOICES = ("Axial", "Coronal", "Sagittal", "Oblique")


def test_2d_closed_accuracy_and_open_recall_follow_llava_med():
    items = [
        EvalItem("1", "q", "no", "There is a nodule.", CLOSED),  # a hit through "nodule"
        EvalItem("2", "q", "yes", "no", CLOSED),
        EvalItem("3", "q", "lung mass", "lung lung", OPEN),  # LLaVA-Med recall 2/3
        EvalItem("4", "q", "two", "2", OPEN),
    ]
    metrics = paper(items)
    assert metrics["closed accuracy"] == 50.0
    assert metrics["open recall"] == pytest.approx((200 / 3 + 100) / 2)
    assert metrics["closed count"] == 2.0 and metrics["open count"] == 2.0


def test_m3d_per_question_type_with_the_average_of_the_types():
    def closed(qtype, letter, prediction):
        return EvalItem("c", "q", "Axial", prediction, CLOSED, question_type=qtype, choices=CHOICES,
                        answer_choice=letter, extra=M3D)

    items = [
        closed("plane", "A", "A. Axial"),
        closed("plane", "A", "B. CTA."),  # "A." inside "CTA.": M3D counts it
        closed("phase", "B", "C. Delayed"),
        EvalItem("o", "q", "left kidney", "kidney", OPEN, question_type="organ", extra=M3D),
    ]
    metrics = paper(items)
    assert metrics["closed accuracy/plane"] == 100.0
    assert metrics["closed accuracy/phase"] == 0.0
    assert metrics["closed accuracy/avg"] == 50.0
    assert metrics["open recall/organ"] == 50.0
    assert metrics["open recall/avg"] == 50.0
    assert metrics["m3d closed count"] == 3.0 and metrics["m3d open count"] == 1.0
    assert metrics["closed count"] == 0.0  # nothing counted twice as 2D


def test_the_average_is_the_mean_of_the_type_figures_as_in_the_paper():
    # M3D-LaMed's closed row: 98.80 79.75 74.75 66.65 58.94 -> 75.78
    assert sum([98.80, 79.75, 74.75, 66.65, 58.94]) / 5 == pytest.approx(75.778)


def test_surgical_accuracy_is_a_normalised_exact_match():
    surgical = (("benchmark", "cholec80-vqa"),)
    items = [
        EvalItem("1", "q", "Calot triangle dissection", "calot triangle dissection.", OPEN, extra=surgical),
        EvalItem("2", "q", "two", "2", OPEN, extra=surgical),
        EvalItem("3", "q", "clipping", "clipping and cutting", OPEN, extra=surgical),
    ]
    metrics = paper(items)
    assert metrics["accuracy"] == pytest.approx(200 / 3)
    assert metrics["surgical count"] == 3.0
