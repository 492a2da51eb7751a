"""client-proxy end to end: a real server (each test runs on Prosody and on ejabberd), real slixmpp
clients, the daemon as a real process.

Addresses below: the target is a fresh account `svc-N@localhost` per test (the README test uses
`svc@localhost` and `user@localhost/abc` themselves), and the proxy is `proxy.localhost`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from proxy_env import (
    BOUNCE_WITHOUT_PROXY,
    PASSWORD,
    PROMPT,
    PROXY_DOMAIN,
    SECRET,
    ProxyEnv,
    wait_for,
)
from slixmpp.exceptions import IqError, IqTimeout
from xmpp_clients import IqRecord, Requester, TargetResource, echo_payload, serialize

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def assert_result(reply: IqRecord, *, to: str, from_: str, id: str, payload: str) -> None:
    __tracebackhide__ = True
    assert (reply.type, reply.from_, reply.to, reply.id) == ("result", from_, to, id), reply
    assert reply.payload == (_canon(payload),), reply


def assert_error(
    reply: IqRecord, *, to: str, from_: str, id: str, condition: str, etype: str
) -> None:
    __tracebackhide__ = True
    assert (reply.type, reply.from_, reply.to, reply.id) == ("error", from_, to, id), reply
    assert (reply.error_condition, reply.error_type) == (condition, etype), reply


def _canon(payload: str) -> str:
    return serialize(ET.fromstring(payload))


def held_by(resources: list[TargetResource], iq_id: str) -> TargetResource:
    """The one resource that holds request `iq_id`."""
    holders = [r for r in resources if iq_id in r.held]
    assert len(holders) == 1, [(r.resource, list(r.held)) for r in resources]
    return holders[0]


# -- the README flow ---------------------------------------------------------------------------


def test_readme_flow_four_stanzas(env: ProxyEnv) -> None:
    """The four stanzas of DESIGN.md, seen on both ends: the target gets the request from
    'proxy.localhost/user@localhost/abc' with the same id and payload; the user gets the result
    from 'proxy.localhost' with its own id. A strict client (slixmpp's Iq.send, which matches
    replies on from and id) accepts the reply too."""
    for name in ("svc", "user"):
        env.server.register(name, "localhost", PASSWORD)  # made, or its password set again
    env.target = "svc@localhost"

    async def main() -> None:
        daemon = await env.ready_daemon()
        (svc,) = await env.online(daemon, "a")
        await daemon.wait_log("subscription.approved")
        assert PROXY_DOMAIN in svc.approved, svc.approved
        user = await env.requester("user@localhost", "abc")
        payload = "<query xmlns='jabber:iq:version'/>"

        user.request("proxy.localhost", type="get", id="1234", payload=payload)
        reply = await user.reply("1234", PROMPT)

        (seen,) = svc.requests
        assert (seen.type, seen.original, seen.from_, seen.to) == (
            "get",
            "1234",
            "proxy.localhost/user@localhost/abc",
            "svc@localhost/a",
        )
        assert seen.payload == (_canon(payload),)
        assert seen.id != "1234"  # the proxy's own, sealed (README, JAT)
        assert_result(
            reply, to="user@localhost/abc", from_="proxy.localhost", id="1234", payload=payload
        )

        # The same through slixmpp's own request/reply matching (strict on from and id).
        iq = user.make_iq_get(queryxmlns="jabber:iq:version", ito="proxy.localhost")
        user.sent[iq["id"]] = ("proxy.localhost", "get")
        answer = await iq.send(timeout=PROMPT)
        assert answer["type"] == "result"
        assert str(answer["from"]) == "proxy.localhost"
        assert answer["id"] == iq["id"]

        await asyncio.sleep(0.5)
        assert user.unsolicited() == [], user.iqs
        assert user.messages == [], user.messages

    env.run(main)


def test_request_to_full_jid_answered_from_it(env: ProxyEnv) -> None:
    """A request addressed to 'proxy.localhost/x' reaches the target (translated like any other)
    and its reply comes back from 'proxy.localhost/x', not from the bare domain."""

    async def main() -> None:
        daemon = await env.ready_daemon()
        (svc,) = await env.online(daemon, "a")
        user = await env.requester()
        for to in ("proxy.localhost/x", "proxy.localhost/some/other/resource"):
            rid = user.request(to)
            reply = await user.reply(rid, PROMPT)
            assert_result(reply, to=str(user.boundjid), from_=to, id=rid, payload=echo_payload(rid))
            fwd = [r for r in svc.requests if r.original == rid]
            assert len(fwd) == 1
            assert fwd[0].from_.startswith(f"{PROXY_DOMAIN}/"), fwd
            assert str(user.boundjid) in fwd[0].from_, fwd

    env.run(main)


def test_target_error_reply_relayed(env: ProxyEnv) -> None:
    """An error the target answers is relayed to the requester like a result: from the proxy's
    address, with the requester's id and the target's error condition."""

    async def main() -> None:
        daemon = await env.ready_daemon()
        await env.online(daemon, "a", mode="error")
        user = await env.requester()
        rid = user.request(PROXY_DOMAIN)
        reply = await user.reply(rid, PROMPT)
        assert_error(
            reply,
            to=str(user.boundjid),
            from_=PROXY_DOMAIN,
            id=rid,
            condition="item-not-found",
            etype="cancel",
        )

    env.run(main)


# -- several resources --------------------------------------------------------------------------


def test_two_resources_both_used(env: ProxyEnv) -> None:
    """With two resources online, 40 requests (seed 0) are spread over both, and each is
    answered once, from the proxy, with its payload."""

    async def main() -> None:
        daemon = await env.ready_daemon(seed=0)
        a, b = await env.online(daemon, "alpha", "bravo")
        user = await env.requester()
        ids = [user.request(PROXY_DOMAIN) for _ in range(40)]
        replies = await user.all_replies(ids, 15)
        for rid in ids:
            assert_result(
                replies[rid],
                to=str(user.boundjid),
                from_=PROXY_DOMAIN,
                id=rid,
                payload=echo_payload(rid),
            )
        got_a, got_b = len(a.requests), len(b.requests)
        assert got_a + got_b == 40, (got_a, got_b)
        assert got_a > 0 and got_b > 0, (got_a, got_b)
        await asyncio.sleep(0.3)
        assert user.unsolicited() == []

    env.run(main)


def test_resource_leaving_while_requests_flow(env: ProxyEnv) -> None:
    """One of two resources logs out while 60 gets keep flowing: no request is lost or answered
    twice, and since gets are retried on the remaining resource, all of them get results."""

    async def main() -> None:
        daemon = await env.ready_daemon()
        a, b = await env.online(daemon, "alpha", "bravo")
        a.delay = b.delay = 0.05
        user = await env.requester()
        ids: list[str] = []
        leaving: asyncio.Task[None] | None = None
        for n in range(60):
            ids.append(user.request(PROXY_DOMAIN))
            if n == 20:
                leaving = asyncio.ensure_future(a.stop())
            await asyncio.sleep(0.05)
        assert leaving is not None
        await leaving
        replies = await user.all_replies(ids, 20)
        await asyncio.sleep(0.5)
        assert user.unsolicited() == [], user.unsolicited()
        for rid in ids:
            assert len(user.replies(rid)) == 1
            assert_result(
                replies[rid],
                to=str(user.boundjid),
                from_=PROXY_DOMAIN,
                id=rid,
                payload=echo_payload(rid),
            )
        assert len(a.requests) > 0 and len(b.requests) > 0, (len(a.requests), len(b.requests))
        await env.wait_resource(daemon, "resource.offline", "alpha")

    env.run(main)


async def _leave_mid_request(env: ProxyEnv, abrupt: bool) -> None:
    daemon = await env.ready_daemon()
    (a,) = await env.online(daemon, "alpha", mode="hold")
    user = await env.requester()
    get_id = user.request(PROXY_DOMAIN, type="get")
    set_id = user.request(PROXY_DOMAIN, type="set")
    await a.wait_requests(2, PROMPT)
    assert set(a.held) == {get_id, set_id}
    (b,) = await env.online(daemon, "bravo", mode="echo")

    started = time.monotonic()
    if abrupt:
        a.kill()
    else:
        await a.stop()
    get_reply = await user.reply(get_id, PROMPT)
    set_reply = await user.reply(set_id, PROMPT)
    assert time.monotonic() - started < PROMPT

    me = str(user.boundjid)
    assert_result(get_reply, to=me, from_=PROXY_DOMAIN, id=get_id, payload=echo_payload(get_id))
    assert [r.original for r in b.requests] == [get_id], b.requests
    retried = b.requests[0]
    assert (retried.type, retried.from_) == ("get", f"{PROXY_DOMAIN}/{me}")
    assert retried.payload == (_canon(echo_payload(get_id)),)
    assert_error(
        set_reply,
        to=me,
        from_=PROXY_DOMAIN,
        id=set_id,
        condition="recipient-unavailable",
        etype="wait",
    )
    await asyncio.sleep(0.5)
    assert user.unsolicited() == [], user.unsolicited()


def test_resource_leaving_mid_request(env: ProxyEnv) -> None:
    """A resource logs out (unavailable presence) while holding a get and a set: the get is
    retried on the other resource and answered with its result; the set is answered
    recipient-unavailable (wait); both promptly, never by the requester's deadline."""
    env.run(lambda: _leave_mid_request(env, abrupt=False))


def test_resource_disconnecting_abruptly_mid_request(env: ProxyEnv) -> None:
    """Same as above, but the resource's TCP connection is just closed (no unavailable presence,
    no stream close): the server's own unavailable is enough for the proxy to retry the get and
    answer the set recipient-unavailable."""
    env.run(lambda: _leave_mid_request(env, abrupt=True))


# -- no resource, deadlines ----------------------------------------------------------------------


def test_no_resource_online(env: ProxyEnv) -> None:
    """With the target offline the requester gets service-unavailable (cancel) from the proxy:
    first with a target that has never been online (after the sync grace), then with one that
    approved, came online and left."""

    async def main() -> None:
        daemon = await env.ready_daemon(sync_grace=1)
        user = await env.requester()
        early = user.request(PROXY_DOMAIN)  # within the sync grace: parked, then refused
        reply = await user.reply(early, PROMPT)
        me = str(user.boundjid)
        assert_error(
            reply,
            to=me,
            from_=PROXY_DOMAIN,
            id=early,
            condition="service-unavailable",
            etype="cancel",
        )
        late = user.request(PROXY_DOMAIN)
        reply = await user.reply(late, PROMPT)
        assert_error(
            reply,
            to=me,
            from_=PROXY_DOMAIN,
            id=late,
            condition="service-unavailable",
            etype="cancel",
        )

        (a,) = await env.online(daemon, "alpha")
        mark = daemon.mark()
        await a.stop()
        await env.wait_resource(daemon, "resource.offline", "alpha", since=mark)
        after = user.request(PROXY_DOMAIN)
        reply = await user.reply(after, PROMPT)
        assert_error(
            reply,
            to=me,
            from_=PROXY_DOMAIN,
            id=after,
            condition="service-unavailable",
            etype="cancel",
        )
        assert a.requests == []

    env.run(main)


def test_deadline_expiry(env: ProxyEnv) -> None:
    """request_timeout = 1 and a target that never answers: the requester gets
    remote-server-timeout (wait) from the proxy after about a second, and the target's late
    answer is dropped (the requester gets exactly one reply)."""

    async def main() -> None:
        daemon = await env.ready_daemon(request_timeout=1)
        (a,) = await env.online(daemon, "alpha", mode="hold")
        user = await env.requester()
        started = time.monotonic()
        rid = user.request(PROXY_DOMAIN)
        reply = await user.reply(rid, PROMPT)
        elapsed = time.monotonic() - started
        assert_error(
            reply,
            to=str(user.boundjid),
            from_=PROXY_DOMAIN,
            id=rid,
            condition="remote-server-timeout",
            etype="wait",
        )
        assert 0.8 <= elapsed < 4, elapsed
        a.answer(rid)  # too late
        await asyncio.sleep(1.0)
        assert user.replies(rid) == [reply]
        assert user.unsolicited() == []

    env.run(main)


def test_burst_of_requests_all_answered_once(env: ProxyEnv) -> None:
    """300 requests at once from three users over two resources: every one is answered exactly
    once, to the user who sent it, from the proxy, with its own payload."""

    async def main() -> None:
        daemon = await env.ready_daemon()
        await env.online(daemon, "alpha", "bravo")
        users = [await env.requester() for _ in range(3)]
        sent = {u: [u.request(PROXY_DOMAIN) for _ in range(100)] for u in users}
        for u, ids in sent.items():
            replies = await u.all_replies(ids, 20)
            for rid in ids:
                assert_result(
                    replies[rid],
                    to=str(u.boundjid),
                    from_=PROXY_DOMAIN,
                    id=rid,
                    payload=echo_payload(rid),
                )
        await asyncio.sleep(0.5)
        for u in users:
            assert u.unsolicited() == [], u.unsolicited()[:5]

    env.run(main)


# -- restarts -------------------------------------------------------------------------------------


def test_proxy_restart_with_target_online(env: ProxyEnv) -> None:
    """The daemon is stopped and started again while the target stays online: the resync brings
    the resources back without the target doing anything, and a request sent the moment the new
    daemon is up is served (a result within ~2 s, not service-unavailable). On Prosody the
    repeated subscribe alone brings the resources' presence; on ejabberd it gets `subscribed`
    only, so this passes there only because the proxy probes once it sees `subscribed`."""

    async def main() -> None:
        first = await env.ready_daemon()
        a, _b = await env.online(first, "alpha", "bravo")
        user = await env.requester()
        rid = user.request(PROXY_DOMAIN)
        await user.reply(rid, PROMPT)
        first.signal(signal.SIGTERM)
        assert await first.wait_exit(15) == 0

        approvals = len(a.approved)
        second = env.start_daemon()
        await second.wait_log("connection.up", timeout=15)
        started = time.monotonic()
        rid = user.request(PROXY_DOMAIN)
        reply = await user.reply(rid, PROMPT)
        elapsed = time.monotonic() - started
        assert_result(
            reply, to=str(user.boundjid), from_=PROXY_DOMAIN, id=rid, payload=echo_payload(rid)
        )
        assert elapsed < 2.5, elapsed
        for name in ("alpha", "bravo"):
            await env.wait_resource(second, "resource.online", name)
        assert len(a.approved) == approvals  # no new approval was needed

    env.run(main)


def test_request_while_no_proxy_is_connected(env: ProxyEnv) -> None:
    """Before any daemon has connected, and again once the daemon has stopped, a request to the
    proxy is answered by the server itself, at once, from the proxy's address, with the
    requester's id: remote-server-timeout (wait) on Prosody, forbidden (auth) on ejabberd. With a
    daemon connected in between, the same requester is served."""

    async def main() -> None:
        user = await env.requester()
        me = str(user.boundjid)
        condition, etype = BOUNCE_WITHOUT_PROXY[env.server_kind]
        before = user.request(PROXY_DOMAIN)
        reply = await user.reply(before, PROMPT)
        assert_error(reply, to=me, from_=PROXY_DOMAIN, id=before, condition=condition, etype=etype)

        daemon = await env.ready_daemon()
        await env.online(daemon, "alpha")
        served = user.request(PROXY_DOMAIN)
        assert (await user.reply(served, PROMPT)).type == "result"
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait_exit(15) == 0

        after = user.request(PROXY_DOMAIN)
        reply = await user.reply(after, PROMPT)
        assert_error(reply, to=me, from_=PROXY_DOMAIN, id=after, condition=condition, etype=etype)
        await asyncio.sleep(0.3)
        assert user.unsolicited() == [], user.unsolicited()

    env.run(main)


def test_server_restarted_under_proxy(env: ProxyEnv) -> None:
    """The server restarts under a running daemon: the daemon notices (connection.lost), connects
    again by itself (connection.up), resyncs the target's resources once they log in again, and
    serves requests."""

    async def main() -> None:
        daemon = await env.ready_daemon()
        await env.online(daemon, "alpha")
        user = await env.requester()
        rid = user.request(PROXY_DOMAIN)
        await user.reply(rid, PROMPT)

        mark = daemon.mark()
        await asyncio.to_thread(env.server.restart)
        await daemon.wait_log("connection.lost", since=mark, timeout=15)
        await daemon.wait_log("connection.up", since=mark, timeout=40)

        await env.online(daemon, "alpha", since=mark)
        user = await env.requester(user.boundjid.bare, "abc")
        rid = user.request(PROXY_DOMAIN)
        reply = await user.reply(rid, PROMPT)
        assert_result(
            reply, to=str(user.boundjid), from_=PROXY_DOMAIN, id=rid, payload=echo_payload(rid)
        )
        assert daemon.process.poll() is None

    env.run(main, timeout=90)


def test_daemon_started_before_server(env: ProxyEnv) -> None:
    """The daemon starts while the server is down: it keeps trying (does not exit), connects once
    the server is up, and serves."""

    async def main() -> None:
        await asyncio.to_thread(env.server.stop)
        daemon = env.start_daemon()
        await asyncio.sleep(2.0)
        assert daemon.process.poll() is None, daemon.tail()
        assert daemon.matching("connection.up") == []
        await asyncio.to_thread(env.server.start)
        await daemon.wait_log("connection.up", timeout=40)
        await env.online(daemon, "alpha")
        user = await env.requester()
        rid = user.request(PROXY_DOMAIN)
        assert (await user.reply(rid, PROMPT)).type == "result"

    env.run(main, timeout=90)


# -- shutdown ------------------------------------------------------------------------------------


def test_sigterm_drains_outstanding_requests(env: ProxyEnv) -> None:
    """SIGTERM with four requests outstanding: a new request is refused service-unavailable
    (wait); the two the target answers during the drain are relayed; the two it never answers get
    service-unavailable (wait) when drain_timeout runs out; the daemon logs stop.requested and
    exits 0."""

    async def main() -> None:
        daemon = await env.ready_daemon(drain_timeout=2)
        (a,) = await env.online(daemon, "alpha", mode="hold")
        user = await env.requester()
        me = str(user.boundjid)
        ids = [user.request(PROXY_DOMAIN) for _ in range(4)]
        await a.wait_requests(4, PROMPT)

        mark = daemon.mark()
        daemon.signal(signal.SIGTERM)
        await daemon.wait_log("stop.requested", since=mark, timeout=5)
        refused = user.request(PROXY_DOMAIN)
        reply = await user.reply(refused, PROMPT)
        assert_error(
            reply,
            to=me,
            from_=PROXY_DOMAIN,
            id=refused,
            condition="service-unavailable",
            etype="wait",
        )
        a.answer(ids[0])
        a.answer(ids[1])
        replies = await user.all_replies(ids, PROMPT)
        for rid in ids[:2]:
            assert_result(
                replies[rid], to=me, from_=PROXY_DOMAIN, id=rid, payload=echo_payload(rid)
            )
        for rid in ids[2:]:
            assert_error(
                replies[rid],
                to=me,
                from_=PROXY_DOMAIN,
                id=rid,
                condition="service-unavailable",
                etype="wait",
            )
        assert await daemon.wait_exit(10) == 0
        assert [r.original for r in a.requests] == ids  # the refused one never reached the target
        await asyncio.sleep(0.3)
        assert user.unsolicited() == []

    env.run(main)


def test_sigint_stops_cleanly(env: ProxyEnv) -> None:
    """SIGINT with nothing outstanding: stop.requested is logged and the daemon exits 0 within
    the drain timeout."""

    async def main() -> None:
        daemon = await env.ready_daemon(drain_timeout=2)
        await env.online(daemon, "alpha")
        daemon.signal(signal.SIGINT)
        await daemon.wait_log("stop.requested", timeout=5)
        assert await daemon.wait_exit(6) == 0

    env.run(main)


# -- what must never be delivered ----------------------------------------------------------------


def test_forged_replies_are_not_delivered(env: ProxyEnv) -> None:
    """The target cannot make the proxy deliver what nobody asked for: a result for an id nobody
    sent, a result to a user who sent nothing, a reply from the wrong resource, a second reply,
    a request of its own and a message to a user's translated address all reach nobody (with
    outbound_iq and messages off, mod_client_proxy's behaviour; on, they are features, see
    test_beyond_reference); the real reply is delivered once."""

    async def main() -> None:
        daemon = await env.ready_daemon(outbound_iq=False, messages=False)
        resources = await env.online(daemon, "alpha", "bravo", mode="hold")
        user = await env.requester()
        bystander = await env.requester()
        me, them = str(user.boundjid), str(bystander.boundjid)

        rid = user.request(PROXY_DOMAIN)
        await wait_for(lambda: any(rid in r.held for r in resources), "the request to arrive")
        holder = held_by(resources, rid)
        other = next(r for r in resources if r is not holder)

        forged = "<query xmlns='urn:example:echo'><text>forged</text></query>"
        other.send_raw_iq(to=f"{PROXY_DOMAIN}/{me}", id=rid, payload=forged)  # wrong resource
        holder.send_raw_iq(to=f"{PROXY_DOMAIN}/{me}", id="never-asked", payload=forged)
        holder.send_raw_iq(to=f"{PROXY_DOMAIN}/{them}", id="nobody-asked", payload=forged)
        holder.send_raw_iq(to=f"{PROXY_DOMAIN}/{them}", id="get-1", type="get", payload=forged)
        holder.send_message_to(f"{PROXY_DOMAIN}/{them}", "forged message")
        await asyncio.sleep(1.0)
        assert user.iqs == [], user.iqs
        assert bystander.iqs == [], bystander.iqs
        assert user.messages == [] and bystander.messages == [], (
            user.messages,
            bystander.messages,
        )

        holder.answer(rid)
        reply = await user.reply(rid, PROMPT)
        assert_result(reply, to=me, from_=PROXY_DOMAIN, id=rid, payload=echo_payload(rid))
        holder.send_raw_iq(to=f"{PROXY_DOMAIN}/{me}", id=rid, payload=forged)  # second reply

        # A barrier: a fresh request answered by whichever resource gets it.
        for r in resources:
            r.mode = "echo"
        barrier = user.request(PROXY_DOMAIN)
        await user.reply(barrier, PROMPT)
        await asyncio.sleep(0.5)
        assert [r.id for r in user.iqs] == [rid, barrier], user.iqs
        assert bystander.iqs == [], bystander.iqs
        assert user.messages == [] and bystander.messages == []

    env.run(main)


# -- limits --------------------------------------------------------------------------------------


def test_duplicate_outstanding_id_conflict(env: ProxyEnv) -> None:
    """A second request with the id of one still outstanding (same requester) is refused with
    conflict, and does not disturb the first, which still gets its result."""

    async def main() -> None:
        daemon = await env.ready_daemon()
        (a,) = await env.online(daemon, "alpha", mode="hold")
        user = await env.requester()
        me = str(user.boundjid)
        user.request(PROXY_DOMAIN, id="dup")
        await a.wait_requests(1, PROMPT)
        user.request(PROXY_DOMAIN, id="dup", payload=echo_payload("second"))
        await user.wait_condition(lambda: user.replies("dup"), PROMPT, "the conflict")
        (refusal,) = user.replies("dup")
        assert (refusal.type, refusal.from_, refusal.error_condition) == (
            "error",
            PROXY_DOMAIN,
            "conflict",
        ), refusal
        a.answer("dup")
        await user.wait_condition(lambda: len(user.replies("dup")) == 2, PROMPT, "the result")
        assert_result(
            user.replies("dup")[1], to=me, from_=PROXY_DOMAIN, id="dup", payload=echo_payload("dup")
        )
        assert len(a.requests) == 1

    env.run(main)


def test_per_requester_limit(env: ProxyEnv) -> None:
    """max_per_requester = 2: a third outstanding request from the same user is refused with
    resource-constraint (wait), while another user is still served."""

    async def main() -> None:
        daemon = await env.ready_daemon(max_per_requester=2)
        (a,) = await env.online(daemon, "alpha", mode="hold")
        user = await env.requester()
        other = await env.requester()
        first = [user.request(PROXY_DOMAIN) for _ in range(2)]
        await a.wait_requests(2, PROMPT)
        third = user.request(PROXY_DOMAIN)
        reply = await user.reply(third, PROMPT)
        assert_error(
            reply,
            to=str(user.boundjid),
            from_=PROXY_DOMAIN,
            id=third,
            condition="resource-constraint",
            etype="wait",
        )
        theirs = other.request(PROXY_DOMAIN)
        await a.wait_requests(3, PROMPT)
        a.answer(theirs)
        assert (await other.reply(theirs, PROMPT)).type == "result"
        for rid in first:
            a.answer(rid)
        await user.all_replies(first, PROMPT)

    env.run(main)


def test_total_outstanding_limit(env: ProxyEnv) -> None:
    """max_outstanding = 2: with two requests outstanding (from two users) a third user is
    refused resource-constraint (wait); once one is answered, the next request is accepted."""

    async def main() -> None:
        daemon = await env.ready_daemon(max_outstanding=2)
        (a,) = await env.online(daemon, "alpha", mode="hold")
        users = [await env.requester() for _ in range(3)]
        held = [u.request(PROXY_DOMAIN) for u in users[:2]]
        await a.wait_requests(2, PROMPT)
        third = users[2].request(PROXY_DOMAIN)
        assert_error(
            await users[2].reply(third, PROMPT),
            to=str(users[2].boundjid),
            from_=PROXY_DOMAIN,
            id=third,
            condition="resource-constraint",
            etype="wait",
        )
        a.answer(held[0])
        assert (await users[0].reply(held[0], PROMPT)).type == "result"
        again = users[2].request(PROXY_DOMAIN)
        await a.wait_requests(3, PROMPT)
        a.answer(again)
        assert (await users[2].reply(again, PROMPT)).type == "result"
        a.answer(held[1])
        assert (await users[1].reply(held[1], PROMPT)).type == "result"

    env.run(main)


def test_overlong_requester_refused(env: ProxyEnv) -> None:
    """A requester whose full JID cannot fit in a resourcepart (over 1023 bytes) gets a clear
    error (not-acceptable, modify) from the proxy; nothing malformed reaches the target."""

    async def main() -> None:
        daemon = await env.ready_daemon()
        (a,) = await env.online(daemon, "alpha")
        user = await env.requester(resource="r" * 1020)
        me = str(user.boundjid)
        assert len(me.encode()) > 1023
        rid = user.request(PROXY_DOMAIN)
        assert_error(
            await user.reply(rid, PROMPT),
            to=me,
            from_=PROXY_DOMAIN,
            id=rid,
            condition="not-acceptable",
            etype="modify",
        )
        assert a.requests == []
        short = await env.requester()
        rid = short.request(PROXY_DOMAIN)
        assert (await short.reply(rid, PROMPT)).type == "result"

    env.run(main)


# -- secrets -------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["secret_file", "environment"])
def test_secret_sources(env: ProxyEnv, source: str) -> None:
    """The component secret may come from secret_file or from $CLIENT_PROXY_SECRET instead of the
    config: the daemon connects and serves either way."""

    async def main() -> None:
        if source == "secret_file":
            path = env.tmp / "secret"
            path.write_text(SECRET + "\n", encoding="utf-8")
            daemon = env.start_daemon(secret=None, secret_file=str(path))
        else:
            daemon = env.start_daemon(secret=None, env={"CLIENT_PROXY_SECRET": SECRET})
        await daemon.wait_log("connection.up", timeout=15)
        await env.online(daemon, "alpha")
        user: Requester = await env.requester()
        rid = user.request(PROXY_DOMAIN)
        assert (await user.reply(rid, PROMPT)).type == "result"

    env.run(main)


def test_strict_client_gets_error_reply(env: ProxyEnv) -> None:
    """slixmpp's Iq.send raises IqError on the proxy's error replies (it matches them on from and
    id), never IqTimeout: with no resource online the strict client gets service-unavailable."""

    async def main() -> None:
        await env.ready_daemon(sync_grace=0)
        user = await env.requester()
        iq = user.make_iq_get(queryxmlns="jabber:iq:version", ito=PROXY_DOMAIN)
        with pytest.raises(IqError) as caught:
            try:
                await iq.send(timeout=PROMPT)
            except IqTimeout:
                pytest.fail("the proxy's error reply did not match (from, id) for Iq.send")
        assert caught.value.condition == "service-unavailable"

    env.run(main)


# -- the example implementing client -------------------------------------------------------------

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "implementing_client.py"


def test_example_implementing_client(env: ProxyEnv) -> None:
    """examples/implementing_client.py, run as its own process, approves the proxy's
    subscription and answers ping, version and echo through the proxy; the echo names the real
    requester (read from the translated `from`). SIGTERM takes it offline cleanly."""

    async def main() -> None:
        daemon = await env.ready_daemon()
        mark = daemon.mark()
        example = subprocess.Popen(
            [
                sys.executable,
                str(EXAMPLE),
                "--jid",
                f"{env.target}/worker",
                "--proxy",
                PROXY_DOMAIN,
                "--server",
                f"127.0.0.1:{env.server.c2s_port}",
                "--plaintext",
            ],
            env={**os.environ, "SERVICE_PASSWORD": PASSWORD},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            await daemon.wait_log("subscription.approved", since=mark)
            await env.wait_resource(daemon, "resource.online", "worker", since=mark)
            user = await env.requester()
            me = str(user.boundjid)

            ping = user.request(PROXY_DOMAIN, payload="<ping xmlns='urn:xmpp:ping'/>")
            reply = await user.reply(ping, PROMPT)
            assert (reply.type, reply.from_, reply.to, reply.payload) == (
                "result",
                PROXY_DOMAIN,
                me,
                (),
            ), reply

            version = user.request(PROXY_DOMAIN, payload="<query xmlns='jabber:iq:version'/>")
            reply = await user.reply(version, PROMPT)
            assert (reply.type, reply.from_) == ("result", PROXY_DOMAIN), reply
            (query,) = [ET.fromstring(p) for p in reply.payload]
            assert query.findtext("{jabber:iq:version}name"), reply

            echo = user.request(PROXY_DOMAIN, payload=echo_payload("hello"))
            reply = await user.reply(echo, PROMPT)
            assert (reply.type, reply.from_, reply.id) == ("result", PROXY_DOMAIN, echo), reply
            (query,) = [ET.fromstring(p) for p in reply.payload]
            assert query.findtext("{urn:example:echo}text") == "hello"
            assert query.findtext("{urn:example:echo}requester") == me

            mark = daemon.mark()
            example.send_signal(signal.SIGTERM)
            await env.wait_resource(daemon, "resource.offline", "worker", since=mark)
            assert await asyncio.to_thread(example.wait, 10) == 0
        finally:
            if example.poll() is None:
                example.kill()
            output = await asyncio.to_thread(example.communicate, timeout=10)
            print("--- example output ---\n" + (output[0] or ""))

    env.run(main)


# -- event loops ----------------------------------------------------------------------------------


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_each_event_loop(env: ProxyEnv, loop: str) -> None:
    """With `event_loop = "uvloop"` (the default where it is installed) and with
    `event_loop = "asyncio"` the daemon proxies the same: 100 requests over two resources all
    answered once, a get held by a resource that drops its connection is retried on the other,
    and SIGTERM still drains and exits 0."""
    if loop == "uvloop":
        pytest.importorskip("uvloop")

    async def main() -> None:
        daemon = await env.ready_daemon(event_loop=loop)
        alpha, bravo = await env.online(daemon, "alpha", "bravo")
        user = await env.requester()
        me = str(user.boundjid)
        ids = [user.request(PROXY_DOMAIN) for _ in range(100)]
        replies = await user.all_replies(ids, 20)
        for rid in ids:
            assert_result(
                replies[rid], to=me, from_=PROXY_DOMAIN, id=rid, payload=echo_payload(rid)
            )

        alpha.mode = bravo.mode = "hold"
        held = user.request(PROXY_DOMAIN)
        await wait_for(lambda: held in alpha.held or held in bravo.held, "the request held")
        holder, other = (alpha, bravo) if held in alpha.held else (bravo, alpha)
        other.mode = "echo"
        holder.kill()
        reply = await user.reply(held, PROMPT)
        assert_result(reply, to=me, from_=PROXY_DOMAIN, id=held, payload=echo_payload(held))

        daemon.process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(daemon.process.wait, 15) == 0
        await asyncio.sleep(0.3)
        assert user.unsolicited() == [], user.unsolicited()[:5]

    env.run(main)
