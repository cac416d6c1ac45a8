"""Which candidate of a round wins: the acceptance rule, then a deterministic order.

A candidate passes when every judge scored it and the rule holds
(:class:`~omnivmed.rejection_sampling.config.AcceptanceRule`). Among the
passing ones the best wins: highest total over all judges and criteria, then
highest lowest score, then highest accuracy total, then the lowest candidate
index. The index is fixed before any reply arrives, so the same cache always
gives the same winner, whatever order replies came in.
"""

from __future__ import annotations

from typing import Sequence

from omnivmed.rejection_sampling.config import AcceptanceRule
from omnivmed.rejection_sampling.prompts import Scores


def passes(scores: Sequence[Scores | None], rule: AcceptanceRule) -> bool:
    """``scores``: one entry per judge (None when that judge could not score)."""
    if any(s is None for s in scores):
        return False
    values = [v for s in scores for v in s.values()]
    if not values:  # no judges: every caption that parsed is accepted
        return True
    return min(values) >= rule.min_each and sum(values) / len(values) >= rule.min_mean


def rank_key(index: int, scores: Sequence[Scores]) -> tuple:
    values = [v for s in scores for v in s.values()]
    return (-sum(values), -min(values, default=0), -sum(s.accuracy for s in scores), index)


def best(candidates: Sequence[tuple[int, Sequence[Scores]]]) -> int | None:
    """Index of the winner among passing ``(index, scores)`` pairs, or None when there are none."""
    if not candidates:
        return None
    return min(candidates, key=lambda c: rank_key(*c))[0]
