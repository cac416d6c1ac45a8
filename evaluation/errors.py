"""The one error the evaluator raises for bad input: its message is one line naming the file and the reason."""

from __future__ import annotations


class EvalInputError(ValueError):
    """A ground-truth manifest, prediction file, candidate list or option the evaluator cannot use."""
