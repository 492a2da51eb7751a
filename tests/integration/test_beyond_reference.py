"""What mod_client_proxy cannot do, end to end against a real server (Prosody and ejabberd): IQs
started by the implementing client, messages both ways, routing strategies, eligible resources,
a failing session taken out of rotation, allow/deny lists and the per-requester rate limit."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from typing import Any

import pytest
from proxy_env import PASSWORD, PROMPT, PROXY_DOMAIN, ProxyEnv, wait_for
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath
from xmpp_clients import TargetResource, echo_payload

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

CLIENT_NS = "jabber:client"


def record_messages(client: Any) -> list[dict[str, str | None]]:
    """Record every message `client` receives: type, id, from, to, body."""
    seen: list[dict[str, str | None]] = []

    def on_message(stanza: Any) -> None:
        xml = stanza.xml
        seen.append(
            {
                "type": xml.get("type"),
                "id": xml.get("id"),
                "from": xml.get("from"),
                "to": xml.get("to"),
                "body": xml.findtext(f"{{{CLIENT_NS}}}body"),
                "error": next(
                    (
                        c.tag.rpartition("}")[2]
                        for e in xml.iter(f"{{{CLIENT_NS}}}error")
                        for c in e
                    ),
                    None,
                ),
            }
        )

    client.register_handler(
        Callback("record message", MatchXPath(f"{{{CLIENT_NS}}}message"), on_message)
    )
    return seen


def send_message(client: Any, to: str, body: str, ident: str, mtype: str = "chat") -> None:
    message = client.make_message(mto=to, mbody=body, mtype=mtype)
    message["id"] = ident
    message.send()


class FailingResource(TargetResource):
    """A misconfigured session of the target account: it answers every forwarded request with
    `feature-not-implemented`, as the stray sessions Jitsi operators met did."""

    def on_iq(self, iq: Any) -> None:
        if iq["type"] in ("get", "set") and self._from_proxy(str(iq["from"])):
            self.error_for(iq, "feature-not-implemented", "cancel").send()


async def failing_resource(env: ProxyEnv, name: str) -> FailingResource:
    client = FailingResource(
        f"{env.target}/{name}",
        PASSWORD,
        "127.0.0.1",
        env.server.c2s_port,
        proxy_domain=PROXY_DOMAIN,
    )
    env.clients.append(client)
    await client.start()
    return client


def holder(resources: list[TargetResource], iq_id: str) -> str:
    owners = [r.resource for r in resources if any(q.original == iq_id for q in r.requests)]
    assert len(owners) == 1, (iq_id, owners)
    return owners[0]


def test_target_starts_an_iq_and_gets_the_users_answer(env: ProxyEnv) -> None:
    """Two resources send an IQ with the same id to the same user through the proxy: the user
    gets two IQs from 'proxy.localhost' with distinct ids, and each answer goes back to the
    resource that asked, from 'proxy.localhost/<user>', with that resource's id."""

    async def main() -> None:
        daemon = await env.ready_daemon()
        a, b = await env.online(daemon, "a", "b")
        user = await env.requester(resource="desk")
        user_jid = str(user.boundjid)
        for resource in (a, b):
            resource.send_raw_iq(
                to=f"{PROXY_DOMAIN}/{user_jid}",
                id="same",
                type="get",
                payload=echo_payload(f"from {resource.resource}"),
            )
        await wait_for(lambda: len([q for q in user.iqs if q.type == "get"]) == 2, "two IQs")
        asked = [q for q in user.iqs if q.type == "get"]
        assert {q.from_ for q in asked} == {PROXY_DOMAIN}
        assert len({q.id for q in asked}) == 2 and "same" not in {q.id for q in asked}
        for q in asked:
            who = ET.fromstring(q.payload[0]).findtext(".//{urn:example:echo}text")
            answer = user.make_iq(id=q.id, ito=q.from_, itype="result")
            answer.append(ET.fromstring(echo_payload(f"answer to {who}")))
            answer.send()
        for resource in (a, b):
            await wait_for(
                lambda r=resource: any(q.type == "result" for q in r.iqs), "the user's answer"
            )
            (got,) = [q for q in resource.iqs if q.type == "result"]
            assert (got.id, got.from_) == ("same", f"{PROXY_DOMAIN}/{user_jid}")
            text = ET.fromstring(got.payload[0]).findtext(".//{urn:example:echo}text")
            assert text == f"answer to from {resource.resource}"

    env.run(main)


def test_messages_both_ways(env: ProxyEnv) -> None:
    """A user's messages reach one resource (the same each time) from the translated address;
    the resource's answer reaches the user from the proxy domain."""

    async def main() -> None:
        daemon = await env.ready_daemon()
        resources = await env.online(daemon, "a", "b")
        inboxes = {r.resource: record_messages(r) for r in resources}
        user = await env.requester(resource="phone")
        user_inbox = record_messages(user)
        user_jid = str(user.boundjid)
        for n in range(4):
            send_message(user, PROXY_DOMAIN, f"hello {n}", f"m{n}")
        await wait_for(lambda: sum(len(v) for v in inboxes.values()) == 4, "four messages")
        (receiver,) = [name for name, box in inboxes.items() if box]
        assert [m["body"] for m in inboxes[receiver]] == [f"hello {n}" for n in range(4)]
        assert {m["from"] for m in inboxes[receiver]} == {f"{PROXY_DOMAIN}/{user_jid}"}
        (sender,) = [r for r in resources if r.resource == receiver]
        send_message(sender, f"{PROXY_DOMAIN}/{user_jid}", "hi back", "r1")
        await wait_for(lambda: any(m["body"] == "hi back" for m in user_inbox), "the answer")
        (answer,) = [m for m in user_inbox if m["body"] == "hi back"]
        assert (answer["from"], answer["id"]) == (PROXY_DOMAIN, "r1")

    env.run(main)


def test_sticky_routing_keeps_each_requester_on_one_resource(env: ProxyEnv) -> None:
    """routing = "sticky": every request of a requester lands on the same resource, and the
    requesters are spread over both."""

    async def main() -> None:
        daemon = await env.ready_daemon(routing="sticky")
        resources = await env.online(daemon, "a", "b")
        # The accounts' names carry pytest's pid, so the hash that places them changes from run
        # to run: with 8 of them all landed on one resource in about 1 run in 130 (measured over
        # 39,000 pids) and the test failed for no fault of the proxy's; with 16, none of those
        # pids does (1 in 32,768 in theory).
        users = [await env.requester(resource=f"r{i}") for i in range(16)]
        ids = {u: [u.request(PROXY_DOMAIN) for _ in range(4)] for u in users}
        for u, sent in ids.items():
            replies = await u.all_replies(sent, PROMPT)
            assert all(r.type == "result" for r in replies.values())
        homes = {u: {holder(resources, i) for i in sent} for u, sent in ids.items()}
        assert all(len(h) == 1 for h in homes.values()), homes
        assert {h for hs in homes.values() for h in hs} == {"a", "b"}

    env.run(main)


def test_resource_pattern_keeps_a_stray_session_out(env: ProxyEnv) -> None:
    """resource_pattern = "worker-.*": a session of the account named otherwise gets nothing."""

    async def main() -> None:
        daemon = await env.ready_daemon(resource_pattern="worker-.*")
        resources = await env.online(daemon, "worker-1", "stray", "worker-2")
        user = await env.requester()
        sent = [user.request(PROXY_DOMAIN) for _ in range(20)]
        replies = await user.all_replies(sent, PROMPT)
        assert all(r.type == "result" for r in replies.values())
        used = Counter(holder(resources, i) for i in sent)
        assert "stray" not in used and set(used) == {"worker-1", "worker-2"}

    env.run(main)


def test_failing_session_is_taken_out_of_rotation(env: ProxyEnv) -> None:
    """A session that answers feature-not-implemented (the Jitsi case) costs nobody an error:
    its gets are retried on the good resource, and after failure_threshold failures in a row it
    is out of rotation (resource.cooldown)."""

    async def main() -> None:
        daemon = await env.ready_daemon(failure_threshold=2, failure_cooldown=60)
        mark = daemon.mark()
        good = await env.resource("good")
        bad = await failing_resource(env, "bad")
        for name in ("good", "bad"):
            await env.wait_resource(daemon, "resource.online", name, since=mark)
        user = await env.requester()
        # One at a time, so that each failure is seen before the next choice is made.
        for _ in range(12):
            reply = await user.reply(user.request(PROXY_DOMAIN), PROMPT)
            assert reply.type == "result", reply
        await daemon.wait_log("resource.cooldown", containing="bad")
        assert len(bad.requests) == 2  # failure_threshold, then out of rotation
        more = [user.request(PROXY_DOMAIN) for _ in range(10)]
        again = await user.all_replies(more, PROMPT)
        assert all(r.type == "result" for r in again.values())
        assert len(bad.requests) == 2
        assert len(good.requests) == 22  # 20 of its own, and the 2 gets retried from "bad"

    env.run(main)


def test_deny_list_and_rate_limit(env: ProxyEnv) -> None:
    """A denied requester gets forbidden (auth) and the target never sees its request; a
    requester over its rate gets policy-violation (wait); somebody else is not affected."""

    async def main() -> None:
        banned = env.account("banned")
        daemon = await env.ready_daemon(deny=[banned], rate_limit=0.2, rate_burst=2)
        (svc,) = await env.online(daemon, "a")
        mallory = await env.requester(banned)
        refused = mallory.request(PROXY_DOMAIN)
        reply = await mallory.reply(refused, PROMPT)
        assert (reply.type, reply.error_condition, reply.error_type) == (
            "error",
            "forbidden",
            "auth",
        )
        assert reply.from_ == PROXY_DOMAIN
        hasty = await env.requester()
        burst = [hasty.request(PROXY_DOMAIN) for _ in range(4)]
        got = await hasty.all_replies(burst, PROMPT)
        outcomes = Counter(r.error_condition if r.type == "error" else r.type for r in got.values())
        assert outcomes == {"result": 2, "policy-violation": 2}, outcomes
        calm = await env.requester()
        fine = calm.request(PROXY_DOMAIN)
        assert (await calm.reply(fine, PROMPT)).type == "result"
        assert all(q.from_ != f"{PROXY_DOMAIN}/{mallory.boundjid}" for q in svc.requests)

    env.run(main)


def test_a_message_error_goes_back_to_the_resource_that_sent_it(env: ProxyEnv) -> None:
    """A resource messages a user who does not exist, through the proxy: the server's error for
    it comes back to the proxy from that address, and the proxy routes it to the resource that
    sent the message, from the translated address, with the message's id."""

    async def main() -> None:
        daemon = await env.ready_daemon()
        a, b = await env.online(daemon, "a", "b")
        inbox_a, inbox_b = record_messages(a), record_messages(b)
        nobody = "nobody-at-all@localhost/x"
        send_message(a, f"{PROXY_DOMAIN}/{nobody}", "anyone there?", "lost-1", mtype="normal")
        await wait_for(lambda: any(m["type"] == "error" for m in inbox_a), "the bounce")
        (bounce,) = [m for m in inbox_a if m["type"] == "error"]
        assert (bounce["from"], bounce["id"]) == (f"{PROXY_DOMAIN}/{nobody}", "lost-1")
        assert bounce["error"] == "service-unavailable", bounce
        assert inbox_b == []

    env.run(main)
