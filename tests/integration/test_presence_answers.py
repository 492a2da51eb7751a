"""The server's own answers to a component's subscription presence, on each server, with a bare
XEP-0114 component and no proxy: what the simulation's server profiles model
(client_proxy.sim.ServerProfile) where DESIGN.md's table of server facts leaves a case open.

- a first `subscribe` while the target is online: Prosody acknowledges it with a bare
  `unavailable` (as it does while the target is offline), ejabberd answers nothing (as it does
  while the target is offline); on both the target is asked;
- a `probe` with nothing pending and no subscription, before any request or after Prosody has
  cancelled one: no answer on either server (Prosody answers `unsubscribed` only while a
  request is pending, which is the probe that loses it);
- a `probe` once subscribed, with no resource online: Prosody answers a bare `unavailable`,
  ejabberd nothing.

A negative ("no answer") is the absence of any stanza for a while (QUIET) after the server has
read the probe; it is followed by a stanza the server does answer, so the wait is not cut short.
"""

from __future__ import annotations

import asyncio
import hashlib
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

import pytest
from proxy_env import PROMPT, PROXY_DOMAIN, SECRET, ProxyEnv
from xmpp_clients import Requester

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

#: How long a server is given to answer before "nothing" is concluded.
QUIET = 0.5
_STREAMS = "http://etherx.jabber.org/streams"


class BareComponent:
    """A XEP-0114 component that does nothing by itself: it writes the stanzas it is given and
    keeps every stanza the server routes to it."""

    def __init__(self) -> None:
        self.got: list[ET.Element] = []
        self._parser = ET.XMLPullParser(events=("start", "end"))
        self._depth = 0
        self._stream_id: asyncio.Future[str] | None = None
        self._handshake: asyncio.Future[None] | None = None

    async def connect(self, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._stream_id, self._handshake = loop.create_future(), loop.create_future()
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        self._reading = asyncio.create_task(self._read())
        self.send(
            "<stream:stream xmlns='jabber:component:accept' "
            f"xmlns:stream='{_STREAMS}' to='{PROXY_DOMAIN}'>"
        )
        stream_id = await asyncio.wait_for(self._stream_id, PROMPT)
        digest = hashlib.sha1((stream_id + SECRET).encode()).hexdigest()  # XEP-0114 §3
        self.send(f"<handshake>{digest}</handshake>")
        await asyncio.wait_for(self._handshake, PROMPT)

    def send(self, text: str) -> None:
        self.writer.write(text.encode())

    async def close(self) -> None:
        self.send("</stream:stream>")
        self.writer.close()
        self._reading.cancel()

    async def _read(self) -> None:
        while data := await self.reader.read(65536):
            self._parser.feed(data)
            for event, element in self._parser.read_events():
                self._depth += 1 if event == "start" else -1
                if event == "start" and self._depth == 1 and self._stream_id is not None:
                    self._stream_id.set_result(element.get("id", ""))
                elif event == "end" and self._depth == 1:
                    if element.tag.endswith("handshake") and self._handshake is not None:
                        self._handshake.set_result(None)
                    else:
                        self.got.append(element)

    async def answers(self, presence: str) -> list[str]:
        """Send `presence`; the presence stanzas that came back (:meth:`after`)."""
        return await self.after(lambda: self.send(presence))

    async def after(self, act: Callable[[], None]) -> list[str]:
        """Do `act`, then wait QUIET seconds and for the answer to a ping sent after it; return
        the presence stanzas the component got meanwhile, as `type from`."""
        self.got.clear()
        act()
        await asyncio.sleep(QUIET)
        self.send(
            f"<iq type='get' id='mark' to='localhost' from='{PROXY_DOMAIN}'>"
            "<ping xmlns='urn:xmpp:ping'/></iq>"
        )
        for _ in range(int(PROMPT / 0.05)):
            if any(e.tag.endswith("iq") and e.get("id") == "mark" for e in self.got):
                break
            await asyncio.sleep(0.05)
        return [
            f"{e.get('type', 'available')} {e.get('from')}"
            for e in self.got
            if e.tag.endswith("presence")
        ]


def _presence(kind: str, to: str) -> str:
    return f"<presence type='{kind}' to='{to}' from='{PROXY_DOMAIN}'/>"


async def _target(env: ProxyEnv, asked: list[Any]) -> Requester:
    """A session of the target account that records subscription requests and approves none."""
    client = await env.requester(env.target, "a")
    client.add_event_handler("presence_subscribe", asked.append)
    return client


def test_a_first_subscribe_while_the_target_is_online(env: ProxyEnv) -> None:
    async def main() -> None:
        asked: list[Any] = []
        await _target(env, asked)
        component = BareComponent()
        await component.connect(env.server.component_port)
        got = await component.answers(_presence("subscribe", env.target))
        expected = {"prosody": [f"unavailable {env.target}"], "ejabberd": []}
        assert got == expected[env.server_kind]
        assert len(asked) == 1
        await component.close()

    env.run(main)


def test_a_probe_with_nothing_pending_gets_no_answer(env: ProxyEnv) -> None:
    async def main() -> None:
        await _target(env, [])
        component = BareComponent()
        await component.connect(env.server.component_port)
        assert await component.answers(_presence("probe", env.target)) == []
        # A request, then a probe while it is pending (DESIGN.md: Prosody cancels it), then
        # another probe, with nothing pending on Prosody any more.
        await component.answers(_presence("subscribe", env.target))
        cancelled = await component.answers(_presence("probe", env.target))
        expected = {"prosody": [f"unsubscribed {env.target}"], "ejabberd": []}
        assert cancelled == expected[env.server_kind]
        assert await component.answers(_presence("probe", env.target)) == []
        await component.close()

    env.run(main)


def test_a_probe_once_subscribed_with_no_resource_online(env: ProxyEnv) -> None:
    async def main() -> None:
        asked: list[Any] = []
        target = await _target(env, asked)
        component = BareComponent()
        await component.connect(env.server.component_port)
        await component.answers(_presence("subscribe", env.target))
        await target.wait_condition(lambda: asked, PROMPT, "the subscription request")
        approval = await component.after(
            lambda: target.send_presence(pto=PROXY_DOMAIN, ptype="subscribed")
        )
        assert f"subscribed {env.target}" in approval
        await component.after(target.disconnect)
        got = await component.answers(_presence("probe", env.target))
        expected = {"prosody": [f"unavailable {env.target}"], "ejabberd": []}
        assert got == expected[env.server_kind]
        await component.close()

    env.run(main)
