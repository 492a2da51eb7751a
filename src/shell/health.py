"""Whether the proxy can serve, read from the core's state: the answer of ``GET /healthz`` and
the status line systemd shows (``STATUS=``).

Healthy means a request sent now would reach a target resource: the component is connected,
the target approved the subscription (so the proxy knows who is online), and at least one
online resource is eligible (its name matches ``resource_pattern``; one cooling down after
failures still counts, since the core uses those when nothing else is left). Otherwise the
first reason that holds, in that order, after ``stopping`` (a drain has begun: new requests
are refused whatever else is true).
"""

from __future__ import annotations

from client_proxy.core import Link, ProxyState, Subscription

__all__ = ["REASONS", "health", "status_line"]

#: Every reason ``health`` can give, as ``/healthz`` says it.
REASONS = ("stopping", "link down", "subscription pending", "no eligible resource")


def health(state: ProxyState) -> str | None:
    """None when the proxy can serve; otherwise the one-line reason it cannot."""
    session = state.session
    if session.stop_at is not None:
        return "stopping"
    if session.link is not Link.UP:
        return "link down"
    if session.subscription is not Subscription.APPROVED:
        return "subscription pending"
    if not any(r.eligible for r in session.resources):
        return "no eligible resource"
    return None


def status_line(state: ProxyState) -> str:
    """What ``systemctl status`` shows: ready with the resources, or why not. It changes only
    when the session does (link, subscription, resources, a stop), never per request."""
    reason = health(state)
    resources = state.session.resources
    eligible = sum(1 for r in resources if r.eligible)
    online = f"{len(resources)} resource(s) online, {eligible} eligible"
    return f"{reason or 'ready'}: {online}"
