"""The core's tables of the protocol's vocabulary (``_stanzas``: IQ and presence types, error
types and conditions) are the RFCs' lists, checked against an independent implementation:
slixmpp's stanza classes. The core builds its own errors from them and the strategies draw from
them, so a missing entry would go unnoticed anywhere else."""

from __future__ import annotations

import pytest
from client_proxy.core import (
    ERROR_CONDITIONS,
    ERROR_TYPES,
    IQ_TYPES,
    PRESENCE_TYPES,
    StanzaError,
)
from slixmpp.stanza import Iq, Presence
from slixmpp.stanza.error import Error


def test_iq_types_are_rfc_6120s() -> None:
    """RFC 6120 §8.2.3."""
    assert set(Iq.types) == IQ_TYPES


def test_presence_types_are_rfc_6121s() -> None:
    """RFC 6121 §4.7.1.3. slixmpp also names the absence of a type ("available"), which the
    core writes as None."""
    assert set(Presence.types) - {"available"} == PRESENCE_TYPES


def test_error_types_are_rfc_6120s() -> None:
    """RFC 6120 §8.3.2."""
    assert set(Error.types) == ERROR_TYPES


def test_error_conditions_are_rfc_6120s() -> None:
    """RFC 6120 §8.3.3. slixmpp's list is RFC 3920's: RFC 6120 added `policy-violation` and
    removed `payment-required` (RFC 6120 Appendix D, "Differences from RFC 3920")."""
    rfc_3920 = set(Error.conditions)
    assert (rfc_3920 - {"payment-required"}) | {"policy-violation"} == ERROR_CONDITIONS


def test_the_core_builds_only_the_errors_rfc_6120_defines() -> None:
    assert StanzaError.build("wait", "remote-server-timeout").condition == "remote-server-timeout"
    with pytest.raises(ValueError, match=r"error type 'later' is not one of RFC 6120 §8\.3\.2"):
        StanzaError.build("later", "remote-server-timeout")
    with pytest.raises(ValueError, match=r"condition 'too-slow' is not one of RFC 6120 §8\.3\.3"):
        StanzaError.build("wait", "too-slow")
