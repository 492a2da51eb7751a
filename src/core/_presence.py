"""The target's presence: the subscription's life cycle, which resources are online, and what
happens to the requests a resource held when it goes (``_machine`` lists the server facts this
relies on).

RFC 6121 §4.7.1: available presence (no type) adds a resource, `unavailable` removes it (a bare
`unavailable`, §4.3.2, says that none is online), and presence of type `error` clears them all.
"""

from __future__ import annotations

import re

from ._calls import drop_calls_from
from ._jid import resource_of
from ._link import send
from ._outputs import LogLevel
from ._requests import redispatch, refuse_parked, reroute
from ._routing import candidates
from ._stanzas import Stanza
from ._state import MAX_RESOURCES, Step, Subscription, TargetResource

__all__ = ["target_presence"]

#: An xs:integer's lexical form, between XML whitespace (XML 1.0 §2.3: space, tab, CR, LF).
_XS_INTEGER = re.compile(r"[ \t\r\n]*([+-]?)([0-9]+)[ \t\r\n]*")

#: The subscription has been asked for and no `subscribed` has come yet.
_ASKED = frozenset({Subscription.REQUESTED, Subscription.UNANSWERED})


def target_presence(w: Step, s: Stanza, sender: str) -> None:
    """Presence from the target (its bare JID or one of its resources) to the proxy's domain."""
    cfg = w.config
    resource = resource_of(sender)
    kind = s.type
    if kind is None:
        if not resource:
            w.count("ignored.presence_bare")
            return
        _available(w, resource, _priority(s.priority))
        w.session = w.session._replace(synced=True)
        if w.session.subscription in _ASKED:
            # A resource's presence reaches the proxy's domain only once the subscription is in
            # place: an approval made on the server (ejabberd's add_rosteritem while the proxy
            # runs) brings every resource's presence and no `subscribed`. No probe yet: if this
            # presence came otherwise (a resource announcing itself again), a probe while the
            # subscription is still pending would make Prosody drop it; the `subscribed` that
            # then follows brings the probe.
            w.session = w.session._replace(subscription=Subscription.ANNOUNCED)
            w.log(
                "info",
                "subscription.approved",
                f"{cfg.target}/{resource} sent its presence: the subscription is in place",
            )
    elif kind == "unavailable":
        if resource:
            _unavailable(w, resource)
        else:
            _all_left(w, "target.offline", f"{cfg.target} has no resource online")
            _end_sync(w)
    elif kind == "error":
        _all_left(
            w,
            "target.presence_error",
            f"presence error from {cfg.target}: treating every resource as offline",
            level="warning",
        )
        _end_sync(w)
    elif kind == "subscribed":
        before = w.session.subscription
        if before is Subscription.APPROVED:
            w.count("ignored.subscribed_again")
            return
        w.session = w.session._replace(subscription=Subscription.APPROVED)
        # Only now: a probe while the subscription is pending makes Prosody drop it. (After
        # ANNOUNCED too: only the probe brings the resources that have said nothing since;
        # found by the whole-system properties on ejabberd's rules.)
        send(w, Stanza("presence", type="probe", from_=cfg.proxy_domain, to=cfg.target))
        if before is Subscription.ANNOUNCED:
            return  # the approval was logged with the presence
        w.log(
            "info",
            "subscription.approved",
            f"{cfg.target} approved the subscription; probing its resources",
        )
    elif kind in ("unsubscribed", "unsubscribe"):
        w.session = w.session._replace(subscription=Subscription.NONE)
        _all_left(
            w,
            "subscription.revoked",
            f"{cfg.target} sent {kind}: the proxy no longer sees its presence and cannot "
            f"route requests; approve the subscription from {cfg.proxy_domain} on the "
            "target account, then restart or reconnect client-proxy",
            level="error",
        )
        _end_sync(w)
    else:
        w.count("ignored.presence_from_target")


def _end_sync(w: Step) -> None:
    """The target's presence has told where it stands since the (re)connect: requests that find
    no resource from now on are refused at once, and so are those parked."""
    w.session = w.session._replace(synced=True)
    if w.session.parked:
        refuse_parked(w)


def _available(w: Step, name: str, priority: int) -> None:
    cfg = w.config
    resources = w.session.resources
    for i, r in enumerate(resources):
        if r.name == name:
            # New presence is a fresh session: back in rotation, failures forgotten.
            if r.cooling_until > w.now:
                w.log("info", "resource.back", f"{cfg.target}/{name} is back in rotation")
            fresh = TargetResource(name, priority, r.eligible)
            if fresh != r:
                resources = (*resources[:i], fresh, *resources[i + 1 :])
                w.session = w.session._replace(resources=resources)
            break
    else:
        if len(resources) >= MAX_RESOURCES:
            w.count("ignored.too_many_resources")
            w.log(
                "warning",
                "resource.ignored",
                f"{cfg.target}/{name} ignored: already tracking {MAX_RESOURCES}",
            )
            return
        pattern = cfg.resource_pattern
        eligible = pattern is None or re.fullmatch(pattern, name) is not None
        resources = tuple(
            sorted((*resources, TargetResource(name, priority, eligible)), key=lambda r: r.name)
        )
        w.session = w.session._replace(resources=resources)
        if eligible:
            w.log("info", "resource.online", f"{cfg.target}/{name} is online")
        else:
            w.log(
                "info",
                "resource.online",
                f"{cfg.target}/{name} is online (not taking traffic: its name does not "
                f"match resource_pattern {pattern!r})",
            )
    parked = w.session.parked
    if parked:
        ready = candidates(w)
        if ready:
            w.session = w.session._replace(parked=())
            for key in parked:
                redispatch(w, key, w.requests[key], ready)


def _unavailable(w: Step, name: str) -> None:
    resources = w.session.resources
    left = tuple(r for r in resources if r.name != name)
    if len(left) != len(resources):
        w.session = w.session._replace(resources=left)
        w.log("info", "resource.offline", f"{w.config.target}/{name} is offline")
    reroute(w, (name,))
    drop_calls_from(w, (name,))


def _all_left(w: Step, code: str, message: str, level: LogLevel = "info") -> None:
    w.session = w.session._replace(resources=())
    w.log(level, code, message)
    reroute(w, None)
    drop_calls_from(w, None)


def _priority(text: object) -> int:
    """RFC 6121 §4.7.2.3: an integer from -128 to +127, 0 when absent; bad values count as 0.

    Typed ``object``: a transport may hand over what its XML library gave (an int, bytes...)."""
    if isinstance(text, bool):
        return 0
    if isinstance(text, int):
        value = text
    elif isinstance(text, str):
        # XML Schema's integer (the type of <priority/>): ASCII digits with an optional sign,
        # between XML whitespace. int() alone would also take "1_0", other scripts' digits and
        # Unicode spaces (found by the property tests).
        match = _XS_INTEGER.fullmatch(text)
        if match is None:
            return 0
        sign, digits = match.groups()
        digits = digits.lstrip("0")
        # Beyond the range anyway; and int() refuses strings of over 4,300 digits.
        value = int(digits or "0") if len(digits) <= 4 else 10_000
        if sign == "-":
            value = -value
    else:
        return 0
    return max(-128, min(127, value))
