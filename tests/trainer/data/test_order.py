"""The global order: deterministic from (seed, epoch), equal disjoint shares per rank, weighted mixing."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from omnivmed.trainer.data.order import Partition, epoch_order

SOURCES = np.array(["a"] * 90 + ["b"] * 9 + ["c"] * 1, dtype=object)


def test_same_seed_and_epoch_same_order_another_epoch_another():
    first = epoch_order(SOURCES, seed=3, epoch=0)
    assert np.array_equal(first, epoch_order(SOURCES, seed=3, epoch=0))
    assert not np.array_equal(first, epoch_order(SOURCES, seed=3, epoch=1))
    assert not np.array_equal(first, epoch_order(SOURCES, seed=4, epoch=0))
    assert sorted(first) == list(range(100))


def test_ranks_get_equal_disjoint_shares():
    order = epoch_order(SOURCES, seed=0, epoch=0)
    shares = [Partition(r, 3).take(order) for r in range(3)]
    assert [len(s) for s in shares] == [33, 33, 33]
    assert len(set(np.concatenate(shares))) == 99


def test_weights_set_the_share_of_each_source():
    order = epoch_order(SOURCES, seed=0, epoch=0, weights={"a": 1, "b": 1, "c": 2})
    counts = Counter(SOURCES[order])
    assert counts == {"a": 25, "b": 25, "c": 50}  # c's one row is repeated, a is subsampled
    assert set(order[SOURCES[order] == "b"]) == set(range(90, 99))  # b's rows all drawn before any repeats


def test_a_source_left_out_of_the_mix_is_not_drawn_and_unknown_ones_fail():
    order = epoch_order(SOURCES, seed=0, epoch=0, weights={"a": 1})
    assert set(SOURCES[order]) == {"a"}
    with pytest.raises(ValueError, match="no rows: d"):
        epoch_order(SOURCES, seed=0, epoch=0, weights={"d": 1})
