"""An implementing client for client-proxy: a plain XMPP account serving a component address.

client-proxy owns the public address (say `proxy.example.org`). It subscribes to this account's
presence and forwards every IQ request sent to the public address to one online resource of this
account, rewriting the sender (Jabber Address Translation)::

    user  -> proxy  : <iq type='get' id='1' to='proxy.example.org' from='user@example.org/abc'>
    proxy -> us     : <iq type='get' id='1' to='svc@example.org/w1'
                          from='proxy.example.org/user@example.org/abc'>
    us    -> proxy  : <iq type='result' id='1' to='proxy.example.org/user@example.org/abc'>
    proxy -> user   : <iq type='result' id='1' to='user@example.org/abc' from='proxy.example.org'>

So a service written as a client has three things to do, all shown below:

1. approve the proxy's presence subscription (once; the server remembers it);
2. answer each IQ by replying to its `from`, keeping its `id` (slixmpp's ``iq.reply()`` does);
3. read who is really asking from the resource part of `from`: everything after the first `/`
   of `proxy.example.org/user@example.org/abc` is the requester's full JID.

Run several copies with different resources for load sharing and failover: client-proxy picks one
online resource per request and retries a `get` on another if this one goes away mid-request.

This one answers XEP-0199 ping, XEP-0092 software version, and a toy `urn:example:echo` query
that echoes its `<text>` and says who asked::

    python examples/implementing_client.py --jid svc@example.org/w1 --proxy proxy.example.org
    # the password comes from $SERVICE_PASSWORD (or --password)

Against the throwaway test server (plaintext on loopback) add ``--server 127.0.0.1:PORT
--plaintext``. Needs only slixmpp.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import xml.etree.ElementTree as ET
from typing import Any

from slixmpp import JID, ClientXMPP
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

log = logging.getLogger("implementing_client")

PING_NS = "urn:xmpp:ping"
VERSION_NS = "jabber:iq:version"
ECHO_NS = "urn:example:echo"


def requester_of(sender: JID, proxy_domain: str) -> str | None:
    """The requester's full JID carried in a translated `from`, or None if the IQ did not come
    through the proxy. `proxy.example.org/user@example.org/abc` -> `user@example.org/abc`."""
    if sender.user or sender.domain != proxy_domain or not sender.resource:
        return None
    return str(sender.resource)


class ProxiedService(ClientXMPP):  # type: ignore[misc]
    """A slixmpp client that serves requests forwarded by client-proxy for `proxy_domain`."""

    def __init__(self, jid: str, password: str, proxy_domain: str) -> None:
        super().__init__(jid, password)
        self.proxy_domain = proxy_domain
        self.stopping = False
        # 1. Subscription requests are decided below, not by slixmpp's defaults (which would
        #    approve anybody and subscribe back).
        self.roster.auto_authorize = None
        self.roster.auto_subscribe = False
        self.add_event_handler("roster_subscription_request", self.on_subscription_request)
        self.add_event_handler("session_start", self.on_session_start)
        self.add_event_handler("disconnected", self.on_disconnected)
        self.add_event_handler("failed_all_auth", self.on_failed_auth)
        # 2. One handler per kind of request, matched on the payload's namespace.
        for name, payload, handler in (
            ("ping", f"{{{PING_NS}}}ping", self.on_ping),
            ("version", f"{{{VERSION_NS}}}query", self.on_version),
            ("echo", f"{{{ECHO_NS}}}query", self.on_echo),
        ):
            self.register_handler(
                Callback(name, MatchXPath(f"{{jabber:client}}iq/{payload}"), handler)
            )

    async def on_session_start(self, _event: Any) -> None:
        await self.get_roster()
        self.send_presence()  # available: client-proxy now counts this resource as online
        log.info("online as %s, serving %s", self.boundjid, self.proxy_domain)

    def on_subscription_request(self, presence: Any) -> None:
        asker = presence["from"].bare
        if asker == self.proxy_domain:
            self.send_presence(pto=asker, ptype="subscribed")
            log.info("approved the subscription of %s", asker)
        else:
            self.send_presence(pto=asker, ptype="unsubscribed")
            log.info("refused the subscription of %s", asker)

    def on_failed_auth(self, _event: Any) -> None:
        log.error("%s: authentication failed", self.boundjid.bare)
        self.stopping = True

    def on_disconnected(self, _reason: Any) -> None:
        if not self.stopping:
            log.warning("disconnected; reconnecting in 2 s")
            asyncio.get_running_loop().call_later(2, self.connect, *self.address)

    # -- requests --------------------------------------------------------------------------------

    def accept(self, iq: Any) -> str | None:
        """The requester of a proxied get/set; anything else is refused here and gets None."""
        if iq["type"] not in ("get", "set"):
            return None
        requester = requester_of(iq["from"], self.proxy_domain)
        if requester is None:
            # Only serve what comes through the proxy (it enforces deadlines and limits).
            self.send_error(iq, "forbidden", "auth")
        return requester

    def on_ping(self, iq: Any) -> None:
        if (requester := self.accept(iq)) is not None:
            log.info("ping from %s", requester)
            iq.reply(clear=True).send()

    def on_version(self, iq: Any) -> None:
        if (requester := self.accept(iq)) is None:
            return
        if iq["type"] != "get":
            self.send_error(iq, "bad-request", "modify")
            return
        log.info("version query from %s", requester)
        reply = iq.reply(clear=True)
        query = ET.SubElement(reply.xml, f"{{{VERSION_NS}}}query")
        ET.SubElement(query, f"{{{VERSION_NS}}}name").text = "client-proxy example service"
        ET.SubElement(query, f"{{{VERSION_NS}}}version").text = "1.0"
        reply.send()

    def on_echo(self, iq: Any) -> None:
        if (requester := self.accept(iq)) is None:
            return
        text = iq.xml.findtext(f"{{{ECHO_NS}}}query/{{{ECHO_NS}}}text") or ""
        log.info("echo %r for %s", text, requester)
        reply = iq.reply(clear=True)
        query = ET.SubElement(reply.xml, f"{{{ECHO_NS}}}query")
        ET.SubElement(query, f"{{{ECHO_NS}}}text").text = text
        ET.SubElement(query, f"{{{ECHO_NS}}}requester").text = requester
        reply.send()

    def send_error(self, iq: Any, condition: str, etype: str) -> None:
        reply = iq.reply(clear=True)
        reply["type"] = "error"
        reply["error"]["condition"] = condition
        reply["error"]["type"] = etype
        reply.send()

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self, host: str | None, port: int | None, plaintext: bool) -> None:
        if plaintext:  # loopback test servers only: no TLS, SASL over the clear connection
            self.enable_direct_tls = False
            self.enable_starttls = False
            self.enable_plaintext = True
            self.plugin["feature_mechanisms"].unencrypted_scram = True
            self.plugin["feature_mechanisms"].unencrypted_plain = True
        self.address = (host, port) if host and port else (None, None)
        self.connect(*self.address)

    async def stop(self) -> None:
        """Go offline cleanly: client-proxy retries this resource's outstanding gets elsewhere."""
        self.stopping = True
        self.send_presence(ptype="unavailable")
        await self.disconnect()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--jid", required=True, help="this account with a resource: svc@host/w1")
    parser.add_argument("--password", default=os.environ.get("SERVICE_PASSWORD"))
    parser.add_argument("--proxy", required=True, help="client-proxy's domain: proxy.host")
    parser.add_argument("--server", help="host:port to connect to (default: DNS SRV lookup)")
    parser.add_argument("--plaintext", action="store_true", help="no TLS (loopback tests only)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    if not args.password:
        parser.error("give --password or set $SERVICE_PASSWORD")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    host, port = None, None
    if args.server:
        host, _, port_text = args.server.rpartition(":")
        port = int(port_text)

    service = ProxiedService(args.jid, args.password, args.proxy)
    stop = asyncio.Event()
    service.add_event_handler("failed_all_auth", lambda _event: stop.set())
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    service.start(host, port, args.plaintext)
    await stop.wait()
    log.info("stopping")
    await service.stop()


if __name__ == "__main__":
    asyncio.run(main())
