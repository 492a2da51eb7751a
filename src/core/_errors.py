"""The errors the proxy originates, and how a stanza is refused with one.

Each is built once, checked against RFC 6120 §8.3.3 (conditions) and §8.3.2 (types), with a
text that tells the requester what happened.
"""

from __future__ import annotations

from ._jid import of_account
from ._link import send
from ._outputs import RequestEnded
from ._stanzas import Stanza, StanzaError
from ._state import Step, build

__all__ = [
    "BAD_REQUEST",
    "DUPLICATE_ID",
    "FORBIDDEN",
    "NOT_A_USER",
    "NOT_PROXIED",
    "NO_RESOURCE",
    "RESOURCE_GONE",
    "SHUTTING_DOWN",
    "TIMEOUT",
    "TOO_FAST",
    "TOO_MANY",
    "TOO_MANY_FROM_YOU",
    "TOO_MUCH",
    "TOO_MUCH_FROM_YOU",
    "error_reply",
    "not_acceptable",
    "refuse",
]

NO_RESOURCE = StanzaError.build(
    "cancel", "service-unavailable", "no resource of the service is online"
)
TIMEOUT = StanzaError.build("wait", "remote-server-timeout", "no answer in time")
RESOURCE_GONE = StanzaError.build(
    "wait", "recipient-unavailable", "the service went offline while handling the request"
)
SHUTTING_DOWN = StanzaError.build("wait", "service-unavailable", "client-proxy is shutting down")
DUPLICATE_ID = StanzaError.build(
    "cancel", "conflict", "a request with this id from you is still outstanding"
)
TOO_MANY = StanzaError.build("wait", "resource-constraint", "too many requests outstanding")
TOO_MANY_FROM_YOU = StanzaError.build(
    "wait", "resource-constraint", "too many of your requests are outstanding"
)
TOO_MUCH = StanzaError.build(
    "wait", "resource-constraint", "too many bytes of requests are outstanding"
)
TOO_MUCH_FROM_YOU = StanzaError.build(
    "wait", "resource-constraint", "too many bytes of your requests are outstanding"
)
FORBIDDEN = StanzaError.build("auth", "forbidden", "you may not use this service")
TOO_FAST = StanzaError.build("wait", "policy-violation", "too many requests: slow down")
NOT_A_USER = StanzaError.build(
    "modify", "jid-malformed", "address a user as <proxy domain>/<the user's full JID>"
)
#: mod_client_proxy's answers for what is not proxied (kept where a capability is switched off).
NOT_PROXIED = StanzaError.build("cancel", "feature-not-implemented")
BAD_REQUEST = StanzaError.build("cancel", "bad-request")


def not_acceptable(problem: str) -> StanzaError:
    """For a sender whose address the proxy cannot carry (``_jat.translation_problem``):
    not-acceptable (modify), since the address is valid XMPP (jid-malformed would blame it)."""
    return StanzaError.build("modify", "not-acceptable", problem)


def error_reply(s: Stanza, error: StanzaError) -> Stanza:
    """The error answer to ``s`` (RFC 6120 §8.3.1): same id, from the address it was sent to."""
    return build(Stanza, (s.kind, "error", s.id, s.to, s.from_, (), error, None, s.extra))


def refuse(w: Step, s: Stanza, error: StanzaError, counter: str) -> None:
    """Answer ``s`` with ``error`` and count ``counter``; but never answer an error with an error
    (RFC 6120 §8.3.1): that is dropped and counted as such. A refused IQ request ends there
    (:class:`~client_proxy.core.RequestEnded`, its outcome the counter's last part): outbound
    if a target resource sent it, inbound otherwise."""
    if s.type == "error":
        w.count("dropped.error_to_error")
        return
    w.count(counter)
    send(w, error_reply(s, error))
    if s.kind == "iq" and s.type in ("get", "set"):
        outcome = counter.rpartition(".")[2]
        if of_account(s.from_ or "", w.config.target):
            w.out.append(RequestEnded("outbound", outcome, None))
        else:
            w.out.append(RequestEnded("inbound", outcome, None))
