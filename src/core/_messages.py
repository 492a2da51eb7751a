"""Messages, both ways. A user's message to the service goes to one target resource, the same
one for the same user while it is online (rendezvous hashing on the user's bare JID); a target
resource's message to `proxy-domain/<user>` goes to the user from the proxy's domain, and an
error the user's side bounces for it is routed back to the resource that sent it (a *route*,
remembered until ``request_timeout``).
"""

from __future__ import annotations

from ._calls import user_address
from ._errors import NO_RESOURCE, NOT_PROXIED, not_acceptable, refuse
from ._jat import encode_requester, translation_problem
from ._jid import bare
from ._link import send
from ._policy import admit
from ._queue import dequeue, enqueue
from ._routing import candidates, rendezvous
from ._stanzas import Stanza
from ._state import MessageRoute, Step

__all__ = ["forget_route", "message_from_target", "message_to_target"]


def message_to_target(w: Step, s: Stanza, sender: str) -> None:
    """A user's message to the service: to the same resource for the same user."""
    cfg = w.config
    if not cfg.messages:
        refuse(w, s, NOT_PROXIED, "refused.message")
        return
    if s.type == "error":
        _error_from_user(w, s, sender)
        return
    if not admit(w, s, sender, bare(sender)):
        return
    problem = translation_problem(sender)
    if problem is not None:
        refuse(w, s, not_acceptable(problem), "refused.untranslatable")
        return
    ready = candidates(w)
    if not ready:
        if s.type == "headline":
            # RFC 6121 §8.5.2.1.1: a headline to nobody is dropped silently.
            w.count("dropped.headline_no_resource")
        else:
            refuse(w, s, NO_RESOURCE, "refused.no_resource")
        return
    resource = rendezvous(ready, bare(sender)).name
    send(
        w,
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
        ),
    )


def message_from_target(w: Step, s: Stanza, resource: str) -> None:
    """A target resource's message to `proxy-domain/<user>`: to the user, from the proxy."""
    cfg = w.config
    if not cfg.messages:
        refuse(w, s, NOT_PROXIED, "refused.message")
        return
    user = user_address(w, s)
    if user is None:
        return
    send(
        w,
        Stanza("message", s.type, s.id, cfg.proxy_domain, user, s.payload, s.error, None, s.extra),
    )
    if s.type == "error" or not s.id:
        return
    key = (user, s.id)
    old = w.routes.get(key)
    if old is not None:
        dequeue(w, old.seq)
    elif len(w.routes) >= cfg.max_outstanding:
        w.count("dropped.message_route_full")
        return
    seq = enqueue(w, ("msg", user, s.id))
    w.routes = w.routes.set(key, MessageRoute(seq, w.now, w.now + cfg.request_timeout, resource))


def forget_route(w: Step, key: tuple[str, str]) -> None:
    """A message's way back has expired."""
    dequeue(w, w.routes[key].seq)
    w.routes = w.routes.delete(key)


def _error_from_user(w: Step, s: Stanza, user: str) -> None:
    """An error for a message the target sent to ``user``: back to the resource that sent it,
    if the message is still remembered."""
    key = (user, s.id or "")
    route = w.routes.get(key)
    if route is None:
        w.count("dropped.message_error_unmatched")
        return
    forget_route(w, key)
    send(
        w,
        Stanza(
            "message",
            "error",
            s.id,
            encode_requester(w.config.proxy_domain, user),
            route.resource,
            s.payload,
            s.error,
            None,
            s.extra,
        ),
    )
