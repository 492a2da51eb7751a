"""When the proxy dies: what a second instance does on each server, and what the server does for
the component while no instance is connected (docs/deploy.md, "Standby" and "The gap").

- Prosody refuses a second connection for the component with `conflict` while the first holds
  it: the second instance stands by (``standby`` in the log, on /healthz and to systemd), tries
  again every second, and takes over once the first is gone, even by SIGKILL.
- ejabberd accepts the second connection and splits the domain's stanzas between the two, replies
  as well as requests; its ``domain_balancing`` option can pin every stanza to one connection,
  but to a slot chosen by a hash of the domain, and with that slot empty it drops them all
  without a word: no setup of it keeps exactly one instance active.
- While no instance is connected, each server answers requests, messages and presence for the
  domain with an error of its own, and drops results and errors without a word: a reply the
  target sends in that gap never reaches its requester.
- The instance that takes over delivers the replies to what the dead one forwarded, once: the
  forwarded id is sealed and says where the reply goes (README, JAT).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from client_proxy.testing.ejabberd import Ejabberd, ejabberd_available
from client_proxy.testing.prosody import free_port
from proxy_env import BOUNCE_WITHOUT_PROXY, PROMPT, PROXY_DOMAIN, SECRET, ProxyEnv
from service_checks import NotifySocket, health, scrape, value, wait_health
from xmpp_clients import IqRecord, Requester

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

#: The brief's bar for a takeover: the standby serves new requests within this many seconds of
#: the active instance's death (STANDBY_RETRY is 1 s).
TAKEOVER = 2.0
#: A request sent this soon after the kill may still reach the dead connection, before the server
#: has read that it is gone: it is lost without an answer, like one in flight.
SERVER_NOTICES = 0.1
STANZAS_NS = "urn:ietf:params:xml:ns:xmpp-stanzas"


class SteadyLoad:
    """One requester sending a get to the proxy every ``interval`` seconds, noting when."""

    def __init__(self, user: Requester, interval: float) -> None:
        self.user = user
        self.interval = interval
        self.sent: dict[str, float] = {}
        self._running = True

    async def run(self) -> None:
        while self._running:
            self.sent[self.user.request(PROXY_DOMAIN)] = time.monotonic()
            await asyncio.sleep(self.interval)

    def stop(self) -> None:
        self._running = False

    def outcome(self, rid: str) -> str:
        """``result``, ``error:<condition>``, or ``none`` (nothing came back)."""
        replies = self.user.replies(rid)
        if not replies:
            return "none"
        reply = replies[0]
        return "result" if reply.type == "result" else f"error:{reply.error_condition}"

    def answered(self, rid: str) -> IqRecord:
        return self.user.replies(rid)[0]


# -- a second instance -------------------------------------------------------------------------


def test_second_instance_for_the_component(env: ProxyEnv, tmp_path: Path) -> None:
    """A second instance for the same component, on each server.

    Prosody: it stands by (log `standby`, /healthz 503 `standby`, READY=1 and STATUS=standby to
    systemd) while the first serves; under steady load (50 requests/s) the first is killed with
    SIGKILL, and the standby takes over (`standby.takeover`) and answers new requests within
    TAKEOVER seconds; every request sent after that gets its result, those sent in between get
    the result or Prosody's own error, none gets two answers. The reply to a request only the
    dead instance knew, sent after the takeover, is delivered by the new one, once.

    ejabberd: the second connection is accepted (`connection.up`, never `standby`), and the two
    instances share the requests: no standby is possible there. Each request still gets one
    answer (a reply that ejabberd hands to the other instance is delivered by it: sealed ids),
    but which answer is luck: an instance that ejabberd did not give the target's presence to
    knows no resource, and refuses what reaches it (`service-unavailable`)."""
    if env.server_kind == "prosody":
        env.run(lambda: _standby_takes_over(env, tmp_path))
    else:
        env.run(lambda: _second_connection_shares(env))


async def _standby_takes_over(env: ProxyEnv, tmp_path: Path) -> None:
    port = free_port()
    notify = NotifySocket(tmp_path / "notify.sock")
    try:
        # Priority routing: the request held at "holder" stays the only one there, and the
        # load goes to "worker" (priority 10), which answers at once.
        active = await env.ready_daemon(routing="priority")
        (holder,) = await env.online(active, "holder", mode="hold", priority=1)
        standby = env.start_daemon(
            routing="priority",
            metrics_listen=f"127.0.0.1:{port}",
            env={"NOTIFY_SOCKET": str(notify.path)},
        )
        await standby.wait_log("standby:", timeout=15)
        await wait_health(port, (503, "standby"))
        await notify.wait(
            lambda m: any(x.startswith("READY=1\nSTATUS=standby") for x in m),
            "READY=1 with STATUS=standby",
        )

        user = await env.requester()
        in_flight = user.request(PROXY_DOMAIN)
        await holder.wait_requests(1)
        await env.online(active, "worker", priority=10)
        load = SteadyLoad(await env.requester(), 0.02)
        running = asyncio.create_task(load.run())
        await asyncio.sleep(1.0)
        killed_at = time.monotonic()
        active.signal(signal.SIGKILL)
        await standby.wait_log("standby.takeover", timeout=TAKEOVER + 3)
        await env.wait_resource(standby, "resource.online", "holder")
        # The target answers the request the dead instance forwarded; the new one never saw it,
        # and delivers the answer all the same (its id is sealed), and a copy of it not at all.
        holder.answer(in_flight)
        (recovered,) = [await user.reply(in_flight, PROMPT)]
        assert (recovered.type, recovered.from_, recovered.to) == (
            "result",
            PROXY_DOMAIN,
            str(user.boundjid),
        )
        await asyncio.sleep(TAKEOVER + 0.5)
        load.stop()
        await running
        after = {rid: at for rid, at in load.sent.items() if at >= killed_at + SERVER_NOTICES}
        await load.user.wait_condition(
            lambda: all(load.user.replies(rid) for rid in after), PROMPT, "every answer"
        )

        served = [load.answered(rid).at for rid in after if load.outcome(rid) == "result"]
        takeover = min(served) - killed_at
        outcomes = [load.outcome(rid) for rid in load.sent]
        print(
            f"takeover: the first result {takeover:.2f} s after SIGKILL; outcomes "
            f"{ {o: outcomes.count(o) for o in sorted(set(outcomes))} }"
        )
        assert takeover < TAKEOVER, takeover
        bounce = "error:" + BOUNCE_WITHOUT_PROXY["prosody"][0]
        for rid, at in load.sent.items():
            outcome = load.outcome(rid)
            if at >= killed_at + TAKEOVER:
                assert outcome == "result", (rid, at - killed_at, outcome)
            elif at >= killed_at + SERVER_NOTICES:
                assert outcome in ("result", bounce), (rid, at - killed_at, outcome)
            else:  # in flight around the kill: answered, bounced, or lost with the connection
                assert outcome in ("result", bounce, "none"), (rid, at - killed_at, outcome)
        assert load.user.unsolicited() == [], load.user.unsolicited()

        await asyncio.sleep(0.5)
        assert len(user.replies(in_flight)) == 1, user.replies(in_flight)
        assert user.unsolicited() == [], user.unsolicited()
        samples = await scrape(port)
        recovered_count = samples.get(
            ("client_proxy_core_events_total", (("name", "answered.recovered"),)), 0.0
        )
        assert recovered_count >= 1, recovered_count
        assert value(samples, "client_proxy_standby") == 0
        assert await health(port) == (200, "ok")
        assert any(m.startswith("STATUS=ready") for m in notify.read()), notify.read()
    finally:
        notify.close()


async def _second_connection_shares(env: ProxyEnv) -> None:
    settings = {"request_timeout": 2, "sync_grace": 1}
    first = await env.ready_daemon(**settings)
    await env.online(first, "alpha")
    second = await env.ready_daemon(**settings)
    user = await env.requester()
    ids = [user.request(PROXY_DOMAIN) for _ in range(20)]
    replies = await user.all_replies(ids, PROMPT)
    me = str(user.boundjid)
    for daemon in (first, second):
        assert daemon.matching("recv iq type=get", containing=me), daemon.tail()
        assert not daemon.matching("standby"), daemon.tail()
    assert sorted(replies) == sorted(ids), replies
    for reply in replies.values():
        assert reply.type == "result" or reply.error_condition == "service-unavailable", reply
    await asyncio.sleep(0.5)
    assert user.unsolicited() == [], user.unsolicited()
    for rid in ids:
        assert len(user.replies(rid)) == 1, user.replies(rid)


# -- ejabberd's domain_balancing ---------------------------------------------------------------

#: Two route slots for the component, every stanza to the one picked by a hash of its bare
#: destination, which is the component's domain for every address at it: one connection gets
#: all. For proxy.localhost that is slot 2 (erlang:phash2({<<>>, <<"proxy.localhost">>, <<>>}, 2)
#: is 1, a portable hash); a first connection takes slot 1, a second slot 2.
BALANCING = """\
domain_balancing:
  "proxy.localhost":
    component_number: 2
    type: bare_destination
"""


def test_ejabberd_domain_balancing_cannot_keep_one_instance_active(tmp_path: Path) -> None:
    """ejabberd's one tool for this, ``domain_balancing``, on its own node (component_number must
    be 2 or more: 1 fails the start). With ``type: bare_destination`` every stanza for the domain
    goes to one slot: the first instance alone, in the other slot, gets nothing at all (not even
    the target's approval) and its requesters get no answer and no error; a second instance, in
    that slot, gets everything; when it dies the domain is silent again, with the first still
    connected. So ejabberd cannot make the second instance a standby; the recommended setup
    there is one instance (docs/deploy.md, "Standby")."""
    if not ejabberd_available():
        message = "ejabberdctl/erl not installed (scripts/bootstrap installs ejabberd)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    server = Ejabberd(
        tmp_path / "ejabberd", components={PROXY_DOMAIN: SECRET}, extra_config=BALANCING
    )
    server.start()
    env = ProxyEnv(server, "ejabberd", tmp_path)

    async def main() -> None:
        first = await env.ready_daemon(sync_grace=1)
        await env.resource("alpha")  # approves the subscription: in vain, first never hears it
        user = await env.requester()
        me = str(user.boundjid)
        unheard = user.request(PROXY_DOMAIN)
        await asyncio.sleep(1.5)
        assert user.replies(unheard) == []
        assert not first.matching("recv "), first.tail()

        second = await env.ready_daemon(sync_grace=1)
        await env.wait_resource(second, "resource.online", "alpha")
        ids = [user.request(PROXY_DOMAIN) for _ in range(10)]
        replies = await user.all_replies(ids, PROMPT)
        assert all(r.type == "result" for r in replies.values()), replies
        assert not first.matching("recv "), first.tail()

        second.signal(signal.SIGKILL)
        await second.wait_exit()
        await asyncio.sleep(0.5)
        lost = user.request(PROXY_DOMAIN)
        await asyncio.sleep(1.5)
        assert user.replies(lost) == []
        assert user.replies(unheard) == []
        assert not first.matching(f"from={me}"), first.tail()

    failed = True
    try:
        env.run(main)
        failed = False
    finally:
        env.teardown(failed)
        server.stop()


# -- the gap -----------------------------------------------------------------------------------


def _condition(message_text: str) -> tuple[str | None, str | None, str | None]:
    """The `from`, error type and condition of a <message type='error'> as text."""
    element = ET.fromstring(message_text)
    for child in element:
        if child.tag.endswith("}error"):
            for cond in child:
                if cond.tag.startswith(f"{{{STANZAS_NS}}}") and not cond.tag.endswith("}text"):
                    return element.get("from"), child.get("type"), cond.tag.split("}", 1)[1]
    return element.get("from"), None, None


def test_the_gap_while_no_instance_is_connected(env: ProxyEnv) -> None:
    """The proxy is killed (SIGKILL) with a request in flight at the target, and nothing takes
    over. The target's answer to it reaches nobody: the server drops a result for the absent
    component without a word, to the target as to the requester (both servers). A request to the
    domain or to a full JID at it, a message, and a call the target starts get the server's own
    error (BOUNCE_WITHOUT_PROXY: Prosody remote-server-timeout (wait), ejabberd with s2s off
    forbidden (auth)) from exactly the address written to, with the sender's id; ejabberd echoes
    the request's payload, Prosody does not."""

    async def main() -> None:
        condition, etype = BOUNCE_WITHOUT_PROXY[env.server_kind]
        daemon = await env.ready_daemon()
        (holder,) = await env.online(daemon, "holder", mode="hold")
        user = await env.requester()
        me = str(user.boundjid)
        in_flight = user.request(PROXY_DOMAIN)
        await holder.wait_requests(1)
        daemon.signal(signal.SIGKILL)
        await daemon.wait_exit()
        await asyncio.sleep(2 * SERVER_NOTICES)  # for the server to read that it is gone

        holder.answer(in_flight)
        for to, kind in ((PROXY_DOMAIN, "get"), (f"{PROXY_DOMAIN}/x", "set")):
            rid = user.request(to, type=kind)
            reply = await user.reply(rid, PROMPT)
            assert (reply.type, reply.from_, reply.to, reply.id) == ("error", to, me, rid)
            assert (reply.error_condition, reply.error_type) == (condition, etype), reply
            echoed = env.server_kind == "ejabberd"
            assert bool(reply.payload) == echoed, reply
        user.send_message(mto=PROXY_DOMAIN, mbody="hello", mtype="chat")
        await user.wait_condition(lambda: user.messages, PROMPT, "the message's bounce")
        assert _condition(user.messages[0]) == (PROXY_DOMAIN, etype, condition)

        call_to = f"{PROXY_DOMAIN}/{me}"
        holder.send_raw_iq(to=call_to, id="call-1", type="get", payload="<q xmlns='urn:x'/>")
        await holder.wait_condition(
            lambda: [r for r in holder.iqs if r.id == "call-1"], PROMPT, "the call's bounce"
        )
        (call,) = [r for r in holder.iqs if r.id == "call-1"]
        assert (call.type, call.from_, call.error_condition, call.error_type) == (
            "error",
            call_to,
            condition,
            etype,
        ), call

        await asyncio.sleep(0.5)
        assert user.replies(in_flight) == [], user.replies(in_flight)
        # Nor is the target told that its answer went nowhere.
        assert [r for r in holder.iqs if r.type == "error"] == [call], holder.iqs

    env.run(main)
