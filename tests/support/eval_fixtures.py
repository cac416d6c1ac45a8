"""Ground truth for the evaluator's tests: the embedded default's staged sources, built as embedded.py builds them.

VQA-RAD (the full official release vendored in data/), SLAKE (the official rows of the 9
vendored image folders) and the generated Cholec80-VQA tree, each built by its builder
into ``<root>/staged/<source>/`` (about 4 s; an up-to-date build is reused), and a
scripted OpenAI-compatible responder for endpoint predictions.
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Callable

from omnivmed.build import build_source
from omnivmed.builders import get_builder
from omnivmed.embedded import embedded_data_dir, prepare_slake_sample
from omnivmed.rejection_sampling.client import REQUEST_KEY_HEADER
from omnivmed.rejection_sampling.server import Reply
from omnivmed.surgical_demo import write_demo_tree


def build_eval_staged(root: Path) -> Path:
    """``root/staged`` holding vqa_rad, slake and cholec80_vqa, as the embedded default stages them."""
    data = embedded_data_dir()
    root = Path(root)
    raws = {
        "vqa_rad": (data / "vqa_rad", None),
        "slake": (prepare_slake_sample(data / "slake", root / "raw" / "slake"), None),
        "cholec80_vqa": (write_demo_tree(root / "raw" / "cholec80_vqa"), {"short_side": "0"}),
    }
    for name, (raw, options) in raws.items():
        build_source(get_builder(name, options), raw, root / "staged" / name, progress=False)
    return root / "staged"


def user_text(body: dict) -> str:
    content = body["messages"][-1]["content"]
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if part.get("type") == "text")


def image_parts(body: dict) -> int:
    content = body["messages"][-1]["content"]
    return 0 if isinstance(content, str) else sum(1 for part in content if part.get("type") == "image_url")


class Answers:
    """A responder: 'yes' to questions offering [yes, no], else 'axial'; faults per request key."""

    def __init__(self, faults: Callable[[str, dict, int], object] | None = None):
        self.faults = faults
        self.asked: Counter = Counter()
        self.bodies: list[dict] = []
        self._lock = threading.Lock()

    def __call__(self, body: dict, headers: dict):
        key = headers.get(REQUEST_KEY_HEADER.lower())
        with self._lock:
            seen = self.asked[key]
            self.asked[key] += 1
            self.bodies.append(body)
        if self.faults is not None:
            fault = self.faults(key, body, seen)
            if fault is not None:
                return fault
        return Reply("yes" if "[yes, no]" in user_text(body) else "axial", 50, 1)
