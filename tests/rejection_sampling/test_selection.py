"""The acceptance rule and the winner's order."""

from __future__ import annotations

from omnivmed.rejection_sampling.config import AcceptanceRule
from omnivmed.rejection_sampling.prompts import Scores
from omnivmed.rejection_sampling.selection import best, passes


def s(r, f, a):
    return Scores(r, f, a, "")


def test_default_rule_wants_every_score_at_least_4():
    rule = AcceptanceRule()
    assert passes([s(4, 4, 4), s(5, 4, 5)], rule)
    assert not passes([s(5, 5, 5), s(5, 5, 3)], rule)  # one judge doubts accuracy: out
    assert not passes([s(5, 5, 5), None], rule)  # a judge that could not score: out
    assert passes([], rule)  # no judges: every parsed caption


def test_mean_condition():
    rule = AcceptanceRule(min_each=3, min_mean=4.5)
    assert passes([s(5, 5, 4), s(5, 5, 5)], rule)
    assert not passes([s(3, 5, 4), s(4, 5, 5)], rule)  # mean 4.33


def test_best_is_deterministic_with_ties():
    a, b, c = (3, [s(5, 4, 4)]), (1, [s(4, 4, 5)]), (2, [s(4, 4, 5)])
    assert best([a, b, c]) == 1  # same total: higher accuracy, then lower index
    assert best([c, b]) == 1 and best([b, c]) == 1
    assert best([(0, [s(4, 4, 4)]), (5, [s(5, 5, 5)])]) == 5  # higher total wins
    assert best([(0, [s(4, 5, 5)]), (1, [s(5, 5, 4)])]) == 0  # tie on total and min: accuracy
    assert best([]) is None
