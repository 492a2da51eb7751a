"""The other direction for IQs: a target resource starts an IQ towards a user (a *call*) by
addressing `proxy-domain/<user's full JID>`; the user gets it from the proxy's domain with an id
of the proxy's own, sealed with the resource and its id (``_seal``: so two resources using the
same id cannot be confused, and any instance can deliver the answer), and the user's answer
goes back to that resource, from the translated address, with the resource's own id.
"""

from __future__ import annotations

from collections.abc import Iterable

from ._errors import NOT_A_USER, NOT_PROXIED, SHUTTING_DOWN, TIMEOUT, TOO_MANY, error_reply, refuse
from ._jat import decode_requester, translation_problem
from ._jid import resource_of
from ._link import send
from ._outputs import ended
from ._queue import dequeue, enqueue
from ._recovery import deliver, owed_to_nobody, sealed_deadline
from ._seal import CALL, Sealed, open_id, seal
from ._stanzas import Stanza, footprint
from ._state import Call, Step

__all__ = [
    "call",
    "call_answered",
    "drop_calls_from",
    "shut_down_call",
    "time_out_call",
    "user_address",
]


def user_address(w: Step, s: Stanza) -> str | None:
    """The user a stanza from the target is addressed to, or None (then ``s`` is refused)."""
    user = decode_requester(w.config.proxy_domain, s.to or "")
    if user is None or translation_problem(user) is not None:
        refuse(w, s, NOT_A_USER, "refused.not_a_user")
        return None
    return user


def call(w: Step, s: Stanza) -> None:
    """A target resource (``s.from_``, where the answer will go) starts an IQ towards a user."""
    cfg = w.config
    if not cfg.outbound_iq:
        refuse(w, s, NOT_PROXIED, "refused.target_initiated")
        return
    if w.session.stop_at is not None:
        refuse(w, s, SHUTTING_DOWN, "refused.shutting_down")
        return
    user = user_address(w, s)
    if user is None:
        return
    if len(w.calls) >= cfg.max_outstanding:
        refuse(w, s, TOO_MANY, "refused.limit_calls")
        return
    seq = w.next_seq
    deadline = w.now + cfg.request_timeout
    fields = Sealed(
        w.instance,
        seq,
        sealed_deadline(w, deadline),
        resource_of(s.from_ or "") or "",
        "",
        s.id or "",
    )
    ident = seal(cfg.seal_key, CALL, fields, user)
    enqueue(w, ("call", user, ident))
    # The payload goes to the user and is not needed again: the call keeps the addresses.
    kept = s._replace(payload=())
    size = footprint(kept)
    w.calls = w.calls.set((user, ident), Call(seq, kept, w.now, deadline, user, size))
    w.bytes_held += size
    send(
        w,
        Stanza("iq", s.type, ident, cfg.proxy_domain, user, s.payload, None, None, s.extra),
        0,
        deadline,
    )


def call_answered(w: Step, s: Stanza, user: str, measured: int = 0) -> None:
    """A user answers an IQ a target resource started: back to that resource. An answer to a
    call this process did not start (``_recovery``) goes back to the resource its id names."""
    key = (user, s.id or "")
    c = w.calls.get(key)
    if c is None:
        cfg = w.config
        opened = open_id(cfg.seal_key, CALL, key[1], user)
        if opened is None:
            w.count("dropped.unsolicited_reply")
        elif (why := owed_to_nobody(w, opened)) is not None:
            w.count(f"dropped.call_{why}")
        else:
            # The resource that started it (the bare JID, if that is what the server stamped).
            to = f"{cfg.target}/{opened.resource}" if opened.resource else cfg.target
            deliver(w, s, opened, f"{cfg.proxy_domain}/{user}", to, measured=measured)
        return
    r = c.request
    answer = Stanza("iq", s.type, r.id, r.to, r.from_, s.payload, s.error, None, s.extra)
    _answer(w, key, c, answer, "error" if s.type == "error" else "result", measured=measured)


def time_out_call(w: Step, key: tuple[str, str]) -> None:
    """The user did not answer in time: the resource gets `remote-server-timeout`."""
    c = w.calls[key]
    w.count("answered.call_timeout")
    _answer(w, key, c, error_reply(c.request, TIMEOUT), "timeout")


def shut_down_call(w: Step, key: tuple[str, str]) -> None:
    """The drain is over and the user has not answered: the resource gets
    `service-unavailable` (wait)."""
    c = w.calls[key]
    w.count("answered.shutdown")
    _answer(w, key, c, error_reply(c.request, SHUTTING_DOWN), "shutdown")


def drop_calls_from(w: Step, gone: Iterable[str] | None) -> None:
    """Forget the calls started by a resource in ``gone`` (None: every resource): nobody is left
    to take the answer."""
    names = None if gone is None else frozenset(gone)
    orphans = sorted(
        (c.seq, key)
        for key, c in w.calls.items()
        if names is None or resource_of(c.request.from_ or "") in names
    )
    for _seq, key in orphans:
        c = w.calls[key]
        w.count("dropped.call_resource_gone")
        dequeue(w, c.seq)
        w.calls = w.calls.delete(key)
        w.bytes_held -= c.size
        w.out.append(ended("outbound", "resource_gone", c.since, w.now))


def _answer(
    w: Step, key: tuple[str, str], c: Call, answer: Stanza, outcome: str, *, measured: int = 0
) -> None:
    w.calls = w.calls.delete(key)
    w.bytes_held -= c.size
    dequeue(w, c.seq)
    send(w, answer, measured)
    w.out.append(ended("outbound", outcome, c.since, w.now))
