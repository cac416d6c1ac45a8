"""The OmniV-Med paper's published numbers (arXiv 2504.14692), quoted with the table they come from.

"For 2D images, we follow LLaVA-Med and measure accuracy and recall" (closed
questions: accuracy; open questions: recall). M3D-VQA: closed accuracy and
open recall per question type; the average is the plain mean of the five
types. Surgical video: accuracy. All in percent.
"""

from __future__ import annotations

PAPER = "OmniV-Med (arXiv 2504.14692)"

TABLE1_TITLE = "Table 1 (Med-VQA): open recall / closed accuracy"
TABLE1_BENCHMARKS = ("vqa_rad", "slake", "pathvqa")
# model -> benchmark -> (open recall, closed accuracy)
TABLE1: dict[str, dict[str, tuple[float, float]]] = {
    "LLaVA-Med (Vicuna7B)": {"vqa_rad": (64.39, 81.98), "slake": (84.71, 83.17), "pathvqa": (38.87, 91.65)},
    "OmniV-Med-Tiny (Qwen2.5-1.5B)": {"vqa_rad": (59.22, 84.93), "slake": (84.59, 87.98), "pathvqa": (38.87, 92.66)},
    "OmniV-Med (Qwen2.5-7B)": {"vqa_rad": (67.87, 88.24), "slake": (85.92, 91.51), "pathvqa": (41.68, 93.42)},
}

TABLE2_TITLE = "Table 2 (M3D-VQA): closed accuracy and open recall per question type"
M3D_TYPES = ("plane", "phase", "organ", "abnormality", "location")
# form -> model -> (plane, phase, organ, abnormality, location, avg)
TABLE2: dict[str, dict[str, tuple[float, ...]]] = {
    "closed": {
        "M3D-LaMed": (98.80, 79.75, 74.75, 66.65, 58.94, 75.78),
        "OmniV-Med-Tiny": (98.95, 91.35, 75.15, 66.24, 60.78, 78.49),
        "OmniV-Med": (98.75, 91.65, 76.35, 66.80, 61.86, 79.08),
    },
    "open": {
        "M3D-LaMed-7B": (98.37, 74.41, 34.20, 15.91, 24.00, 49.38),
        "OmniV-Med-Tiny": (98.18, 88.80, 40.62, 16.80, 26.04, 54.09),
        "OmniV-Med": (98.84, 86.70, 41.36, 17.26, 26.75, 54.18),
    },
}

TABLE3_TITLE = "Table 3 (surgical video): accuracy"
TABLE3_BENCHMARKS = ("cholec80_vqa", "endovis18_vqa", "psiava_vqa")
TABLE3: dict[str, tuple[float, float, float]] = {
    "Surgical-VQA": (89.8, 63.2, 65.6),
    "Surgical-LLaVA": (92.2, 68.7, 67.1),
    "OmniV-Med-Tiny": (91.7, 78.8, 64.8),
    "OmniV-Med": (92.9, 80.3, 69.3),
}
