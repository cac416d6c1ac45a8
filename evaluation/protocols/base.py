"""The protocol interface: a named scorer with its source cited and its known defects listed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from omnivmed.evaluation.items import EvalItem

# A metric a protocol cannot compute here (a model or resource it needs is absent) is reported as
# this string, never dropped or faked.
UNAVAILABLE = "unavailable"

Metrics = dict[str, float | str]


@dataclass(frozen=True)
class Protocol:
    name: str  # e.g. "llava-med", "medevalkit-fixed"
    source: str  # the peer's code this reproduces: repository, commit, file(s)
    rules: str  # the rules in a few lines (shown by `omnivmed-eval protocols`)
    defects: tuple[str, ...]  # known defects this variant reproduces (empty for the -fixed variants and ours)
    score: Callable[..., Metrics]  # score(items: Sequence[EvalItem], *, candidates: Sequence[str] | None = None) -> Metrics

    def __call__(self, items: Sequence[EvalItem], *, candidates: Sequence[str] | None = None) -> Metrics:
        return self.score(items, candidates=candidates)
