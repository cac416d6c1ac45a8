"""report.md in the paper's layouts (published numbers beside ours), overlap beside scores, a figure; prompt templates."""

from __future__ import annotations

import json

import pytest

from omnivmed.evaluation.errors import EvalInputError
from omnivmed.evaluation.items import EvalItem
from omnivmed.evaluation.prompts import TEMPLATES, get_template
from omnivmed.evaluation.protocols.base import Protocol
from omnivmed.evaluation.report import Run, closed_open, figure_png, render
from omnivmed.evaluation.scoring import save_scores, score_items


def paper_like(items, *, candidates=None):
    """Stands in for omnivmed-paper: fixed figures per benchmark kind, as its metric names."""
    kind = dict(items[0].extra).get("benchmark", "")
    if kind == "m3d_vqa":
        return {"closed accuracy/plane": 90.0, "closed accuracy/avg": 90.0, "open recall/plane": 40.0, "open recall/avg": 40.0}
    if kind == "cholec80_vqa":
        return {"closed accuracy": 0.0, "open recall": 0.0, "accuracy": 75.0}
    closed = [i for i in items if i.answer_type == "closed"]
    opened = [i for i in items if i.answer_type == "open"]
    return {"closed accuracy": 80.0 if closed else 0.0, "open recall": 30.0 if opened else 0.0}


def fraction(items, *, candidates=None):
    return {"closedQuestionsAccuracy": 0.5, "openQuestionsRecall": 0.25}


PROTOCOLS = [Protocol("omnivmed-paper", "test", "", (), paper_like), Protocol("multimedeval", "test", "", (), fraction)]


def items(benchmark, types):
    return [EvalItem(str(n), "q", "a", "a", t, question_type="plane" if benchmark == "m3d_vqa" else "", extra=(("benchmark", benchmark),)) for n, t in enumerate(types)]


@pytest.fixture
def run_folder(tmp_path):
    folder = tmp_path / "mymodel"
    for benchmark, types in (("vqa_rad", ["closed", "open"]), ("m3d_vqa", ["closed", "open"]), ("cholec80_vqa", ["open"])):
        save_scores(folder, benchmark, score_items(items(benchmark, types), PROTOCOLS), {"questions": len(types), "matched": len(types), "missing": 0})
    (folder / "run.json").write_text(json.dumps({"predictor": "endpoint", "model": "qwen-vl", "prompt_version": "llava-med-v1"}))
    return folder


def test_headlines_in_percent_per_protocol(run_folder):
    run = Run.load(run_folder)
    assert closed_open(run, "vqa_rad", "omnivmed-paper") == (80.0, 30.0)
    assert closed_open(run, "vqa_rad", "multimedeval") == (50.0, 25.0)  # its fractions scaled to percent
    assert closed_open(run, "m3d_vqa", "omnivmed-paper") == (90.0, 40.0)
    assert closed_open(run, "m3d_vqa", "omnivmed-paper", "plane") == (90.0, 40.0)
    assert closed_open(run, "cholec80_vqa", "omnivmed-paper") == (75.0, None)
    assert closed_open(run, "cholec80_vqa", "multimedeval") == (None, 25.0)  # no closed question there


def test_report_puts_ours_beside_the_published_tables(run_folder):
    overlap = {
        "train": "mix/manifest.json",
        "method": {"perceptual_threshold_bits": 4},
        "benchmarks": {
            "vqa_rad": {
                "train_mix": {"test_frames": 203, "test_questions": 451, "frames_shared_exact": 202, "frames_shared_perceptual": 202},
                "own_train": {"test_frames": 203, "frames_shared_exact": 202, "frames_shared_perceptual": 202, "questions_with_shared_frame_exact": 446, "image_question_shared": 0},
            }
        },
    }
    text = render([Run.load(run_folder)], overlap)
    assert "| LLaVA-Med (Vicuna7B) (published) | 64.39 | 81.98 | 84.71 | 83.17 | 38.87 | 91.65 |" in text
    assert "| ours: mymodel | 30.00 | 80.00 | – | – | – | – |" in text
    assert "| M3D-LaMed (published) | 98.80 | 79.75 | 74.75 | 66.65 | 58.94 | 75.78 |" in text
    assert "| ours: mymodel | 90.00 | – | – | – | – | – |" in text  # plane only; the mean needs all five
    assert "| OmniV-Med (published) | 92.9 | 80.3 | 69.3 |" in text
    assert "| ours: mymodel | 75.00 | – | – |" in text
    assert "| vqa_rad | 2 | 80.00 / 30.00 | 203 | 202 / 202 | 202 / 202 | 446 | 0 |" in text
    assert "Published rows quoted from OmniV-Med (arXiv 2504.14692), Table 1 (Med-VQA)." in text
    assert "| multimedeval | closedQuestionsAccuracy | 0.5000 | 0.5000 | 0.5000 |" in text
    assert "endpoint, qwen-vl, llava-med-v1" in text
    png = figure_png([Run.load(run_folder)])
    assert png.startswith(b"\x89PNG") and figure_png([Run.load(run_folder)]) == png


def test_prompt_templates():
    llava = get_template("llava-med")
    assert llava.render("Is there an effusion?", "closed", "No") == "Is there an effusion? Please choose from the following two options: [yes, no]"
    assert llava.render("Which side?", "closed", "left") == "Which side?"
    assert llava.render("What organ?", "open", "liver") == "What organ?"
    mc = "Which plane? Choices: A. Axial B. Coronal C. Sagittal D. Oblique"
    assert all(t.render(mc, "closed", "yes", multiple_choice=True) in (mc, mc + t.any_suffix) for t in TEMPLATES.values())
    assert get_template("medevalkit").render("Is it?", "closed", "yes") == "Is it?\nPlease output 'yes' or 'no'(no extra output)."
    assert get_template("lmms-eval").render("Which?", "open", "x").endswith("\nAnswer the question using a single word or phrase.")
    assert get_template("multimedeval").render("Is it?", "closed", "no") == "Answer the following question with yes or no. Is it?"
    assert len({t.version for t in TEMPLATES.values()}) == len(TEMPLATES)
    with pytest.raises(EvalInputError, match="unknown prompt template 'llava'"):
        get_template("llava")
