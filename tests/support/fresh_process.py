"""Run a snippet in a fresh interpreter: what a second process makes must equal what this one made.

A second call in the test's own process cannot see output that depends on the string hash seed
(set and dict order of str keys), on the clock or on the process id; a fresh interpreter with another
PYTHONHASHSEED can.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def run_python(code: str, *args: str, hash_seed: str = "4242") -> str:
    """stdout of ``python -c code args...`` with ``support`` importable and another hash seed."""
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout
