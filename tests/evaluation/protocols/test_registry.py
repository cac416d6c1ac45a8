"""The registry: every protocol is named, cited, explained, and survives an empty item list."""

from __future__ import annotations

import pytest

from omnivmed.evaluation.protocols import PROTOCOLS, UNAVAILABLE, get_protocol, protocol_names

EXPECTED = {
    "llava-med", "omnivmed-paper", "medevalkit", "medevalkit-fixed", "multimedeval", "multimedeval-fixed",
    "lmms-eval", "m3d", "m3d-fixed", "omnivmed",
}


def test_the_protocols_are_registered_under_their_own_names():
    assert set(protocol_names()) == EXPECTED
    assert protocol_names()[-1] == "omnivmed"
    for name, protocol in PROTOCOLS.items():
        assert protocol.name == name
        assert get_protocol(name) is protocol


def test_an_unknown_name_is_a_key_error_that_lists_the_known_ones():
    with pytest.raises(KeyError) as error:
        get_protocol("llava")
    message = str(error.value)
    assert "'llava'" in message
    for name in EXPECTED:
        assert name in message


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_protocol_cites_its_source_and_states_its_rules(name):
    protocol = get_protocol(name)
    assert protocol.source.strip() and protocol.rules.strip()
    # a repository (owner/name) or this project, and a file
    assert "/" in protocol.source
    assert ".py" in protocol.source or "arXiv" in protocol.source


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_an_empty_item_list_gives_zeros_or_unavailable(name):
    metrics = get_protocol(name)([])
    assert metrics, "a protocol reports its metric names even for no items"
    for key, value in metrics.items():
        assert value == 0.0 or value == UNAVAILABLE, (key, value)


def test_plain_variants_list_their_defects_and_fixed_variants_none():
    for name in ("medevalkit", "multimedeval", "m3d"):
        assert get_protocol(name).defects
        assert get_protocol(f"{name}-fixed").defects == ()
    assert get_protocol("llava-med").defects
    assert get_protocol("omnivmed").defects == ()
