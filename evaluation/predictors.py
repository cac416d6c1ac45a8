"""What produces predictions: the interface every predictor implements, and the requests it answers.

A predictor gets one :class:`PredictRequest` per benchmark question (the
ground-truth record, the rendered prompt, the template version) and returns a
:class:`PredictOutcome`: the answers it has, and for the questions it could
not answer, why. The app implements it for answer files, OpenAI-compatible
endpoints (through the captioner's cache and retries), the ``blind`` and
``majority`` baselines and, once the trainer's inference API exists, a
trained omnivmed model generating locally (``--model DIR``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

from omnivmed.evaluation.benchmarks import Benchmark, GtRecord
from omnivmed.evaluation.predictions import Prediction
from omnivmed.evaluation.prompts import PromptTemplate


@dataclass(frozen=True)
class PredictRequest:
    benchmark: str
    record: GtRecord
    prompt: str  # the user text (the visual input travels beside it)
    prompt_version: str


@dataclass
class PredictOutcome:
    predictions: list[Prediction]
    failures: dict[str, str] = field(default_factory=dict)  # question id -> why it has no answer
    sent: int = 0  # requests that reached a model in this run
    cached: int = 0  # answered from an earlier run's cache


class Predictor(Protocol):
    name: str  # "endpoint", "blind", "majority", "file", "local"

    def predict(self, requests: Sequence[PredictRequest]) -> PredictOutcome: ...


def requests_for(benchmark: Benchmark, records: Sequence[GtRecord], template: PromptTemplate) -> list[PredictRequest]:
    return [
        PredictRequest(benchmark.name, r, template.render(r.question, r.answer_type, r.answer, multiple_choice=bool(r.choices)), template.version)
        for r in records
    ]
