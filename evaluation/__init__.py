"""The evaluator: the paper's benchmarks, the field's scoring protocols side by side, overlap reports.

Imports the formats (``omnivmed.data``) only; the app wires endpoints, local
models and the ``omnivmed-eval`` command around it.
"""
