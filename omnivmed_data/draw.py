"""Seeded, stratified draws over row positions (never over samples themselves).

A pool is the list of (shard, row) positions an entry may draw from, each with
its stratum (task x modality). :func:`allocate` spreads the wanted count over
the strata, :func:`draw` picks the rows of each stratum with a generator
seeded by (recipe seed, entry, stratum): the same seed gives the same rows,
and adding an entry or a stratum never changes another's draw.
"""

from __future__ import annotations

import hashlib
from typing import Mapping

import numpy as np

Stratum = tuple[str, str]  # (task, modality)


def allocate(sizes: Mapping[Stratum, int], wanted: int, balance: str = "proportional") -> dict[Stratum, int]:
    """How many rows each stratum gives; never more than it holds, ``wanted`` in total (<= pool)."""
    total = sum(sizes.values())
    if wanted > total:
        raise ValueError(f"cannot draw {wanted} from a pool of {total}")
    keys = sorted(sizes)
    if balance == "proportional":
        return _largest_remainder(sizes, keys, wanted, total)
    if balance == "equal":
        return _water_fill(sizes, keys, wanted)
    raise ValueError(f"unknown balance {balance!r}")


def _largest_remainder(sizes, keys, wanted: int, total: int) -> dict[Stratum, int]:
    # Exact integer arithmetic (no float ties): quota_k = wanted * size_k / total.
    alloc = {k: wanted * sizes[k] // total for k in keys}
    remainders = sorted(keys, key=lambda k: (-(wanted * sizes[k] % total), k))
    for k in remainders[: wanted - sum(alloc.values())]:
        alloc[k] += 1
    return alloc


def _water_fill(sizes, keys, wanted: int) -> dict[Stratum, int]:
    # As even as the strata allow: small strata give all they have, the rest share what is left.
    alloc = dict.fromkeys(keys, 0)
    left = wanted
    by_size = sorted(keys, key=lambda k: (sizes[k], k))
    for i, k in enumerate(by_size):
        alloc[k] = min(sizes[k], left // (len(by_size) - i))
        left -= alloc[k]
    for k in keys:  # floor division leaves fewer rows than strata: one more each, in key order
        if left == 0:
            break
        if alloc[k] < sizes[k]:
            alloc[k] += 1
            left -= 1
    return alloc


def stratum_seed(seed: int, entry: str, stratum: Stratum) -> int:
    digest = hashlib.sha256(f"{seed}\x00{entry}\x00{stratum[0]}\x00{stratum[1]}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def draw(members: Mapping[Stratum, np.ndarray], counts: Mapping[Stratum, int], *, seed: int, entry: str) -> np.ndarray:
    """Sorted pool positions chosen: ``counts[k]`` of stratum k's ``members`` (pool positions, ascending)."""
    chosen = []
    for k in sorted(members):
        pool, n = members[k], counts.get(k, 0)
        if n >= len(pool):
            chosen.append(pool)
        elif n > 0:
            rng = np.random.default_rng(stratum_seed(seed, entry, k))
            chosen.append(pool[rng.choice(len(pool), size=n, replace=False)])
    if not chosen:
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.concatenate(chosen))
