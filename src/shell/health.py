"""Whether the proxy can serve, read from the core's state: the answer of ``GET /healthz`` and
the status line systemd shows (``STATUS=``).

Healthy means a request sent now would reach a target resource: the component is connected,
the target approved the subscription (so the proxy knows who is online), and at least one
online resource is eligible (its name matches ``resource_pattern``; one cooling down after
failures still counts, since the core uses those when nothing else is left). Otherwise the
first reason that holds, in that order, after ``stopping`` (a drain has begun: new requests
are refused whatever else is true) and ``standby`` (the server refused the component with
`conflict` because another connection holds it, see the daemon's STANDBY_RETRY: this instance
serves nothing until that one goes, and a load balancer or an alert should see it as not
serving, while the operator sees that this is by design rather than a broken link).
"""

from __future__ import annotations

from .corelib import Link, ProxyState

__all__ = ["REASONS", "health", "status_line"]

#: Every reason ``health`` can give, as ``/healthz`` says it.
REASONS = ("stopping", "standby", "link down", "subscription pending", "no eligible resource")


def health(state: ProxyState, standby: bool = False) -> str | None:
    """None when the proxy can serve; otherwise the one-line reason it cannot. ``standby``: the
    daemon is standing by (a shell fact: the core only sees a link that is down)."""
    session = state.session
    if session.stop_at is not None:
        return "stopping"
    if standby:
        return "standby"
    if session.link is not Link.UP:
        return "link down"
    if not session.subscription.in_place:
        return "subscription pending"
    if not any(r.eligible for r in session.resources):
        return "no eligible resource"
    return None


def status_line(state: ProxyState, standby: bool = False) -> str:
    """What ``systemctl status`` shows: ready with the resources, or why not. It changes only
    when the session does (link, subscription, resources, a stop) or the daemon stands by or
    takes over, never per request."""
    reason = health(state, standby)
    resources = state.session.resources
    eligible = sum(1 for r in resources if r.eligible)
    online = f"{len(resources)} resource(s) online, {eligible} eligible"
    return f"{reason or 'ready'}: {online}"
