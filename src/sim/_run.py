"""One simulated run: build the deployment a schedule describes, play it, report what happened."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from client_proxy.core import LogRecord, ProxyConfig, encode_requester

from ._clients import Received, Requester, SentRequest, TargetClient
from ._clock import Clock, Hop
from ._schedule import (
    PROXY,
    TARGET,
    ComponentDown,
    ComponentUp,
    Forge,
    Offline,
    Online,
    RepeatPresence,
    Request,
    Schedule,
    Step,
    Stop,
    Vanish,
)
from ._server import SimServer
from ._transport import CoreTransport, TransportFactory
from ._xml import Element

__all__ = ["Outcome", "run"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one run did, as the whole-system properties need it.

    ``proxy_online`` and ``server_online`` are the proxy's and the server's views of the
    target's online resources once the faults had stopped and the run had settled (None for
    the proxy if it was stopped). ``unsendable`` lists what the proxy asked to send while its
    stream was down; ``violations`` what the server would have refused from the component.
    """

    schedule: Schedule
    requests: tuple[SentRequest, ...]
    user_received: tuple[Received, ...]
    target_received: tuple[Received, ...]
    hops: tuple[Hop, ...]
    proxy_online: frozenset[str] | None
    server_online: frozenset[str]
    unsendable: tuple[Element, ...]
    violations: tuple[str, ...]
    logs: tuple[LogRecord, ...]
    counters: Mapping[str, int]
    end: float

    def transcript(self, limit: int | None = None) -> str:
        """Every stanza delivered, in time order, one a line (the last ``limit`` if given)."""
        hops = self.hops if limit is None else self.hops[-limit:]
        lines = [str(h) for h in hops]
        if limit is not None and len(self.hops) > limit:
            lines.insert(0, f"    ... {len(self.hops) - limit} earlier stanzas left out")
        return "\n".join(lines)


def config_of(schedule: Schedule) -> ProxyConfig:
    s = schedule.settings
    return ProxyConfig(
        proxy_domain=PROXY,
        target=TARGET,
        request_timeout=s.request_timeout,
        retry_get=s.retry_get,
        retry_set=s.retry_set,
        max_outstanding=s.max_outstanding,
        max_per_requester=s.max_per_requester,
        sync_grace=s.sync_grace,
    )


def run(schedule: Schedule, transport: TransportFactory = CoreTransport) -> Outcome:
    """Play ``schedule`` against the core (through ``transport``) and the simulated server."""
    return _Run(schedule, transport).play()


class _Run:
    def __init__(self, schedule: Schedule, transport: TransportFactory) -> None:
        settings = schedule.settings
        self.schedule = schedule
        self.clock = Clock()
        self.hops: list[Hop] = []
        self.server = SimServer(
            self.clock,
            proxy_domain=PROXY,
            target=TARGET,
            detect_delay=settings.detect_delay,
            subscription="subscribed" if settings.subscribed else "none",
            hops=self.hops,
            profile=settings.server,
        )
        self.proxy = transport(config_of(schedule), settings.seed, self.clock, settings.timer_lag)
        self.users: dict[str, Requester] = {}
        for user in schedule.users:
            requester = Requester(user.jid, self.clock)
            requester.session = self.server.bind(user.jid, requester, user.latency)
            self.users[user.jid] = requester
        self.scripts = {r.name: r for r in schedule.resources}
        self.targets: dict[str, TargetClient] = {}
        self.every_target: list[TargetClient] = []
        self.serial = 0

    def play(self) -> Outcome:
        s = self.schedule
        self.server.connect_component(self.proxy, s.settings.component_latency)
        for item in s.steps:
            self.clock.call_at(item.at, self._action(item))
        # The faults stop after the last step: the component comes back if it is down; then the
        # run goes on until nothing is left to happen (every timer fired, every stanza landed).
        self.clock.call_at(s.end, self._heal)
        self.clock.run()
        proxy_online = None if self.proxy.stopped else self.proxy.online
        return Outcome(
            schedule=s,
            requests=tuple(r for u in self.users.values() for r in u.sent),
            user_received=tuple(
                sorted(
                    (r for u in self.users.values() for r in u.received),
                    key=lambda r: r.at,
                )
            ),
            target_received=tuple(
                sorted((r for t in self.every_target for r in t.received), key=lambda r: r.at)
            ),
            hops=tuple(self.hops),
            proxy_online=proxy_online,
            server_online=self.server.online(),
            unsendable=tuple(self.proxy.unsendable),
            violations=tuple(self.server.violations),
            logs=tuple(self.proxy.logs),
            counters=dict(self.proxy.counters),
            end=self.clock.now,
        )

    def _heal(self) -> None:
        if not self.server.component_connected and not self.proxy.stopped:
            self.server.connect_component(self.proxy, self.schedule.settings.component_latency)

    def _action(self, item: Step) -> Callable[[], None]:
        return lambda: self._perform(item)

    def _perform(self, item: Step) -> None:
        if isinstance(item, Request):
            user = self.users.get(item.user)
            if user is not None:
                self.serial += 1
                user.send_request(self.serial, item.to, item.id, item.type)
        elif isinstance(item, Online):
            self._online(item.resource)
        elif isinstance(item, Offline):
            client = self._alive(item.resource)
            if client is not None:
                client.log_out()
        elif isinstance(item, Vanish):
            client = self._alive(item.resource)
            if client is not None:
                client.die()
                self.server.session_died(client.jid)
        elif isinstance(item, RepeatPresence):
            client = self._alive(item.resource)
            if client is not None:
                client.send_presence_again()
        elif isinstance(item, Forge):
            client = self._alive(item.resource)
            if client is not None:
                session = self.server.sessions.get(client.jid)
                down = () if session is None else session.down.in_flight
                # The request may also still be on its way from the proxy to the server.
                up = self.server.in_flight_from_component()
                in_flight = tuple(
                    e for e in (*up, *down) if e is not None and e.get("to") == client.jid
                )
                client.forge(encode_requester(PROXY, item.requester), item.id, in_flight)
        elif isinstance(item, ComponentDown):
            self.server.cut_component()
        elif isinstance(item, ComponentUp):
            self._heal()
        elif isinstance(item, Stop):
            self._heal()
            self.proxy.stop(item.drain)

    def _alive(self, resource: str) -> TargetClient | None:
        client = self.targets.get(resource)
        return client if client is not None and client.alive else None

    def _online(self, resource: str) -> None:
        script = self.scripts.get(resource)
        if script is None or self._alive(resource) is not None:
            return
        jid = f"{TARGET}/{resource}"
        client = TargetClient(jid, script, self.clock, PROXY, self.schedule.settings.approve_delay)
        client.session = self.server.bind(jid, client, script.latency)
        self.targets[resource] = client
        self.every_target.append(client)
        client.log_in()
