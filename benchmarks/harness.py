"""Pieces every benchmark here shares: process memory readings, count lists, machine facts.

Benchmarks run as scripts (``python benchmarks/bench_x.py``), so they import this
module by its file's folder being first on ``sys.path``.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys


def _proc_status_bytes(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_rss_bytes() -> int:
    """This process's peak resident set (VmHWM): unlike ru_maxrss, it starts afresh at exec."""
    value = _proc_status_bytes("VmHWM")
    if value is not None:
        return value
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def current_rss_bytes() -> int:
    """This process's resident set now (VmRSS); 0 where /proc is absent."""
    return _proc_status_bytes("VmRSS") or 0


def parse_positive_ints(values: list[str], option: str) -> list[int]:
    """``["5", "45,90"]`` -> ``[5, 45, 90]`` (sorted, distinct); ``option`` names the flag in the error."""
    counts = sorted({int(v) for value in values for v in value.split(",") if v.strip()})
    if not counts or counts[0] < 1:
        raise argparse.ArgumentTypeError(f"{option} needs positive integers")
    return counts


def machine_facts(**versions: str) -> dict:
    """Platform, Python and CPU count, plus the library versions a benchmark names."""
    return {"platform": platform.platform(), "python": sys.version.split()[0], "cpus": os.cpu_count(), **versions}
