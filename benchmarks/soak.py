"""`just soak [SECONDS]`: steady load under churn; every request must get exactly one answer.

Against a throwaway Prosody on loopback and the proxy (`client-proxy run`, a real process), one
requester sends a steady stream of IQs (gets and sets, to the proxy's domain and to a full JID
at it) while the target's resources come and go every few seconds: new ones log in, others log
out cleanly, and now and then one stops answering and drops its TCP connection with requests in
hand (no unavailable presence, no end of stream). Halfway through, the proxy is restarted
(SIGTERM, drain, start again); meanwhile Prosody itself answers requests to the component
(`remote-server-timeout`).

It reports requests sent, answered with a result, answered with an error (by condition), and
never answered: no reply within request_timeout plus a margin while the requester stayed
connected. That must be 0, as must replies to nothing outstanding (duplicates, strays) and
replies from another address than the one the request was sent to; otherwise it exits 1. It
also reports the proxy's RSS at start and end (of each of its two runs).

With ``--kill`` a second instance runs from the start as a standby (Prosody refuses it with
`conflict` while the first holds the component), and instead of the restart the active
instance is killed with SIGKILL ``--kills`` times, evenly spread; each time the standby takes
over and the killed one is started again, as systemd's Restart= would, to stand by in turn.
Forwarded ids are sealed, so the instance that takes over delivers the target's replies to what
the killed one forwarded (`answered.recovered`). The report counts every request by what became
of it:

- answered, and among them answered by recovery: the target sent its reply after the instance
  that forwarded the request had been killed (the sealed id names that instance; the soak
  checks the count against the instances' own `answered.recovered`, which each logs in a status
  line, SIGUSR1, just before it is killed or stopped);
- bounced by Prosody in the gap between the death and the takeover (`remote-server-timeout`
  with `<not-connected/>`);
- never answered, by cause: lost inside the killed instance before it forwarded them (in its
  connection, or read and not yet sent); the target's reply sent to an instance in its last
  second (in flight to it, or read and not yet delivered); the target's reply sent in the gap,
  which Prosody drops; no reply from the target at all, with the instance that owed the timeout
  answer killed; the target's reply after the request's deadline.

It fails on a duplicate, a stray or a reply from the wrong address; on a reply that reached a
live instance before its deadline and was not delivered; on any other request never answered
(its instance lived past its deadline, or no kill explains it: sent more than a second after a
takeover, or long before a kill); and when the replies delivered by recovery and the instances'
count of them differ.

    python -m benchmarks.soak --duration 300      # or SOAK_SECONDS=300
    python -m benchmarks.soak --duration 120 --kill
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from client_proxy.core._seal import original_of
from client_proxy.testing.prosody import Prosody, prosody_available

from ._procs import ProxyProcess, rss_kib, write_proxy_config
from ._xmpp import Client, Top, esc, login

PROXY = "proxy.localhost"
SECRET = "soak-secret"
PASSWORD = "soak-password"
TARGET = "svc@localhost"
REQUESTER = "user@localhost/soak"
PAYLOAD = "<query xmlns='urn:example:soak'/>"
#: A request's payload names it, so that a resource can tell which requests reached it, whatever
#: id the proxy forwards them with.
REQUEST = "<query xmlns='urn:example:soak' n='{}'/>"
#: The proxy's log line for answers it could not send, even on a fresh connection, because
#: their requests reached it after it had sent its end of stream.
_LOST = re.compile(r"stop\.lost: \d+ answer\(s\) [^:]*: (.*)$")
#: The start of the proxy's status line (SIGUSR1), and the counter it carries of the replies it
#: delivered to requests another instance forwarded.
_STATUS = "status: link="
_RECOVERED = re.compile(r"\banswered\.recovered=(\d+)")
#: A reply the target sends this long before a kill may still be in flight to the instance, or
#: read and not yet delivered: lost with it.
IN_FLIGHT = 1.0


@dataclass
class Sent:
    at: float
    to: str
    type: str


def _instance_of(ident: str) -> str:
    """The tag of the instance that sealed ``ident`` (``client_proxy.core._seal``: it follows the
    original id, which follows its length); "" for an id that is not sealed."""
    original = original_of(ident)
    if original is None:
        return ""
    start = ident.find(".") + 1 + len(original)
    return ident[start : start + 8]


@dataclass
class Forward:
    """One request as it reached a target resource."""

    #: The instance that forwarded it: the tag in its sealed id, random per process.
    instance: str
    reached: float
    #: When the resource sent its answer; None: it never did (it stalled, or left first).
    answered: float | None = None


@dataclass
class Tally:
    sent: int = 0
    results: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    late: int = 0
    duplicates: int = 0
    strays: int = 0
    wrong_sender: int = 0
    latencies: list[float] = field(default_factory=list)
    #: Errors the server sent itself because no instance held the component (Prosody's
    #: `<not-connected/>`), by condition; not counted in `errors`.
    bounced: Counter[str] = field(default_factory=Counter)


class Requester:
    """Sends at a steady rate and matches every reply to what it sent, by id."""

    def __init__(self, client: Client, rate: float, deadline: float, rng: random.Random) -> None:
        self.client = client
        self.rate = rate
        self.deadline = deadline  # request_timeout + margin
        self.rng = rng
        self.pending: dict[str, Sent] = {}
        #: When the (first) answer to each request came, late ones included.
        self.answered: dict[str, float] = {}
        #: (sent, answered) of every request answered with a result, in the order answered.
        self.results: list[tuple[float, float]] = []
        #: Requests answered after the deadline (counted as never answered).
        self.late: list[tuple[str, Sent]] = []
        self.tally = Tally()
        self.lost = False
        client.on_top = self.on_top
        client.on_lost = self._lost

    def _lost(self, _client: Client) -> None:
        self.lost = True

    def send_one(self) -> None:
        self.tally.sent += 1
        iq_id = f"s{self.tally.sent}"
        to = PROXY if self.rng.random() < 0.9 else f"{PROXY}/x"
        kind = "get" if self.rng.random() < 0.8 else "set"
        self.pending[iq_id] = Sent(time.monotonic(), to, kind)
        self.client.send(f"<iq type='{kind}' id='{iq_id}' to='{to}'>{REQUEST.format(iq_id)}</iq>")

    async def run(self, until: float) -> None:
        owed = 0.0
        last = time.monotonic()
        while last < until and not self.lost:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            owed += self.rate * (min(now, until) - last)
            last = now
            while owed >= 1:
                owed -= 1
                self.send_one()

    def on_top(self, top: Top) -> None:
        if top.name != "iq" or top.attrs.get("type") not in ("result", "error"):
            return
        iq_id = top.attrs.get("id", "")
        sent = self.pending.pop(iq_id, None)
        tally = self.tally
        if sent is None:
            if iq_id in self.answered:
                tally.duplicates += 1
            else:
                tally.strays += 1
            return
        now = time.monotonic()
        self.answered[iq_id] = now
        waited = now - sent.at
        tally.latencies.append(waited)
        if waited > self.deadline:
            tally.late += 1  # answered, but too late: counted as never answered
            self.late.append((iq_id, sent))
        elif top.attrs.get("type") == "result":
            tally.results += 1
            self.results.append((sent.at, now))
        elif top.app_condition == "not-connected":
            tally.bounced[top.condition or "(no condition)"] += 1
        else:
            tally.errors[top.condition or "(no condition)"] += 1
        if top.attrs.get("from") != sent.to:
            tally.wrong_sender += 1


class Resource:
    """One of the target's resources: answers IQs (mostly at once, some after a while), and notes
    in ``forwards`` (shared by all), under the name of every request that reached it, which
    instance forwarded it and when it came and was answered."""

    def __init__(
        self, client: Client, rng: random.Random, forwards: dict[str, list[Forward]]
    ) -> None:
        self.client = client
        self.rng = rng
        self.stalled = False
        self.held: set[str] = set()
        self.forwards = forwards
        client.on_top = self.on_top

    @property
    def name(self) -> str:
        return self.client.resource

    def on_top(self, top: Top) -> None:
        attrs = top.attrs
        if top.name == "presence" and attrs.get("type") == "subscribe":
            if attrs.get("from") == PROXY:
                self.client.send(f"<presence type='subscribed' to='{PROXY}'/>")
            return
        if top.name != "iq" or attrs.get("type") not in ("get", "set"):
            return
        key = attrs.get("id", "")
        self.held.add(key)
        forward = Forward(_instance_of(key), time.monotonic())
        if top.child_attrs is not None and "n" in top.child_attrs:
            self.forwards.setdefault(top.child_attrs["n"], []).append(forward)
        if self.stalled:
            return
        roll = self.rng.random()
        if roll < 0.7:
            self.answer(attrs, forward)
        else:
            delay = self.rng.uniform(0, 0.05) if roll < 0.95 else self.rng.uniform(0.2, 1.0)
            asyncio.get_running_loop().call_later(delay, self.answer, attrs, forward)

    def answer(self, attrs: dict[str, str], forward: Forward) -> None:
        if self.stalled or not self.client.connected:
            return
        self.held.discard(attrs.get("id", ""))
        forward.answered = time.monotonic()
        head = f"<iq id='{esc(attrs.get('id', ''))}' to='{esc(attrs.get('from', ''))}'"
        if self.rng.random() < 0.02:  # the service itself refuses a few
            self.client.send(
                f"{head} type='error'><error type='cancel'><item-not-found "
                "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
            )
        else:
            self.client.send(f"{head} type='result'>{PAYLOAD}</iq>")


@dataclass
class Kill:
    """One SIGKILL of the active instance (monotonic times)."""

    at: float
    #: When the standby logged that it took over, and when the first request sent after the
    #: kill got its result.
    takeover: float
    first_result: float | None = None


@dataclass
class Churn:
    joins: int = 0
    leaves: int = 0
    drops: int = 0
    held_at_drop: int = 0
    failed_joins: int = 0


class Soak:
    def __init__(self, args: argparse.Namespace, server: Prosody, config: Path) -> None:
        self.args = args
        self.server = server
        self.config = config
        self.rng = random.Random(args.seed)
        self.resources: list[Resource] = []
        self.churn = Churn()
        self.names = 0
        self.proxy: ProxyProcess | None = None
        self.rss: list[tuple[str, int]] = []
        self.proxies: list[ProxyProcess] = []
        self.restart_note = ""
        #: With --kill: the instance standing by, and every kill.
        self.standby: ProxyProcess | None = None
        self.kills: list[Kill] = []
        #: Every time a request reached a target resource, by the request's name (its id).
        self.forwards: dict[str, list[Forward]] = {}
        #: Unanswered requests the stopping proxy logged as arriving after its end of stream.
        self.after_end = 0
        #: Fresh connections the stopping proxy made to answer those.
        self.flushed = 0

    def log(self, text: str) -> None:
        print(f"  [{time.monotonic() - self.started:6.1f} s] {text}", flush=True)

    async def join(self) -> None:
        self.names += 1
        jid = f"{TARGET}/w{self.names}"
        try:
            client = await login(
                "127.0.0.1", self.server.c2s_port, jid, PASSWORD, roster=True, timeout=10
            )
        except (OSError, TimeoutError) as exc:
            self.churn.failed_joins += 1
            self.log(f"join {jid} failed: {exc}")
            return
        resource = Resource(client, random.Random(self.rng.random()), self.forwards)
        client.send("<presence/>")
        self.resources.append(resource)
        self.churn.joins += 1

    async def leave(self, resource: Resource, abrupt: bool) -> None:
        self.resources.remove(resource)
        if abrupt:
            # Stop answering, let requests pile up in its hands, then drop the TCP connection.
            resource.stalled = True
            await asyncio.sleep(self.rng.uniform(0.3, 1.0))
            self.churn.drops += 1
            self.churn.held_at_drop += len(resource.held)
            resource.client.abort()
        else:
            self.churn.leaves += 1
            resource.client.close()

    async def churn_loop(self, until: float) -> None:
        leaves = 0
        while True:
            await asyncio.sleep(self.rng.uniform(self.args.churn_min, self.args.churn_max))
            if time.monotonic() >= until:
                return
            online = len(self.resources)
            if online == 0 or (online < 3 and self.rng.random() < 0.5):
                await self.join()
            else:
                leaves += 1
                # Every third departure is abrupt (and the others, now and then, too).
                abrupt = leaves % 3 == 0 or self.rng.random() < 0.15
                await self.leave(self.rng.choice(self.resources), abrupt)

    def start_proxy(self) -> ProxyProcess:
        proxy = ProxyProcess(self.config, extra_args=("--log-level", self.args.proxy_log_level))
        self.proxies.append(proxy)
        return proxy

    async def status(self, proxy: ProxyProcess) -> None:
        """Have ``proxy`` log its status line (SIGUSR1), with its counters, and wait for it."""
        if proxy.process.poll() is not None:
            return
        seen = proxy.count(_STATUS)
        os.kill(proxy.pid, signal.SIGUSR1)
        await asyncio.to_thread(proxy.wait_for, _STATUS, seen + 1, 10.0)

    def recovered(self) -> int:
        """The replies delivered to requests another instance had forwarded, as the instances
        counted them (each one's last line with its counters)."""
        total = 0
        for proxy in self.proxies:
            counted = [line for line in proxy.lines if "counters:" in line]
            if counted and (m := _RECOVERED.search(counted[-1])):
                total += int(m[1])
        return total

    def deaths(self) -> dict[str, Kill | None]:
        """The kill that ended each instance (by the tag it seals ids with), None for one alive
        at the end. One instance is active at a time, and it forwards from its takeover to its
        death, so an instance whose first forward reached a resource after n kills was ended
        by kill n+1."""
        first: dict[str, float] = {}
        for forwards in self.forwards.values():
            for f in forwards:
                first[f.instance] = min(f.reached, first.get(f.instance, f.reached))
        ends: dict[str, Kill | None] = {}
        for tag, at in first.items():
            n = sum(1 for k in self.kills if k.at < at)
            ends[tag] = self.kills[n] if n < len(self.kills) else None
        return ends

    def sample_rss(self, label: str) -> None:
        if self.proxy is not None and self.proxy.process.poll() is None:
            self.rss.append((label, rss_kib(self.proxy.pid)))

    async def restart_at(self, when: float) -> None:
        await asyncio.sleep(max(0.0, when - time.monotonic()))
        assert self.proxy is not None
        self.sample_rss("run 1 end")
        await self.status(self.proxy)
        self.log("restarting the proxy (SIGTERM, then start again)")
        began = time.monotonic()
        code = await asyncio.to_thread(self.proxy.stop)
        self.proxy = self.start_proxy()
        await asyncio.to_thread(self.proxy.wait_for, "connection.up", 1, 60.0)
        took = time.monotonic() - began
        self.restart_note = f"the proxy exited {code} on SIGTERM and was back in {took:.1f} s"
        self.log(self.restart_note)
        await asyncio.sleep(2)
        self.sample_rss("run 2 start")

    async def start_standby(self) -> None:
        self.standby = self.start_proxy()
        await asyncio.to_thread(self.standby.wait_for, "standby:", 1, 30.0)

    async def kill_at(self, when: float) -> None:
        """SIGKILL the active instance at ``when``; the standby takes over, and the killed one
        comes back to stand by (as systemd's Restart= would start it again)."""
        await asyncio.sleep(max(0.0, when - time.monotonic()))
        victim, standby = self.proxy, self.standby
        assert victim is not None and standby is not None
        await self.status(victim)
        killed = time.monotonic()
        os.kill(victim.pid, signal.SIGKILL)
        await asyncio.to_thread(victim.process.wait)
        await asyncio.to_thread(standby.wait_for, "standby.takeover", 1, 30.0)
        took = time.monotonic() - killed
        self.kills.append(Kill(killed, took))
        self.log(f"killed the active proxy (SIGKILL); the standby took over in {took:.2f} s")
        self.proxy = standby
        await self.start_standby()

    async def run(self) -> tuple[Requester, int]:
        args = self.args
        self.started = time.monotonic()
        for _ in range(2):
            await self.join()
        self.proxy = self.start_proxy()
        await asyncio.to_thread(self.proxy.wait_for, "resource.online", 2, 30.0)
        if args.kill:
            await self.start_standby()
        client = await login("127.0.0.1", self.server.c2s_port, REQUESTER, PASSWORD)
        deadline = args.request_timeout + args.margin
        requester = Requester(client, args.rate, deadline, random.Random(args.seed + 1))
        self.log(f"load: {args.rate:g} requests/s for {args.duration:g} s")
        begin = time.monotonic()
        until = begin + args.duration
        tasks = [asyncio.create_task(self.churn_loop(until))]
        if args.kill:
            spacing = args.duration / (args.kills + 1)
            when = [begin + spacing * (i + 1) for i in range(args.kills)]
            tasks.append(asyncio.create_task(self.kill_loop(when)))
        else:
            when = begin + args.duration * args.restart_at
            tasks.append(asyncio.create_task(self.restart_at(when)))

        async def first_sample() -> None:
            await asyncio.sleep(min(2.0, args.duration / 10))
            self.sample_rss("start" if args.kill else "run 1 start")

        tasks.append(asyncio.create_task(first_sample()))
        await requester.run(until)
        for task in tasks:
            with contextlib.suppress(Exception):
                await task
        self.sample_rss("end" if args.kill else "run 2 end")
        # Wait for the last answers: every request has request_timeout + margin.
        self.log(f"load stopped; waiting up to {deadline:g} s for the last answers")
        last = time.monotonic() + deadline
        while requester.pending and time.monotonic() < last and not requester.lost:
            await asyncio.sleep(0.1)
        if self.proxy is not None:
            await self.status(self.proxy)
        # Everything still pending was sent at least request_timeout + margin ago.
        unanswered = len(requester.pending) + requester.tally.late
        lost = {
            iq_id
            for proxy in self.proxies
            for line in proxy.lines
            if (m := _LOST.search(line))
            for iq_id in m[1].split()
        }
        self.after_end = sum(1 for iq_id in requester.pending if iq_id in lost)
        self.flushed = sum("stop.flush:" in line for p in self.proxies for line in p.lines)
        for iq_id, sent in list(requester.pending.items())[:10]:
            self.log(
                f"never answered: {iq_id} ({sent.type} to {sent.to}, sent at "
                f"{sent.at - self.started:.2f} s)"
            )
        client.on_lost = None  # from here on, the requester leaving is ours
        for resource in self.resources:
            resource.client.close()
        client.close()
        await asyncio.sleep(0.2)
        return requester, unanswered

    async def kill_loop(self, times: list[float]) -> None:
        for when in times:
            await self.kill_at(when)

    def stop(self) -> None:
        for proxy in (self.proxy, self.standby):
            if proxy is not None:
                proxy.stop()


def _mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


@dataclass
class Fates:
    """What became of the requests, with --kill (where a SIGKILL explains some losses)."""

    #: Answered with the target's reply, sent after the instance that forwarded the request was
    #: killed: delivered by the instance that took over.
    recovered: int = 0
    #: Never answered, and never reached a target resource: lost inside a killed instance (in its
    #: connection, or read and not yet forwarded).
    swallowed: int = 0
    #: Never answered: the target's reply went to an instance within IN_FLIGHT of its kill (in
    #: flight to it, or read and not yet delivered).
    dying: int = 0
    #: The longest of them between the reply and the kill.
    dying_lead: float = 0.0
    #: Never answered: the target's reply came while no instance held the component, and
    #: Prosody dropped it.
    gap: int = 0
    #: Never answered: the target never replied, and the instance that owed the timeout answer
    #: was killed before the deadline.
    orphaned: int = 0
    #: Never answered: the target's reply came after the request's deadline (dropped, expired),
    #: and the instance that owed the timeout answer was killed before it.
    expired: int = 0
    #: Never answered, though the target's reply reached a live instance before the deadline.
    undelivered: list[str] = field(default_factory=list)
    #: Never answered, and no kill explains it: its instance lived past its deadline, or it was
    #: neither sent shortly before a kill nor before its takeover was over.
    unexplained: list[str] = field(default_factory=list)


def fates(soak: Soak, requester: Requester, args: argparse.Namespace) -> Fates:
    """Sort the requests by what became of them. A request is followed to the last resource it
    reached: the instance that forwarded it (its sealed id's tag), and when the resource answered.
    That answer went to the instance active at that moment, which delivers it unless it was
    killed within IN_FLIGHT, or there was none (a gap), or the deadline had passed; a request
    that never reached a resource was lost with a killed instance if it was sent from
    ``request_timeout + margin`` before the kill to a second after its takeover."""
    found = Fates()
    timeout = args.request_timeout
    deadline = timeout + args.margin
    kills = soak.kills
    ends = soak.deaths()
    for iq_id, received in requester.answered.items():
        forwards = soak.forwards.get(iq_id)
        if forwards and (answered := forwards[-1].answered) is not None:
            end = ends.get(forwards[-1].instance)
            if end is not None and end.at <= answered <= received:
                found.recovered += 1
    for iq_id, sent in [*requester.pending.items(), *requester.late]:
        forwards = soak.forwards.get(iq_id)
        if not forwards:
            if any(k.at - deadline <= sent.at <= k.at + k.takeover + 1.0 for k in kills):
                found.swallowed += 1
            else:
                found.unexplained.append(iq_id)
            continue
        last = forwards[-1]
        end = ends.get(last.instance)
        answered = last.answered
        if end is None or end.at > sent.at + timeout + 1.0:
            # Its instance was alive at its deadline: it owed an answer, the reply or a timeout.
            found.unexplained.append(iq_id)
        elif answered is None:
            found.orphaned += 1
        elif any(k.at <= answered < k.at + k.takeover for k in kills):
            found.gap += 1
        elif dying := [k.at - answered for k in kills if 0 < k.at - answered <= IN_FLIGHT]:
            found.dying += 1
            found.dying_lead = max(found.dying_lead, *dying)
        elif answered >= sent.at + timeout - 0.5:
            found.expired += 1
        else:
            found.undelivered.append(iq_id)
    return found


def report(soak: Soak, requester: Requester, unanswered: int, args: argparse.Namespace) -> int:
    t = requester.tally
    errors = sum(t.errors.values())
    bounced = sum(t.bounced.values())
    churn = soak.churn
    lat = sorted(t.latencies)

    def pct(q: float) -> str:
        return f"{lat[min(len(lat) - 1, int(q * len(lat)))] * 1000:.1f} ms" if lat else "-"

    print()
    print(
        f"soak: {args.duration:g} s at {args.rate:g} requests/s, request_timeout "
        f"{args.request_timeout:g} s (+{args.margin:g} s margin), seed {args.seed}"
    )
    print(
        f"churn: {churn.joins} joins, {churn.leaves} clean leaves, {churn.drops} abrupt "
        f"disconnects holding {churn.held_at_drop} requests between them"
        + (f", {churn.failed_joins} failed joins" if churn.failed_joins else "")
    )
    if args.kill:
        for kill in soak.kills:
            later = [done for sent, done in requester.results if sent >= kill.at]
            kill.first_result = min(later) - kill.at if later else None
        takeovers = ", ".join(f"{k.takeover:.2f}" for k in soak.kills) or "-"
        firsts = ", ".join(
            f"{k.first_result:.2f}" if k.first_result is not None else "-" for k in soak.kills
        )
        print(
            f"kills: {len(soak.kills)} of {args.kills} (SIGKILL of the active instance, a "
            f"standby running); standby.takeover after {takeovers} s; the first result to a "
            f"request sent after the kill after {firsts} s"
        )
    else:
        print(f"restart: {soak.restart_note or 'did not happen'}")
    if soak.flushed:
        print(
            f"    the stopping proxy reconnected {soak.flushed} time(s) to answer requests that "
            "reached it after its end of stream (stop.flush)"
        )
    found = fates(soak, requester, args)
    counted = soak.recovered()
    print(f"requests sent:            {t.sent:>8,}")
    print(f"answered with a result:   {t.results:>8,}")
    print(f"answered with an error:   {errors:>8,}")
    for condition, count in t.errors.most_common():
        print(f"    {condition:<26}{count:>6,}")
    if args.kill:
        print(
            f"  of them by recovery:    {found.recovered:>8,}  (the target replied after the "
            "instance that forwarded the request was killed; the instances counted "
            f"answered.recovered {counted:,})"
        )
    else:
        print(f"  answered.recovered, as the instances counted it: {counted:,}")
    print(
        f"bounced by Prosody:       {bounced:>8,}  (in the gap, no instance held the component: "
        + (", ".join(f"{c} {n:,}" for c, n in t.bounced.most_common()) or "none")
        + ")"
    )
    print(f"never answered:           {unanswered:>8,}" + (f" ({t.late} late)" if t.late else ""))
    if soak.after_end:
        print(
            f"    {soak.after_end} of them reached the stopping proxy after it had sent its end of "
            "stream, and it could not send their answers even on a fresh connection (stop.lost)"
        )
    # One tag per instance, each ended by its own kill: otherwise the instances were not told
    # apart, and the sorting below means nothing.
    ended = [id(k) for k in soak.deaths().values() if k is not None]
    told_apart = len(ended) == len(set(ended))
    if args.kill:
        for count, text in (
            (
                found.swallowed,
                "never reached the target: lost inside a killed instance (in its connection, "
                "or read and not yet forwarded)",
            ),
            (
                found.dying,
                f"the target's reply went to an instance within {IN_FLIGHT:g} s of its kill "
                "(in flight to it, or read and not yet delivered)"
                + (f": at most {found.dying_lead:.3f} s before it" if found.dying else ""),
            ),
            (
                found.gap,
                "the target's reply came in the gap, while no instance held the component: "
                "Prosody drops it",
            ),
            (
                found.orphaned,
                "no reply from the target, and the instance that owed the timeout answer "
                "was killed",
            ),
            (
                found.expired,
                "the target's reply came after the deadline, and the instance that owed the "
                "timeout answer was killed",
            ),
            (
                len(found.undelivered),
                "the target's reply reached a live instance before the deadline, and was not "
                "delivered (must be 0)",
            ),
            (
                len(found.unexplained),
                "not explained by a kill (must be 0)",
            ),
        ):
            print(f"    {count:>6,} {text}")
        for iq_id in [*found.undelivered, *found.unexplained][:10]:
            sent = requester.pending.get(iq_id)
            forwards = soak.forwards.get(iq_id, [])
            print(
                f"        {iq_id}: sent at "
                + (f"{sent.at - soak.started:.2f} s" if sent else "?")
                + "".join(
                    f"; reached a resource at {f.reached - soak.started:.2f} s from instance "
                    f"{f.instance}, answered "
                    + ("never" if f.answered is None else f"at {f.answered - soak.started:.2f} s")
                    for f in forwards
                )
            )
        if not told_apart:
            print("    the instances could not be told apart by their sealed ids")
    print(
        f"duplicates {t.duplicates}, strays {t.strays}, from another address "
        f"{t.wrong_sender}; requester stayed connected: {'no' if requester.lost else 'yes'}"
    )
    print(f"latency: p50 {pct(0.5)}, p99 {pct(0.99)}, max {pct(1.0)}")
    print("proxy RSS: " + ", ".join(f"{label} {_mib(kib)}" for label, kib in soak.rss))
    accounted = t.results + errors + bounced + unanswered
    if args.kill:
        lost_ok = (
            not found.unexplained
            and not found.undelivered
            and told_apart
            and found.recovered == counted
        )
    else:
        lost_ok = unanswered == 0
    ok = (
        lost_ok
        and t.duplicates == 0
        and t.strays == 0
        and t.wrong_sender == 0
        and not requester.lost
        and accounted == t.sent
        and (not args.kill or len(soak.kills) == args.kills)
    )
    print("soak: OK" if ok else "soak: FAILED")
    return 0 if ok else 1


async def main_async(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="client-proxy-soak-") as tmp:
        work = Path(tmp)
        server = Prosody(work / "prosody", components={PROXY: SECRET}, log_level="warn")
        for account in (TARGET, REQUESTER.partition("/")[0]):
            server.register(account.split("@")[0], "localhost", PASSWORD)
        config = write_proxy_config(
            work / "client-proxy.toml",
            {
                "component": PROXY,
                "server": f"127.0.0.1:{server.component_port}",
                "secret": SECRET,
                "target": TARGET,
                "request_timeout": args.request_timeout,
                "drain_timeout": 2,
                "reconnect_max_delay": 2,
                "seed": args.seed,
                # One requester stands for many users here: no per-requester rate limit.
                "rate_limit": 0,
                **({"event_loop": args.event_loop} if args.event_loop else {}),
            },
        )
        server.start()
        soak = Soak(args, server, config)
        try:
            requester, unanswered = await soak.run()
        finally:
            soak.stop()
            server.stop()
            if args.keep_logs:
                keep = Path(args.keep_logs)
                keep.mkdir(parents=True, exist_ok=True)
                for n, proxy in enumerate(soak.proxies, 1):
                    text = "\n".join(proxy.lines) + "\n"
                    (keep / f"proxy-{n}.log").write_text(text, encoding="utf-8")
                if server.log_path.exists():
                    shutil.copy(server.log_path, keep / "prosody.log")
    return report(soak, requester, unanswered, args)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--duration",
        type=float,
        default=float(os.environ.get("SOAK_SECONDS", "300")),
        help="seconds of load (default $SOAK_SECONDS or 300)",
    )
    parser.add_argument("--rate", type=float, default=100.0, help="requests/s (default 100)")
    parser.add_argument("--request-timeout", type=float, default=5.0, help="proxy's, seconds")
    parser.add_argument("--margin", type=float, default=5.0, help="seconds past the timeout")
    parser.add_argument("--churn-min", type=float, default=2.0, help="seconds between changes")
    parser.add_argument("--churn-max", type=float, default=5.0)
    parser.add_argument(
        "--restart-at", type=float, default=0.5, help="when to restart the proxy (share of run)"
    )
    parser.add_argument(
        "--kill",
        action="store_true",
        help="a standby beside the proxy, and SIGKILL instead of the restart: count by cause",
    )
    parser.add_argument(
        "--kills", type=int, default=3, help="with --kill: how many, evenly spread (default 3)"
    )
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--event-loop", choices=("asyncio", "uvloop"), default=None)
    parser.add_argument(
        "--proxy-log-level", choices=("debug", "info", "warning", "error"), default="info"
    )
    parser.add_argument("--keep-logs", metavar="DIR", help="copy the proxy's and Prosody's logs")
    args = parser.parse_args()
    if not prosody_available():
        print("soak: prosody is not installed; run it through ./just soak", file=sys.stderr)
        return 1
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
