"""How many threads one process gives a volume's slice work (PNG encoding, DICOM decoding).

``OMNIVMED_VOLUME_THREADS`` when set (the engines set 1 per Ray task and
cores / workers per local worker, so N workers do not each take every core),
else ``min(4, cores)``. The thread count never changes the output bytes.
"""

from __future__ import annotations

import os

VOLUME_THREADS_ENV = "OMNIVMED_VOLUME_THREADS"


def volume_threads() -> int:
    value = os.environ.get(VOLUME_THREADS_ENV, "")
    if value.strip().isdigit() and int(value) >= 1:
        return int(value)
    return min(4, os.cpu_count() or 1)
