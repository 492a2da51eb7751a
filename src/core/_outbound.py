"""The other direction: IQs a target resource starts towards users (*calls*), and messages both
ways, with their errors routed back."""

from __future__ import annotations

from ._jat import decode_requester, encode_requester, translation_problem
from ._jid import bare
from ._presence import _Presence
from ._routing import next_random
from ._stanzas import Stanza, StanzaError
from ._state import Call, MessageRoute, queue_key
from ._step_base import (
    _NO_RESOURCE,
    _NOT_A_USER,
    _NOT_PROXIED,
    _SHUTTING_DOWN,
    _TOO_MANY,
    _rendezvous,
)

__all__: list[str] = []


class _Outbound(_Presence):
    __slots__ = ()

    def user_address(self, s: Stanza) -> str | None:
        """The user a stanza from the target is addressed to, or None (then refused)."""
        user = decode_requester(self.config.proxy_domain, s.to or "")
        if user is None or translation_problem(user) is not None:
            self.refuse(s, _NOT_A_USER, "refused.not_a_user")
            return None
        return user

    def call(self, s: Stanza) -> None:
        """A target resource (``s.from_``, where the answer will go) starts an IQ towards a
        user."""
        cfg = self.config
        if not cfg.outbound_iq:
            self.refuse(s, _NOT_PROXIED, "refused.target_initiated")
            return
        if self.stop_at is not None:
            self.refuse(s, _SHUTTING_DOWN, "refused.shutting_down")
            return
        user = self.user_address(s)
        if user is None:
            return
        if len(self.calls) >= cfg.max_outstanding:
            self.refuse(s, _TOO_MANY, "refused.limit_calls")
            return
        seq = self.next_seq
        self.next_seq = seq + 1
        # An id of the proxy's own: unique (seq), and not guessable across restarts (random).
        value, self.rng = next_random(self.rng)
        ident = f"cp-{seq:x}-{value:016x}"
        self.calls = self.calls.set(
            (user, ident), Call(seq, s, self.now + cfg.request_timeout, user)
        )
        self.queue = self.queue.set(queue_key(seq), ("call", user, ident))
        self.send(
            Stanza("iq", s.type, ident, cfg.proxy_domain, user, s.payload, None, None, s.extra)
        )

    def call_answered(self, s: Stanza, user: str) -> None:
        """A user answers an IQ a target resource started."""
        key = (user, s.id or "")
        c = self.calls.get(key)
        if c is None:
            self.count("dropped.unsolicited_reply")
            return
        r = c.request
        self.answer_call(
            key, c, Stanza("iq", s.type, r.id, r.to, r.from_, s.payload, s.error, None, s.extra)
        )

    def message_to_target(self, s: Stanza, sender: str) -> None:
        """A user's message to the service: to the same resource for the same user."""
        cfg = self.config
        if not cfg.messages:
            self.refuse(s, _NOT_PROXIED, "refused.message")
            return
        if s.type == "error":
            self.message_error_from_user(s, sender)
            return
        if not self.admit(s, sender):
            return
        problem = translation_problem(sender)
        if problem is not None:
            self.refuse(
                s, StanzaError.build("modify", "not-acceptable", problem), "refused.untranslatable"
            )
            return
        candidates = self.candidates()
        if not candidates:
            if s.type == "headline":
                # RFC 6121 §8.5.2.1.1: a headline to nobody is dropped silently.
                self.count("dropped.headline_no_resource")
            else:
                self.refuse(s, _NO_RESOURCE, "refused.no_resource")
            return
        resource = _rendezvous(candidates, bare(sender)).name
        self.send(
            Stanza(
                "message",
                s.type,
                s.id,
                encode_requester(cfg.proxy_domain, sender),
                f"{cfg.target}/{resource}",
                s.payload,
                None,
                None,
                s.extra,
            )
        )

    def message_error_from_user(self, s: Stanza, user: str) -> None:
        """An error for a message the target sent to ``user``: back to the resource that sent
        it, if the message is still remembered."""
        key = (user, s.id or "")
        route = self.routes.get(key)
        if route is None:
            self.count("dropped.message_error_unmatched")
            return
        self.routes = self.routes.delete(key)
        self.queue = self.queue.delete(queue_key(route.seq))
        self.send(
            Stanza(
                "message",
                "error",
                s.id,
                encode_requester(self.config.proxy_domain, user),
                route.resource,
                s.payload,
                s.error,
                None,
                s.extra,
            )
        )

    def message_from_target(self, s: Stanza, resource: str) -> None:
        """A target resource's message to `proxy-domain/<user>`: to the user, from the proxy."""
        cfg = self.config
        if not cfg.messages:
            self.refuse(s, _NOT_PROXIED, "refused.message")
            return
        user = self.user_address(s)
        if user is None:
            return
        self.send(
            Stanza(
                "message", s.type, s.id, cfg.proxy_domain, user, s.payload, s.error, None, s.extra
            )
        )
        if s.type == "error" or not s.id:
            return
        key = (user, s.id)
        old = self.routes.get(key)
        if old is not None:
            self.queue = self.queue.delete(queue_key(old.seq))
        elif len(self.routes) >= cfg.max_outstanding:
            self.count("dropped.message_route_full")
            return
        seq = self.next_seq
        self.next_seq = seq + 1
        self.routes = self.routes.set(
            key, MessageRoute(seq, self.now + cfg.request_timeout, resource)
        )
        self.queue = self.queue.set(queue_key(seq), ("msg", user, s.id))
