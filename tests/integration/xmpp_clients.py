"""Real slixmpp clients for the integration tests: a requester that sends IQs to the proxy and
records every IQ it gets back, and a target resource that approves the proxy's subscription and
answers (or holds, or refuses) what the proxy forwards to it.

Both talk plaintext to the throwaway server (Prosody or ejabberd) on loopback; every wait here
has a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from client_proxy.core._seal import original_of
from slixmpp import ClientXMPP
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

__all__ = ["ECHO_NS", "IqRecord", "Requester", "TargetResource", "echo_payload", "serialize"]

ECHO_NS = "urn:example:echo"
STANZAS_NS = "urn:ietf:params:xml:ns:xmpp-stanzas"
CLIENT_NS = "jabber:client"

_ids = itertools.count(1)


def serialize(element: ET.Element) -> str:
    """One canonical text form for an XML element, so payloads compare across clients."""
    return ET.canonicalize(ET.tostring(element, encoding="unicode"))


def echo_payload(text: str) -> str:
    """A small custom payload: `<query xmlns='urn:example:echo'><text>…</text></query>`."""
    query = ET.Element(f"{{{ECHO_NS}}}query")
    ET.SubElement(query, f"{{{ECHO_NS}}}text").text = text
    return ET.tostring(query, encoding="unicode")


@dataclass(frozen=True)
class IqRecord:
    """One IQ as a client received it: addresses and id exactly as on the wire."""

    type: str
    id: str
    from_: str
    to: str
    #: The child elements other than <error>, canonicalised.
    payload: tuple[str, ...]
    error_type: str | None
    error_condition: str | None
    at: float

    @property
    def original(self) -> str:
        """The requester's id, for a request the proxy forwarded: it goes out with an id of its
        own that carries the requester's (sealed, ``client_proxy.core._seal``)."""
        original = original_of(self.id)
        return self.id if original is None else original

    @staticmethod
    def of(xml: ET.Element) -> IqRecord:
        payload: list[str] = []
        error_type = error_condition = None
        for child in xml:
            if child.tag == f"{{{CLIENT_NS}}}error":
                error_type = child.get("type")
                for cond in child:
                    if cond.tag.startswith(f"{{{STANZAS_NS}}}") and not cond.tag.endswith("}text"):
                        error_condition = cond.tag.split("}", 1)[1]
            else:
                payload.append(serialize(child))
        return IqRecord(
            type=xml.get("type", ""),
            id=xml.get("id", ""),
            from_=xml.get("from", ""),
            to=xml.get("to", ""),
            payload=tuple(payload),
            error_type=error_type,
            error_condition=error_condition,
            at=time.monotonic(),
        )


class _Client(ClientXMPP):  # type: ignore[misc]
    """A plaintext slixmpp client that records IQs once its session has started."""

    def __init__(self, jid: str, password: str, host: str, port: int) -> None:
        super().__init__(jid, password)
        self.address = (host, port)
        # Plaintext on loopback: no TLS of any kind, PLAIN/SCRAM over the clear connection.
        self.enable_direct_tls = False
        self.enable_starttls = False
        self.enable_plaintext = True
        self.plugin["feature_mechanisms"].unencrypted_scram = True
        self.plugin["feature_mechanisms"].unencrypted_plain = True
        # Subscriptions are handled explicitly, the way a user would.
        self.roster.auto_authorize = None
        self.roster.auto_subscribe = False
        self.iqs: list[IqRecord] = []
        #: Every <message> received once the session started, as text.
        self.messages: list[str] = []
        self.recording = False
        #: The <priority/> of the initial presence (RFC 6121 §4.7.2.3); None: none sent.
        self.priority: int | None = None
        self._changed = asyncio.Event()
        self._session: asyncio.Future[None] | None = None
        self.add_event_handler("session_start", self._on_session_start)
        self.add_event_handler("failed_auth", self._on_failed_auth)
        self.register_handler(Callback("record iq", MatchXPath(f"{{{CLIENT_NS}}}iq"), self._on_iq))
        self.register_handler(
            Callback("record message", MatchXPath(f"{{{CLIENT_NS}}}message"), self._on_message)
        )

    async def start(self, timeout: float = 10.0) -> None:
        """Connect, log in, fetch the roster, send initial presence."""
        self._session = asyncio.get_running_loop().create_future()
        self.connect(*self.address)
        try:
            await asyncio.wait_for(asyncio.shield(self._session), timeout)
        except TimeoutError:
            self.abort()
            raise TimeoutError(f"{self.boundjid} did not log in within {timeout} s") from None

    async def _on_session_start(self, _event: Any) -> None:
        await self.get_roster(timeout=10)
        self.send_presence(ppriority=self.priority)
        self.recording = True
        if self._session is not None and not self._session.done():
            self._session.set_result(None)

    def _on_failed_auth(self, _event: Any) -> None:
        if self._session is not None and not self._session.done():
            self._session.set_exception(RuntimeError(f"{self.boundjid}: authentication failed"))

    def _on_iq(self, iq: Any) -> None:
        if not self.recording:
            return
        self.iqs.append(IqRecord.of(iq.xml))
        self._notify()
        self.on_iq(iq)

    def on_iq(self, iq: Any) -> None:
        """What to do with a recorded IQ (subclasses)."""

    def _on_message(self, message: Any) -> None:
        if self.recording:
            self.messages.append(ET.tostring(message.xml, encoding="unicode"))
            self._notify()

    def _notify(self) -> None:
        self._changed.set()

    async def wait_condition(self, predicate: Any, timeout: float, what: str) -> None:
        """Wait until `predicate()` is true, or raise TimeoutError naming `what`."""
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"{self.boundjid}: timed out after {timeout} s waiting for {what}"
                )
            self._changed.clear()
            if predicate():
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.2))

    async def stop(self, timeout: float = 5.0) -> None:
        """Log out gracefully: unavailable presence (slixmpp's disconnect sends `</stream>`, and
        the server broadcasts unavailable), then wait for the socket to close."""
        self.recording = False
        if self.transport is None:
            return
        self.send_presence(ptype="unavailable")
        await asyncio.wait_for(self.disconnect(wait=timeout), timeout + 1)

    def kill(self) -> None:
        """Abruptly close the TCP connection: no unavailable presence, no `</stream>`."""
        self.recording = False
        self.abort()


class Requester(_Client):
    """A user that sends IQs to the proxy and records every IQ it receives in `iqs`."""

    def __init__(self, jid: str, password: str, host: str, port: int) -> None:
        super().__init__(jid, password, host, port)
        self.sent: dict[str, tuple[str, str]] = {}

    def request(
        self,
        to: str,
        *,
        type: Literal["get", "set"] = "get",
        id: str | None = None,
        payload: str | None = None,
    ) -> str:
        """Send one IQ (raw: no slixmpp reply matching) and return its id."""
        iq_id = id or f"req-{next(_ids)}"
        iq = self.make_iq(id=iq_id, ito=to, itype=type)
        iq.append(ET.fromstring(payload if payload is not None else echo_payload(iq_id)))
        self.sent[iq_id] = (to, type)
        self.send(iq)
        return iq_id

    def replies(self, iq_id: str) -> list[IqRecord]:
        return [r for r in self.iqs if r.id == iq_id]

    async def reply(self, iq_id: str, timeout: float = 10.0) -> IqRecord:
        """The first reply with this id (raises TimeoutError if none comes in `timeout`)."""
        await self.wait_condition(lambda: self.replies(iq_id), timeout, f"a reply to {iq_id!r}")
        return self.replies(iq_id)[0]

    async def all_replies(self, ids: Iterable[str], timeout: float = 10.0) -> dict[str, IqRecord]:
        ids = list(ids)
        await self.wait_condition(
            lambda: all(self.replies(i) for i in ids),
            timeout,
            f"replies to {len(ids)} requests "
            f"({sum(1 for i in ids if not self.replies(i))} missing)",
        )
        return {i: self.replies(i)[0] for i in ids}

    def unsolicited(self) -> list[IqRecord]:
        """IQs received that answer nothing this client asked, or answer it a second time."""
        seen: set[str] = set()
        extra = []
        for record in self.iqs:
            if record.id not in self.sent or record.id in seen or record.type in ("get", "set"):
                extra.append(record)
            seen.add(record.id)
        return extra


Mode = Literal["echo", "hold", "error"]


class TargetResource(_Client):
    """One resource of the implementing client (the target account).

    Approves a `subscribe` from `proxy_domain` (unless `approve` is false: then such requests
    are only recorded in `subscribe_requests`, for a test where the operator approves on the
    server). Every IQ get/set it receives is recorded in
    `iqs` (and in `requests`) and then, by `mode`: `echo` answers a result carrying the request's
    payload (after `delay` seconds), `hold` keeps it in `held` for the test to answer later with
    `answer()`, `error` answers `item-not-found` (cancel).
    """

    def __init__(
        self,
        jid: str,
        password: str,
        host: str,
        port: int,
        *,
        proxy_domain: str,
        mode: Mode = "echo",
        delay: float = 0.0,
        priority: int | None = None,
        approve: bool = True,
    ) -> None:
        super().__init__(jid, password, host, port)
        self.priority = priority
        self.proxy_domain = proxy_domain
        self.approve = approve
        #: Every `subscribe` from the proxy's domain this resource received.
        self.subscribe_requests: list[str] = []
        self.mode: Mode = mode
        self.delay = delay
        self.held: dict[str, Any] = {}
        self.approved: list[str] = []
        self.add_event_handler("roster_subscription_request", self._on_subscribe)

    @property
    def resource(self) -> str:
        return str(self.boundjid.resource)

    def _from_proxy(self, sender: str) -> bool:
        return sender.split("/", 1)[0] == self.proxy_domain

    @property
    def requests(self) -> list[IqRecord]:
        """The IQ get/set this resource received from the proxy (not the server's roster pushes)."""
        return [r for r in self.iqs if r.type in ("get", "set") and self._from_proxy(r.from_)]

    def _on_subscribe(self, presence: Any) -> None:
        asker = presence["from"].bare
        if asker != self.proxy_domain:
            return
        self.subscribe_requests.append(asker)
        if self.approve:
            self.send_presence(pto=asker, ptype="subscribed")
            self.approved.append(asker)
        self._notify()

    def on_iq(self, iq: Any) -> None:
        if iq["type"] not in ("get", "set") or not self._from_proxy(str(iq["from"])):
            return
        if self.mode == "hold":
            # Held by the requester's id, which the test knows; answered with the one it came
            # with (iq.reply keeps it).
            self.held[IqRecord.of(iq.xml).original] = iq
        elif self.mode == "error":
            self._send_later(self.error_for(iq))
        else:
            self._send_later(iq.reply(clear=False))

    def error_for(self, iq: Any, condition: str = "item-not-found", etype: str = "cancel") -> Any:
        reply = iq.reply(clear=True)
        reply["type"] = "error"
        reply["error"]["type"] = etype
        reply["error"]["condition"] = condition
        return reply

    def _send_later(self, stanza: Any) -> None:
        if self.delay > 0:
            asyncio.get_running_loop().call_later(self.delay, self._send_if_connected, stanza)
        else:
            stanza.send()

    def _send_if_connected(self, stanza: Any) -> None:
        if self.transport is not None:
            stanza.send()

    def answer(self, iq_id: str, payload: str | None = None) -> None:
        """Answer a held request with a result (the request's own payload unless given)."""
        iq = self.held.pop(iq_id)
        reply = iq.reply(clear=payload is not None)
        if payload is not None:
            reply.append(ET.fromstring(payload))
        reply.send()

    def send_message_to(self, to: str, body: str) -> None:
        """Send a chat message (for forged traffic)."""
        self.send_message(mto=to, mbody=body, mtype="chat")

    def send_raw_iq(self, *, to: str, id: str, type: str = "result", payload: str = "") -> None:
        """Send an IQ built by hand (for forged replies)."""
        iq = self.make_iq(id=id, ito=to, itype=type)
        if payload:
            iq.append(ET.fromstring(payload))
        self.send(iq)

    async def wait_requests(self, count: int, timeout: float = 10.0) -> list[IqRecord]:
        await self.wait_condition(
            lambda: len(self.requests) >= count, timeout, f"{count} forwarded request(s)"
        )
        return self.requests
