"""Scoring protocols: the field's (reproduced from their code, defects included), their fixed
variants, and ours. Each module states its rules and cites its source; docs/evaluation-protocols.md
has one section per protocol.

Every protocol is called as ``PROTOCOLS[name](items, candidates=None)`` and returns its own
metric names in its own units. Items may carry, in ``EvalItem.extra``: ``benchmark`` (which
benchmark they come from; see ``common.benchmark_kind``), SLAKE's ``modality`` and
``content_type``, and an LLM judge's verdict ``judge_correct`` (see ``judge.py``).
"""

from __future__ import annotations

from omnivmed.evaluation.protocols import llava_med, lmms_eval, m3d, medevalkit, multimedeval, omnivmed_paper, strict
from omnivmed.evaluation.protocols.base import UNAVAILABLE, Metrics, Protocol

__all__ = ["PROTOCOLS", "UNAVAILABLE", "Metrics", "Protocol", "get_protocol", "protocol_names"]

PROTOCOLS: dict[str, Protocol] = {
    protocol.name: protocol
    for protocol in (
        llava_med.PROTOCOL,
        omnivmed_paper.PROTOCOL,
        medevalkit.PROTOCOL,
        medevalkit.FIXED,
        multimedeval.PROTOCOL,
        multimedeval.FIXED,
        lmms_eval.PROTOCOL,
        m3d.PROTOCOL,
        m3d.FIXED,
        strict.PROTOCOL,
    )
}


def protocol_names() -> list[str]:
    """The registered protocol names, in registration order (peers, their fixes, ours last)."""
    return list(PROTOCOLS)


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name``; KeyError naming the known ones otherwise."""
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise KeyError(f"unknown protocol {name!r}; known protocols: {', '.join(protocol_names())}") from None
