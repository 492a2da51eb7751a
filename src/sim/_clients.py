"""The scripted clients: requesters, and the target account's resources.

They are deliberately simple and deterministic: a requester only sends what its schedule says
and records what it gets; a target resource approves the proxy's subscription request and
answers each request it gets after a fixed delay (or never), echoing the request's payload so
that a misrouted answer is visible to the properties.
"""

from __future__ import annotations

from dataclasses import dataclass

from client_proxy.core._jid import bare
from client_proxy.core._seal import original_of

from ._clock import Clock
from ._schedule import Resource
from ._server import ClientSession
from ._xml import SIM_NS, Element, error_element, iq, presence

__all__ = [
    "FORGED",
    "Received",
    "Requester",
    "SentRequest",
    "TargetClient",
    "answer_payload",
    "query",
]


@dataclass(frozen=True, slots=True)
class SentRequest:
    """A request as its user sent it. ``serial`` numbers every request of a run; the request's
    payload carries it, and so does the target's answer."""

    serial: int
    at: float
    user: str
    to: str
    id: str
    type: str


@dataclass(frozen=True, slots=True)
class Received:
    """A stanza a client received, at virtual time ``at``; ``jid`` is the client's full JID."""

    at: float
    jid: str
    stanza: Element


def query(serial: int) -> Element:
    """The payload of request ``serial``."""
    return Element("query", (("xmlns", SIM_NS),), (str(serial),))


def answer_payload(text: str) -> Element:
    """The payload of the target's answer to a request whose query says ``text``."""
    return Element("answer", (("xmlns", SIM_NS),), (text,))


#: The text of a forged answer's payload.
FORGED = "forged"


class Requester:
    """A user's client session: sends the requests of the schedule, records everything."""

    def __init__(self, jid: str, clock: Clock) -> None:
        self.jid = jid
        self.clock = clock
        self.session: ClientSession | None = None
        self.sent: list[SentRequest] = []
        self.received: list[Received] = []

    def send_request(self, serial: int, to: str, id: str, type: str) -> None:
        assert self.session is not None
        self.sent.append(SentRequest(serial, self.clock.now, self.jid, to, id, type))
        self.session.up.send(iq(type, id, to=to, children=(query(serial),)))

    def receive(self, stanza: Element) -> None:
        self.received.append(Received(self.clock.now, self.jid, stanza))


class TargetClient:
    """One session of one resource of the target account."""

    def __init__(
        self, jid: str, script: Resource, clock: Clock, proxy_domain: str, approve_delay: float
    ) -> None:
        self.jid = jid
        self.script = script
        self.clock = clock
        self.proxy_domain = proxy_domain
        self.approve_delay = approve_delay
        self.session: ClientSession | None = None
        self.alive = True
        #: Requests received and not answered yet, by (from, id).
        self.holding: dict[tuple[str, str], Element] = {}
        self.received: list[Received] = []

    def _send(self, stanza: Element | None) -> None:
        if self.alive and self.session is not None:
            self.session.up.send(stanza)

    def log_in(self) -> None:
        children: tuple[Element | str, ...] = ()
        if self.script.priority is not None:
            children = (Element("priority", (), (str(self.script.priority),)),)
        self._send(presence(children=children))

    def send_presence_again(self) -> None:
        self.log_in()

    def log_out(self) -> None:
        """Unavailable presence, then `</stream:stream>` (RFC 6121 §4.5.1, RFC 6120 §4.4)."""
        self._send(presence("unavailable"))
        self._send(None)
        self.alive = False

    def die(self) -> None:
        self.alive = False

    def receive(self, stanza: Element) -> None:
        if not self.alive:
            return  # a closed or dead client reads nothing
        self.received.append(Received(self.clock.now, self.jid, stanza))
        kind = stanza.get("type")
        sender = stanza.get("from") or ""
        if stanza.name == "presence" and kind == "subscribe" and bare(sender) == self.proxy_domain:
            # The target approves the proxy (RFC 6121 §3.1.4), as its operator scripted.
            approval = presence("subscribed", to=bare(sender))
            self.clock.call_later(self.approve_delay, lambda: self._send(approval))
        elif stanza.name == "iq" and kind in ("get", "set"):
            key = (sender, stanza.get("id") or "")
            self.holding[key] = stanza
            delay = self.script.answer_after
            if delay is not None:
                self.clock.call_later(delay, lambda: self._answer(key, stanza))

    def _answer(self, key: tuple[str, str], request: Element) -> None:
        if not self.alive:
            return
        self.holding.pop(key, None)
        reply = self.reply_to(request)
        for _ in range(2 if self.script.twice else 1):
            self._send(reply)

    def reply_to(self, request: Element, text: str | None = None) -> Element:
        """This resource's answer to ``request`` (RFC 6120 §8.2.3: same id, to its sender)."""
        q = request.child("query", SIM_NS)
        body = answer_payload(text if text is not None else "" if q is None else q.text())
        if self.script.error is not None:
            return iq(
                "error",
                request.get("id") or "",
                to=request.get("from"),
                children=(error_element("cancel", self.script.error),),
            )
        return iq("result", request.get("id") or "", to=request.get("from"), children=(body,))

    def forge(self, translated: str, id: str, in_flight: tuple[Element, ...]) -> None:
        """Answer (requester ``translated``, ``id``) unasked: an early answer if this resource
        holds the request or it is on its way here, a forgery otherwise."""
        if not self.alive:
            return
        # The proxy seals the ids it forwards (client_proxy.core._seal): the request is the one
        # whose id carries ``id``.
        request = next(
            (
                self.holding.pop(key)
                for key in list(self.holding)
                if key[0] == translated and _original(key[1]) == id
            ),
            None,
        )
        if request is None:
            for stanza in in_flight:
                if (
                    stanza.name == "iq"
                    and stanza.get("from") == translated
                    and _original(stanza.get("id") or "") == id
                    and stanza.get("type") in ("get", "set")
                ):
                    request = stanza
        if request is not None:
            self._send(self.reply_to(request))
        else:
            forged = iq("result", id, to=translated, children=(answer_payload(FORGED),))
            self._send(forged)


def _original(ident: str) -> str:
    """The requester's id that a forwarded id carries (itself, if it is not sealed)."""
    original = original_of(ident)
    return ident if original is None else original
