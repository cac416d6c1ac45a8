"""The global sample order: a pure function of (seed, epoch), partitioned by rank.

Nothing here depends on how many samples were already read, so resuming
from (epoch, samples seen) is O(1): recompute the epoch's order and start at
the position. Mixing: with per-source weights an epoch draws
``round(length * w / sum(w))`` rows of each source (cycling a seeded
permutation of that source when it is asked for more rows than it has),
then shuffles the union; without weights it is a permutation of all rows.
Every rank gets the same number of samples (the tail that does not divide
by the world size is left for the next epoch's fresh order). An epoch may be
asked to be longer than the index (a set smaller than one global batch): the
seeded permutation is then cycled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _rng(seed: int, epoch: int, salt: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, salt])


def epoch_order(
    sources: np.ndarray, seed: int, epoch: int, weights: dict[str, float] | None = None, length: int | None = None
) -> np.ndarray:
    """Indices into the sample index for one epoch (deterministic)."""
    n = len(sources)
    if not weights:
        order = _rng(seed, epoch).permutation(n)
        return order if length is None else np.resize(order, length)
    names = sorted(weights)
    missing = [s for s in names if not (sources == s).any()]
    if missing:
        raise ValueError(f"mix names sources with no rows: {', '.join(missing)} (present: {', '.join(sorted(set(sources)))})")
    total = sum(weights.values())
    if total <= 0 or any(w < 0 for w in weights.values()):
        raise ValueError(f"mix weights must be non-negative with a positive sum, got {weights}")
    length = n if length is None else length
    parts = []
    for salt, name in enumerate(names, start=1):
        members = np.flatnonzero(sources == name)
        count = int(round(length * weights[name] / total))
        laps = -(-count // len(members)) if count else 0
        rng = _rng(seed, epoch, salt)
        drawn = np.concatenate([members[rng.permutation(len(members))] for _ in range(laps)]) if laps else members[:0]
        parts.append(drawn[:count])
    union = np.concatenate(parts)
    return union[_rng(seed, epoch).permutation(len(union))]


@dataclass(frozen=True)
class Partition:
    rank: int
    world_size: int

    def __post_init__(self):
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} outside world size {self.world_size}")

    def per_rank(self, epoch_length: int) -> int:
        return epoch_length // self.world_size

    def take(self, order: np.ndarray) -> np.ndarray:
        """This rank's share: every world_size-th index, equal counts on every rank."""
        usable = self.per_rank(len(order)) * self.world_size
        return order[:usable][self.rank :: self.world_size]
