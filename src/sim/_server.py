"""The simulated XMPP server: routes stanzas between client sessions and one external component.

It behaves like Prosody 0.12 or like ejabberd 23.01, as its :class:`ServerProfile` says, where
the proxy can tell the difference, and no further. Each rule names its source: an RFC section,
Prosody's own code (mod_presence, mod_component), or the server facts measured for this project
(DESIGN.md, "Server facts measured here"; docs/deploy.md, "The gap"), which win where they are
more precise. The rules measured to differ between the two servers are the profile's fields
(``self.profile``); every other rule is one for both, and says whether it was measured the same
on ejabberd or not measured there, in which case ejabberd keeps Prosody's rule.

What it leaves out, on purpose: rosters other than the target's entry for the proxy, s2s (every
domain but the component's is hosted here), offline storage, messages beyond plain delivery,
presence broadcast to the target's own other resources (the proxy never sees it), and stream
management (XEP-0198), which XEP-0114 components do not have.

Two modelling choices are neither server's, and say so where they are made. When the component
stream is cut, what the component had already written is read, and what the server had written
to the component is bounced as if the component had already gone; and the component notices the
cut at the same instant as the server. A real TCP cut can lose stanzas in flight both ways,
which no XEP-0114 component can detect (there are no acknowledgements), so no proxy could keep
"every request gets exactly one answer" through it; the simulation assumes the loss-free cut so
that the whole-system properties test the proxy, not TCP.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

# JID splitting is the core's own helper, shared within the project (not part of its API).
from client_proxy.core._jid import bare, domain_of, resource_of

from ._clock import Clock, Hop, Item, Stream
from ._profile import ServerProfile
from ._xml import DELAY_NS, Element, error_reply, presence

__all__ = ["Client", "ComponentEndpoint", "ComponentLink", "SimServer", "TargetSubscription"]

# Presence types that are about subscriptions, handled by the server (RFC 6121 §3).
_SUBSCRIPTION_TYPES = frozenset({"subscribe", "subscribed", "unsubscribe", "unsubscribed", "probe"})

#: The target's roster entry for the proxy's domain: nothing, a subscription request waiting for
#: the target's approval ("pending-in" in Prosody's rostermanager), or approved (subscription
#: "from": the proxy receives the target's presence).
TargetSubscription = Literal["none", "pending", "subscribed"]


class Client(Protocol):
    """A client at the other end of a c2s stream: it is handed what the server delivers."""

    def receive(self, stanza: Element) -> None: ...


class ComponentLink:
    """The component's handle on its stream: send stanzas, or close it (XEP-0114 §3)."""

    __slots__ = ("_server", "_stream")

    def __init__(self, server: SimServer, stream: Stream) -> None:
        self._server = server
        self._stream = stream

    def send(self, stanza: Element) -> None:
        self._stream.send(stanza)

    def close(self) -> None:
        """Close the stream (`</stream:stream>`). The server reads what was sent before it."""
        self._server.cut_component(notify=False)


class ComponentEndpoint(Protocol):
    """Whatever sits at the component's end of the stream: in the simulation, a transport that
    drives client_proxy.core (:class:`~client_proxy.sim.CoreTransport`)."""

    def connected(self, link: ComponentLink) -> None:
        """The handshake succeeded (XEP-0114 §3): ``link`` sends on the new stream."""

    def disconnected(self) -> None:
        """The stream is gone."""

    def received(self, stanza: Element) -> None:
        """The server routed ``stanza`` to the component."""


@dataclass(eq=False)
class ClientSession:
    """A bound resource (RFC 6120 §7): its two streams and its last broadcast presence."""

    jid: str
    up: Stream = field(init=False)  # client -> server
    down: Stream = field(init=False)  # server -> client
    presence: Element | None = None  # None: not available (RFC 6121 §4.2)


@dataclass(eq=False)
class _ComponentSession:
    endpoint: ComponentEndpoint
    up: Stream = field(init=False)  # component -> server
    down: Stream = field(init=False)  # server -> component


class SimServer:
    """The server hosting the requesters and the target, with the proxy as its component."""

    def __init__(
        self,
        clock: Clock,
        *,
        proxy_domain: str,
        target: str,
        detect_delay: float,
        subscription: TargetSubscription,
        hops: list[Hop],
        profile: ServerProfile = ServerProfile.PROSODY,
    ) -> None:
        self.clock = clock
        self.profile = profile
        self.proxy_domain = proxy_domain
        self.target = target
        self.detect_delay = detect_delay
        self.subscription: TargetSubscription = subscription
        self.hops = hops
        self.sessions: dict[str, ClientSession] = {}
        self._component: _ComponentSession | None = None
        #: What a real server would have refused from the component (it closes the stream).
        self.violations: list[str] = []

    # -- c2s sessions --------------------------------------------------------------------------

    def bind(self, jid: str, client: Client, latency: float) -> ClientSession:
        """A client authenticates and binds ``jid`` (RFC 6120 §7)."""
        old = self.sessions.get(jid)
        if old is not None:
            # RFC 6120 §7.7.2.2, resource conflict: Prosody's default (`conflict_resolve =
            # "kick_old"`) ends the old session, which unbinds as below. Not measured on
            # ejabberd: Prosody's rule for both.
            self._unbind(old)
        session = ClientSession(jid)

        def from_client(item: Item) -> None:
            self._from_client(session, item)

        def to_client(item: Item) -> None:
            if item is not None:
                client.receive(item)

        session.up = Stream(
            self.clock, latency, src=jid, dst="server", receive=from_client, hops=self.hops
        )
        session.down = Stream(
            self.clock, latency, src="server", dst=jid, receive=to_client, hops=self.hops
        )
        self.sessions[jid] = session
        return session

    def session_died(self, jid: str) -> None:
        """The client behind ``jid`` is gone without a word (its network died). The server
        notices only ``detect_delay`` seconds later (a TCP timeout, or mod_pinger's); until then
        it keeps writing to the dead socket, and what it writes is lost."""
        session = self.sessions.get(jid)
        if session is None:
            return

        def notice() -> None:
            if self.sessions.get(jid) is session:
                self._unbind(session)

        self.clock.call_later(self.detect_delay, notice)

    def _unbind(self, session: ClientSession) -> None:
        del self.sessions[session.jid]
        session.up.cut()
        session.down.cut()
        if session.presence is not None:
            # RFC 6121 §4.5.2: a session that ends, gracefully or not, is announced unavailable
            # to the contacts (Prosody: the `resource-unbind` hook in mod_presence).
            session.presence = None
            self._announce(session.jid, presence("unavailable", from_=session.jid))

    def _from_client(self, session: ClientSession, item: Item) -> None:
        if self.sessions.get(session.jid) is not session:
            return  # the session was closed; nothing more is read from it
        if item is None:
            self._unbind(session)  # `</stream:stream>` (RFC 6120 §4.4)
            return
        # RFC 6120 §8.1.2.1: the server stamps the full JID of the sending session.
        stanza = item.with_attr("from", session.jid)
        to = stanza.get("to")
        kind = stanza.get("type")
        if stanza.name == "presence" and to is None:
            self._presence_broadcast(session, stanza)
        elif stanza.name == "presence" and kind in _SUBSCRIPTION_TYPES and to is not None:
            self._outbound_subscription(session, stanza, to)
        else:
            self.route(stanza)

    def _presence_broadcast(self, session: ClientSession, stanza: Element) -> None:
        kind = stanza.get("type")
        initial = session.presence is None and kind is None
        if kind is None:
            session.presence = stanza  # RFC 6121 §4.2.2 (initial), §4.4.2 (updates)
        elif kind == "unavailable":
            session.presence = None  # RFC 6121 §4.5.2
        else:
            return
        self._announce(session.jid, stanza)
        if initial and bare(session.jid) == self.target and self.subscription == "pending":
            # RFC 6121 §3.1.3: a pending request is delivered when the contact comes online
            # (Prosody resends `roster.pending` on initial presence). Not measured on ejabberd:
            # Prosody's rule for both.
            session.down.send(presence("subscribe", to=self.target, from_=self.proxy_domain))

    def _announce(self, jid: str, stanza: Element) -> None:
        """Send the presence of ``jid`` to its subscribers (RFC 6121 §4.4.2): of the target,
        the proxy's domain once the subscription is approved; nobody subscribes to users."""
        if bare(jid) == self.target and self.subscription == "subscribed":
            self.route(stanza.with_attr("to", self.proxy_domain))

    def _outbound_subscription(self, session: ClientSession, stanza: Element, to: str) -> None:
        # Prosody (mod_presence, handle_outbound_presence_subscriptions_and_probes) stamps the
        # bare JIDs on subscription stanzas.
        if (
            stanza.get("type") == "subscribed"
            and bare(session.jid) == self.target
            and bare(to) == self.proxy_domain
        ):
            if self.subscription == "pending":
                self.subscription = "subscribed"
            # RFC 6121 §3.1.5: route the approval, then the presence of each available resource.
            # Prosody does both even when nothing was pending. Not measured on ejabberd:
            # Prosody's rule for both.
            self.route(presence("subscribed", to=self.proxy_domain, from_=self.target))
            self._send_presences(self.proxy_domain, copies=1)
            return
        self.route(stanza.with_attr("from", bare(session.jid)).with_attr("to", bare(to)))

    # -- the component -------------------------------------------------------------------------

    @property
    def component_connected(self) -> bool:
        return self._component is not None

    def connect_component(self, endpoint: ComponentEndpoint, latency: float) -> None:
        """The component connects and completes the handshake (XEP-0114 §3)."""
        if self._component is not None:
            # Prosody refuses a second connection for the same domain with `conflict`; ejabberd
            # accepts it and splits the domain's stanzas between the two (DESIGN.md, measured).
            # A run has one proxy, and never opens a second connection.
            raise RuntimeError("the component is already connected")
        c = _ComponentSession(endpoint)

        def from_component(item: Item) -> None:
            if self._component is c:
                self._from_component(item)

        def to_component(item: Item) -> None:
            if item is not None and self._component is c:
                endpoint.received(item)

        c.up = Stream(
            self.clock, latency, src="proxy", dst="server", receive=from_component, hops=self.hops
        )
        c.down = Stream(
            self.clock, latency, src="server", dst="proxy", receive=to_component, hops=self.hops
        )
        self._component = c
        endpoint.connected(ComponentLink(self, c.up))

    def in_flight_from_component(self) -> tuple[Item, ...]:
        """What the component has sent that the server has not read yet."""
        return () if self._component is None else self._component.up.in_flight

    def cut_component(self, notify: bool = True) -> None:
        """The component stream ends (a fault, or the component closing it).

        Neither server's behaviour but the module's modelling choice (see the module docstring):
        the server reads what the component wrote before the cut, and bounces what it had
        written to the component as if the component were already gone."""
        c = self._component
        if c is None:
            return
        for sent, item in c.up.cut():
            if item is not None:
                self.hops.append(Hop(self.clock.now, "proxy", "server", item, sent))
                self._from_component(item)
        self._component = None
        for _sent, item in c.down.cut():
            if item is not None:
                self._bounce_not_connected(item)
        if notify:
            c.endpoint.disconnected()

    def _from_component(self, item: Item) -> None:
        if item is None:
            self.cut_component(notify=False)
            return
        stanza = item
        sender = stanza.get("from")
        # The three checks below are Prosody's (mod_component); not measured on ejabberd:
        # Prosody's rules for both.
        if sender is None:
            # Prosody (mod_component): "COMPAT: Strictly we shouldn't allow this".
            stanza = stanza.with_attr("from", self.proxy_domain)
        elif domain_of(sender) != self.proxy_domain:
            # Prosody (mod_component, validate_from_addresses): the stream is closed.
            self.violations.append(f"invalid-from: the component sent {stanza}")
            self.cut_component()
            return
        to = stanza.get("to")
        if to is None:
            # Prosody (mod_component): "Components MUST specify a 'to' address on stanzas".
            self.violations.append(f"bad-request: the component sent {stanza} without 'to'")
            self.route(error_reply(stanza, "modify", "bad-request"))
            return
        self.route(stanza)

    def _bounce_not_connected(self, stanza: Element) -> None:
        # Measured on both servers (docs/deploy.md, "The gap"): every stanza kind is bounced,
        # IQ requests, messages and presence, from users and from the target, except errors and
        # results, which are dropped without a word. The bounce is the profile's: Prosody's
        # `remote-server-timeout` with <not-connected/>, ejabberd's `forbidden` (s2s off).
        if stanza.get("type") not in ("error", "result"):
            self.route(self.profile.component_gone.reply(stanza))

    # -- the target's presence, as its contact the proxy asks for it ---------------------------

    def _inbound_subscription(self, stanza: Element) -> None:
        sender = stanza.get("from") or ""
        sender_bare = bare(sender)
        kind = stanza.get("type")
        if sender_bare != self.proxy_domain:
            return  # only the proxy's roster entry is modelled
        if kind == "probe":
            if self.subscription == "subscribed":
                # RFC 6121 §4.3.2, measured the same on both servers: one presence per available
                # resource, with a XEP-0203 <delay/>. None available: the profile's rule
                # (Prosody a bare `unavailable`, ejabberd nothing).
                if (
                    not self._send_presences(sender, copies=1, delayed=True)
                    and self.profile.unavailable_for_probe_with_nobody_online
                ):
                    self.route(presence("unavailable", to=sender, from_=self.target))
            elif self.subscription == "pending" and self.profile.probe_cancels_pending:
                # Measured on Prosody 0.12: the answer goes out as the target's own
                # `unsubscribed` (RFC 6121 §4.3.2), which also cancels the pending request: the
                # subscription is lost. On ejabberd: no answer, and the request survives.
                self.route(presence("unsubscribed", to=sender_bare, from_=self.target))
                self.subscription = "none"
            # Measured on both (tests/integration/test_presence_answers.py): with nothing
            # pending and no subscription, no answer at all.
        elif kind == "subscribe":
            if self.subscription == "subscribed":
                # Measured: `subscribed`, then on Prosody every resource's presence twice
                # (mod_presence: "Sending presence is not clearly stated in the RFC, but it
                # seems appropriate"), or a bare `unavailable` when no resource is available;
                # on ejabberd `subscribed` alone (resubscribe_copies 0).
                self.route(presence("subscribed", to=sender_bare, from_=self.target))
                copies = self.profile.resubscribe_copies
                if copies and not self._send_presences(sender_bare, copies=copies):
                    self.route(presence("unavailable", to=sender_bare, from_=self.target))
            else:
                # Measured: Prosody acknowledges with a bare `unavailable` (mod_presence:
                # "acknowledging receipt"), ejabberd answers nothing, whether the target is
                # online or not (the profile's acknowledges_subscribe). Then the server stores
                # the request and delivers it to the target's available resources once (RFC 6121
                # §3.1.3; measured on both: the target is asked).
                if self.profile.acknowledges_subscribe:
                    self.route(presence("unavailable", to=sender_bare, from_=self.target))
                if self.subscription == "none":
                    self.subscription = "pending"
                    request = presence("subscribe", to=self.target, from_=sender_bare)
                    for session in self._target_sessions():
                        if session.presence is not None:
                            session.down.send(request)
        # RFC 6121 §3: the other subscription types change nothing the proxy can observe here.

    def _target_sessions(self) -> list[ClientSession]:
        return [s for jid, s in self.sessions.items() if bare(jid) == self.target]

    def _send_presences(self, to: str, copies: int, delayed: bool = False) -> int:
        """Send the current presence of each available resource of the target to ``to``."""
        count = 0
        for session in self._target_sessions():
            if session.presence is None:
                continue
            count += 1
            stanza = session.presence.with_attr("to", to)
            if delayed:
                stamp = Element(
                    "delay",
                    (("xmlns", DELAY_NS), ("from", self.target), ("stamp", _stamp(self.clock.now))),
                )
                stanza = stanza.with_child(stamp)
            for _ in range(copies):
                self.route(stanza)
        return count

    def online(self) -> frozenset[str]:
        """The target's resources the server holds available presence for (its view of who is
        online: a session that died unnoticed still counts until the server notices)."""
        return frozenset(
            resource_of(s.jid) or "" for s in self._target_sessions() if s.presence is not None
        )

    # -- routing ------------------------------------------------------------------------------

    def route(self, stanza: Element) -> None:
        """Deliver ``stanza`` by its `to` (RFC 6120 §10; RFC 6121 §8.5 for local accounts)."""
        to = stanza.get("to")
        if to is None:
            return  # addressed to the server itself: nothing the simulation needs
        if domain_of(to) == self.proxy_domain:
            c = self._component
            if c is None:
                self._bounce_not_connected(stanza)
            else:
                c.down.send(stanza)
            return
        kind = stanza.get("type")
        if stanza.name == "presence" and kind in _SUBSCRIPTION_TYPES and bare(to) == self.target:
            self._inbound_subscription(stanza)
            return
        session = self.sessions.get(to)
        if resource_of(to) is None:
            # RFC 6121 §8.5.2: to a bare JID. Presence goes to the available resources; the
            # server answers an IQ request itself (RFC 6121 §8.5.2.1.3: service-unavailable
            # for anything it does not implement). Not measured on ejabberd: Prosody's rule,
            # and its shape of the error, for both.
            if stanza.name == "presence":
                for s in self.sessions.values():
                    if bare(s.jid) == to and s.presence is not None:
                        s.down.send(stanza)
            elif stanza.name == "iq" and kind in ("get", "set"):
                self.route(error_reply(stanza, "cancel", "service-unavailable"))
            return
        if session is not None:
            session.down.send(stanza)  # RFC 6121 §8.5.3.1: the resource is connected
        elif stanza.name == "iq" and kind in ("get", "set"):
            # RFC 6121 §8.5.3.2.3, measured on both: `service-unavailable` (cancel) from the
            # full JID, same id; ejabberd echoes the payload and adds a text (the profile's
            # session_gone). A result or error to a gone resource is silently dropped (not
            # measured on ejabberd: Prosody's rule for both).
            self.route(self.profile.session_gone.reply(stanza))
        # RFC 6121 §8.5.3.2: presence (and, here, messages) to a gone resource are dropped. Not
        # measured on ejabberd: Prosody's rule for both.


def _stamp(now: float) -> str:
    """A XEP-0082 timestamp for virtual time ``now`` (seconds after an arbitrary epoch)."""
    whole = int(now)
    return f"2024-01-01T00:{whole // 60 % 60:02d}:{whole % 60:02d}.{int(now % 1 * 1000):03d}Z"
