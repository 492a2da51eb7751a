"""The simulation's own parts: each server rule against its source (on each server profile
where the rule is one for both, and on each profile apart where Prosody and ejabberd were
measured to differ), the codec, the transport's timer and the demo. The whole-system
properties are in tests/property/test_whole_system.py."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
from client_proxy import sim
from client_proxy.core import Stanza, StanzaError
from client_proxy.sim import (
    DELAY_NS,
    PROXY,
    SERVERS,
    STANZAS_NS,
    TARGET,
    Clock,
    ComponentLink,
    Element,
    Hop,
    Online,
    Request,
    Resource,
    Schedule,
    ServerProfile,
    Settings,
    SimServer,
    TargetSubscription,
    User,
    from_core,
    iq,
    presence,
    run,
    to_core,
)
from hypothesis import given
from hypothesis import strategies as st

USER = "user@example.org/abc"
A = f"{TARGET}/a"
B = f"{TARGET}/b"
PROSODY = ServerProfile.PROSODY
EJABBERD = ServerProfile.EJABBERD

#: For a rule that is one for both servers: the test runs on each profile.
on_each_server = pytest.mark.parametrize("server", SERVERS, ids=lambda s: s.name)


class Endpoint:
    """A component endpoint that records what it is given."""

    def __init__(self) -> None:
        self.link: ComponentLink | None = None
        self.got: list[Element] = []
        self.lost = 0

    def connected(self, link: ComponentLink) -> None:
        self.link = link

    def disconnected(self) -> None:
        self.lost += 1

    def received(self, stanza: Element) -> None:
        self.got.append(stanza)


class Inbox:
    def __init__(self) -> None:
        self.got: list[Element] = []

    def receive(self, stanza: Element) -> None:
        self.got.append(stanza)


class Deployment:
    def __init__(
        self, subscription: TargetSubscription = "subscribed", server: ServerProfile = PROSODY
    ) -> None:
        self.clock = Clock()
        self.hops: list[Hop] = []
        self.server = SimServer(
            self.clock,
            proxy_domain=PROXY,
            target=TARGET,
            detect_delay=2.0,
            subscription=subscription,
            hops=self.hops,
            profile=server,
        )
        self.proxy = Endpoint()
        self.server.connect_component(self.proxy, 0.01)
        self.inboxes: dict[str, Inbox] = {}

    def login(self, jid: str, available: bool = True) -> Inbox:
        inbox = Inbox()
        self.inboxes[jid] = inbox
        session = self.server.bind(jid, inbox, 0.01)
        if available:
            session.up.send(presence())
        self.clock.run()
        return inbox

    def client_sends(self, jid: str, stanza: Element | None) -> None:
        self.server.sessions[jid].up.send(stanza)
        self.clock.run()

    def proxy_sends(self, stanza: Element) -> None:
        assert self.proxy.link is not None
        self.proxy.link.send(stanza)
        self.clock.run()

    def proxy_got(self) -> list[str]:
        got = [str(s) for s in self.proxy.got]
        self.proxy.got.clear()
        return got


def _no_delay(stanza: Element) -> Element:
    return Element(
        stanza.name, stanza.attrs, tuple(c for c in stanza.elements if c.name != "delay")
    )


# -- presence -----------------------------------------------------------------------------------


@on_each_server
def test_a_resource_coming_and_going_is_broadcast_to_the_subscribed_proxy(
    server: ServerProfile,
) -> None:
    # RFC 6121 §4.2.2, §4.5.2
    d = Deployment(server=server)
    d.login(A)
    d.client_sends(A, presence("unavailable"))
    assert d.proxy_got() == [
        f"<presence from='{A}' to='{PROXY}'/>",
        f"<presence type='unavailable' from='{A}' to='{PROXY}'/>",
    ]


@on_each_server
def test_nothing_is_broadcast_to_a_proxy_that_is_not_subscribed(server: ServerProfile) -> None:
    d = Deployment("none", server)
    d.login(A)
    assert d.proxy_got() == []


@on_each_server
def test_a_probe_gets_one_presence_per_available_resource_with_a_delay(
    server: ServerProfile,
) -> None:
    # RFC 6121 §4.3.2, and measured
    d = Deployment(server=server)
    d.login(A)
    d.login(B)
    d.login(f"{TARGET}/bound-but-not-available", available=False)
    d.proxy_got()
    d.proxy_sends(presence("probe", to=TARGET, from_=PROXY))
    answers = list(d.proxy.got)
    assert [str(_no_delay(s)) for s in answers] == [
        f"<presence from='{A}' to='{PROXY}'/>",
        f"<presence from='{B}' to='{PROXY}'/>",
    ]
    assert all(s.child("delay", DELAY_NS) is not None for s in answers)


def test_a_probe_with_nobody_online_gets_a_bare_unavailable() -> None:
    # Measured on Prosody 0.12 (tests/integration/test_presence_answers.py).
    d = Deployment()
    d.proxy_sends(presence("probe", to=TARGET, from_=PROXY))
    assert d.proxy_got() == [f"<presence type='unavailable' to='{PROXY}' from='{TARGET}'/>"]


def test_on_ejabberd_a_probe_with_nobody_online_gets_no_answer() -> None:
    # Measured on ejabberd 23.01 (tests/integration/test_presence_answers.py).
    d = Deployment(server=EJABBERD)
    d.proxy_sends(presence("probe", to=TARGET, from_=PROXY))
    assert d.proxy_got() == []


@on_each_server
def test_a_probe_with_nothing_pending_gets_no_answer(server: ServerProfile) -> None:
    # Measured on both (tests/integration/test_presence_answers.py), the target online or not.
    d = Deployment("none", server)
    d.proxy_sends(presence("probe", to=TARGET, from_=PROXY))
    d.login(A)
    d.proxy_sends(presence("probe", to=TARGET, from_=PROXY))
    assert d.proxy_got() == []
    assert d.server.subscription == "none"


def test_a_probe_while_the_subscription_is_pending_loses_it() -> None:
    # Measured on Prosody 0.12: `unsubscribed`, and the pending request is gone.
    d = Deployment(subscription="none")
    target = d.login(A)
    d.proxy_sends(presence("subscribe", to=TARGET, from_=PROXY))
    assert d.server.subscription == "pending"
    assert [s.get("type") for s in target.got] == ["subscribe"]
    d.proxy_got()
    d.proxy_sends(presence("probe", to=TARGET, from_=PROXY))
    assert d.proxy_got() == [f"<presence type='unsubscribed' to='{PROXY}' from='{TARGET}'/>"]
    assert d.server.subscription == "none"
    # Nothing is pending any more: another probe gets no answer.
    d.proxy_sends(presence("probe", to=TARGET, from_=PROXY))
    assert d.proxy_got() == []
    # The target's approval now comes too late: the proxy hears `subscribed` (Prosody routes it
    # anyway) but gets no presence from then on.
    d.client_sends(A, presence("subscribed", to=PROXY))
    d.proxy_got()
    d.login(B)
    assert d.proxy_got() == []


def test_on_ejabberd_a_probe_while_the_subscription_is_pending_is_ignored() -> None:
    # Measured on ejabberd 23.01: nothing, and the pending request survives.
    d = Deployment(subscription="none", server=EJABBERD)
    target = d.login(A)
    d.proxy_sends(presence("subscribe", to=TARGET, from_=PROXY))
    assert [s.get("type") for s in target.got] == ["subscribe"]
    d.proxy_got()
    d.proxy_sends(presence("probe", to=TARGET, from_=PROXY))
    assert d.proxy_got() == []
    assert d.server.subscription == "pending"
    # The approval still counts: the proxy hears it, then the presence of every resource.
    d.client_sends(A, presence("subscribed", to=PROXY))
    assert d.proxy_got() == [
        f"<presence type='subscribed' to='{PROXY}' from='{TARGET}'/>",
        f"<presence from='{A}' to='{PROXY}'/>",
    ]
    d.login(B)
    assert d.proxy_got() == [f"<presence from='{B}' to='{PROXY}'/>"]


def test_a_first_subscribe_is_acknowledged_with_unavailable_and_waits_for_approval() -> None:
    # Prosody's mod_presence ("acknowledging receipt"), measured with the target offline;
    # RFC 6121 §3.1.3: delivered when the target comes online.
    d = Deployment(subscription="none")
    d.proxy_sends(presence("subscribe", to=TARGET, from_=PROXY))
    assert d.proxy_got() == [f"<presence type='unavailable' to='{PROXY}' from='{TARGET}'/>"]
    target = d.login(A)
    assert [str(s) for s in target.got] == [
        f"<presence type='subscribe' to='{TARGET}' from='{PROXY}'/>"
    ]
    d.client_sends(A, presence("subscribed", to=PROXY))
    # RFC 6121 §3.1.5: the approval, then the presence of each available resource.
    assert d.proxy_got() == [
        f"<presence type='subscribed' to='{PROXY}' from='{TARGET}'/>",
        f"<presence from='{A}' to='{PROXY}'/>",
    ]
    assert d.server.subscription == "subscribed"


def test_on_ejabberd_a_first_subscribe_gets_no_answer() -> None:
    # Measured on ejabberd 23.01, with the target offline (DESIGN.md) and online
    # (tests/integration/test_presence_answers.py): nothing; the request waits for the target
    # all the same.
    d = Deployment(subscription="none", server=EJABBERD)
    d.proxy_sends(presence("subscribe", to=TARGET, from_=PROXY))
    assert d.proxy_got() == []
    assert d.server.subscription == "pending"
    target = d.login(A)
    assert [str(s) for s in target.got] == [
        f"<presence type='subscribe' to='{TARGET}' from='{PROXY}'/>"
    ]
    d.client_sends(A, presence("subscribed", to=PROXY))
    assert d.proxy_got() == [
        f"<presence type='subscribed' to='{PROXY}' from='{TARGET}'/>",
        f"<presence from='{A}' to='{PROXY}'/>",
    ]


@on_each_server
def test_a_first_subscribe_while_the_target_is_online_asks_it(server: ServerProfile) -> None:
    # Measured on both (tests/integration/test_presence_answers.py): the target is asked at
    # once; Prosody acknowledges with `unavailable` as it does while the target is offline,
    # ejabberd answers nothing.
    d = Deployment("none", server)
    target = d.login(A)
    d.proxy_sends(presence("subscribe", to=TARGET, from_=PROXY))
    ack = [f"<presence type='unavailable' to='{PROXY}' from='{TARGET}'/>"]
    assert d.proxy_got() == (ack if server == PROSODY else [])
    assert [s.get("type") for s in target.got] == ["subscribe"]


def test_a_repeated_subscribe_gets_subscribed_and_every_presence_twice() -> None:
    # Measured on Prosody 0.12.
    d = Deployment()
    d.login(A)
    d.proxy_got()
    d.proxy_sends(presence("subscribe", to=TARGET, from_=PROXY))
    assert d.proxy_got() == [
        f"<presence type='subscribed' to='{PROXY}' from='{TARGET}'/>",
        f"<presence from='{A}' to='{PROXY}'/>",
        f"<presence from='{A}' to='{PROXY}'/>",
    ]


def test_a_repeated_subscribe_with_nobody_online_gets_subscribed_and_unavailable() -> None:
    d = Deployment()
    d.proxy_sends(presence("subscribe", to=TARGET, from_=PROXY))
    assert d.proxy_got() == [
        f"<presence type='subscribed' to='{PROXY}' from='{TARGET}'/>",
        f"<presence type='unavailable' to='{PROXY}' from='{TARGET}'/>",
    ]


@pytest.mark.parametrize("online", [(), (A,), (A, B)], ids=len)
def test_on_ejabberd_a_repeated_subscribe_gets_subscribed_alone(online: tuple[str, ...]) -> None:
    # Measured on ejabberd 23.01: `subscribed` only; the proxy must probe to learn the resources.
    d = Deployment(server=EJABBERD)
    for jid in online:
        d.login(jid)
    d.proxy_got()
    d.proxy_sends(presence("subscribe", to=TARGET, from_=PROXY))
    assert d.proxy_got() == [f"<presence type='subscribed' to='{PROXY}' from='{TARGET}'/>"]


# -- sessions -----------------------------------------------------------------------------------


def test_an_iq_to_a_gone_resource_bounces_service_unavailable_with_its_id() -> None:
    # RFC 6121 §8.5.3.2.3, measured.
    d = Deployment()
    d.proxy_sends(iq("get", "7", to=A, from_=f"{PROXY}/{USER}"))
    (bounce,) = d.proxy.got
    assert bounce.top_tag() == f"<iq type='error' id='7' to='{PROXY}/{USER}' from='{A}'>"
    assert to_core(bounce) == Stanza(
        "iq",
        "error",
        "7",
        A,
        f"{PROXY}/{USER}",
        bounce.children,
        StanzaError("cancel", "service-unavailable"),
    )


def test_on_ejabberd_an_iq_to_a_gone_resource_bounces_with_its_payload_and_a_text() -> None:
    # Measured on ejabberd 23.01: the same error, payload echoed, text "User session not found".
    d = Deployment(server=EJABBERD)
    payload = Element("query", (("xmlns", "urn:x"),), ("7",))
    d.proxy_sends(iq("get", "7", to=A, from_=f"{PROXY}/{USER}", children=(payload,)))
    (bounce,) = d.proxy.got
    assert bounce.top_tag() == f"<iq type='error' id='7' to='{PROXY}/{USER}' from='{A}'>"
    assert bounce.children[0] == payload
    assert to_core(bounce) == Stanza(
        "iq",
        "error",
        "7",
        A,
        f"{PROXY}/{USER}",
        bounce.children,
        StanzaError("cancel", "service-unavailable", "User session not found"),
    )


@on_each_server
def test_a_result_to_a_gone_resource_is_dropped(server: ServerProfile) -> None:
    d = Deployment(server=server)
    d.proxy_sends(iq("result", "7", to=A, from_=PROXY))
    assert d.proxy_got() == []


@on_each_server
def test_a_dead_session_is_noticed_late_and_then_announced_and_bounced(
    server: ServerProfile,
) -> None:
    d = Deployment(server=server)
    target = d.login(A)
    d.proxy_got()
    d.server.session_died(A)
    # Until the server notices, it writes to the dead socket.
    d.proxy.link.send(iq("get", "1", to=A, from_=f"{PROXY}/{USER}"))  # type: ignore[union-attr]
    d.clock.run(until=d.clock.now + 1.0)
    assert d.proxy_got() == []
    assert [s.get("id") for s in target.got] == ["1"]
    d.clock.run()
    assert d.proxy_got() == [f"<presence type='unavailable' from='{A}' to='{PROXY}'/>"]
    d.proxy_sends(iq("get", "2", to=A, from_=f"{PROXY}/{USER}"))
    assert [(s.get("type"), s.get("id")) for s in d.proxy.got] == [("error", "2")]


@on_each_server
def test_binding_a_bound_resource_again_ends_the_old_session(server: ServerProfile) -> None:
    # RFC 6120 §7.7.2.2; Prosody's default conflict resolution kicks the old session.
    d = Deployment(server=server)
    d.login(A)
    d.proxy_got()
    d.login(A)
    assert d.proxy_got() == [
        f"<presence type='unavailable' from='{A}' to='{PROXY}'/>",
        f"<presence from='{A}' to='{PROXY}'/>",
    ]


def test_a_stream_keeps_its_order_and_streams_overtake_each_other() -> None:
    clock = Clock()
    hops: list[Hop] = []
    slow, fast = Inbox(), Inbox()
    server = SimServer(
        clock, proxy_domain=PROXY, target=TARGET, detect_delay=1, subscription="none", hops=hops
    )
    server.bind("slow@example.org/r", slow, 0.5)
    server.bind("fast@example.org/r", fast, 0.01)
    proxy = Endpoint()
    server.connect_component(proxy, 0.0)
    for n in range(3):
        server.sessions["slow@example.org/r"].up.send(iq("get", f"s{n}", to=PROXY))
    server.sessions["fast@example.org/r"].up.send(iq("get", "f", to=PROXY))
    clock.run()
    seen = [s.get("id") or "" for s in proxy.got]
    assert seen == ["f", "s0", "s1", "s2"]


# -- the component ------------------------------------------------------------------------------


def test_while_the_component_is_away_requests_bounce_remote_server_timeout() -> None:
    # Measured; Prosody's mod_component adds <not-connected/>.
    d = Deployment()
    user = d.login(USER, available=False)
    d.server.cut_component()
    assert d.proxy.lost == 1
    d.client_sends(USER, iq("get", "9", to=f"{PROXY}/x"))
    (bounce,) = user.got
    assert bounce.top_tag() == f"<iq type='error' id='9' to='{USER}' from='{PROXY}/x'>"
    error = bounce.child("error")
    assert error is not None and error.get("type") == "wait"
    assert error.child("remote-server-timeout", STANZAS_NS) is not None
    assert error.child("not-connected") is not None


def test_on_ejabberd_while_the_component_is_away_stanzas_bounce_forbidden_with_payload() -> None:
    # docs/deploy.md, "The gap", ejabberd 23.01 with s2s off: `forbidden` (auth), "Access
    # denied by service policy", the payload echoed, from the address written to; the target's
    # presence is bounced the same way.
    d = Deployment(server=EJABBERD)
    user = d.login(USER, available=False)
    d.server.cut_component()
    payload = Element("query", (("xmlns", "urn:x"),))
    d.client_sends(USER, iq("set", "9", to=f"{PROXY}/x", children=(payload,)))
    (bounce,) = user.got
    assert str(bounce) == (
        f"<iq type='error' id='9' to='{USER}' from='{PROXY}/x'><query xmlns='urn:x'/>"
        f"<error type='auth'><forbidden xmlns='{STANZAS_NS}'/>"
        f"<text xmlns='{STANZAS_NS}'>Access denied by service policy</text></error></iq>"
    )
    target = d.login(A)
    assert [str(s) for s in target.got] == [
        f"<presence type='error' to='{A}' from='{PROXY}'><error type='auth'>"
        f"<forbidden xmlns='{STANZAS_NS}'/>"
        f"<text xmlns='{STANZAS_NS}'>Access denied by service policy</text></error></presence>"
    ]


@on_each_server
def test_while_the_component_is_away_results_and_errors_are_dropped(server: ServerProfile) -> None:
    # docs/deploy.md, "The gap", measured on both: nobody is told.
    d = Deployment(server=server)
    target = d.login(A)
    d.server.cut_component()
    d.client_sends(A, iq("result", "1", to=f"{PROXY}/{USER}"))
    d.client_sends(A, iq("error", "2", to=f"{PROXY}/{USER}"))
    assert [s for s in target.got if s.name == "iq"] == []


@on_each_server
def test_each_server_knows_its_own_bounce_from_the_others(server: ServerProfile) -> None:
    request = iq("get", "1", to=f"{PROXY}/x", from_=USER, children=(Element("q"),))
    for other in SERVERS:
        bounce = other.component_gone.reply(request)
        assert server.component_gone.bounced(bounce) == (other == server)
    assert not server.component_gone.bounced(request)


@on_each_server
def test_a_cut_reads_what_the_component_wrote_and_bounces_what_it_had_not_read(
    server: ServerProfile,
) -> None:
    d = Deployment(server=server)
    user = d.login(USER, available=False)
    d.client_sends(USER, iq("get", "1", to=PROXY))
    d.proxy.got.clear()
    assert d.proxy.link is not None
    d.proxy.link.send(iq("result", "0", to=USER, from_=PROXY))
    d.server.sessions[USER].up.send(iq("get", "2", to=PROXY))
    d.clock.run(until=d.clock.now + 0.015)  # the request has reached the server, not the proxy
    d.server.cut_component()
    d.clock.run()
    assert [(s.get("type"), s.get("id")) for s in user.got] == [("result", "0"), ("error", "2")]
    assert d.proxy.got == []


@on_each_server
def test_a_component_sending_from_a_foreign_domain_is_cut_off(server: ServerProfile) -> None:
    # Prosody's mod_component, validate_from_addresses: stream error invalid-from.
    d = Deployment(server=server)
    d.proxy_sends(iq("get", "1", to=A, from_="evil.example.org"))
    assert d.server.violations and d.proxy.lost == 1
    assert not d.server.component_connected


# -- codec, transport, demo ---------------------------------------------------------------------

_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8)
_OPTIONAL = st.one_of(st.none(), _TEXT)
_LEAVES = st.builds(
    Element, st.sampled_from(["query", "x", "body"]), st.just((("xmlns", "urn:x"),))
)


@st.composite
def _elements(draw: st.DrawFn) -> Element:
    """Stanzas as the simulation builds them: routing attributes in DESIGN.md's order, then
    any others, then children."""
    routing = ((name, draw(_OPTIONAL)) for name in ("type", "id", "to", "from"))
    attrs = tuple((k, v) for k, v in routing if v is not None)
    extra = draw(st.lists(st.tuples(st.sampled_from(["xml:lang", "a", "b"]), _TEXT), max_size=2))
    children = draw(st.lists(st.one_of(_TEXT, _LEAVES), max_size=3))
    kind = draw(st.sampled_from(["iq", "message", "presence"]))
    return Element(kind, attrs + tuple(extra), tuple(children))


@given(_elements())
def test_the_codec_round_trips_attributes_and_payload(element: Element) -> None:
    stanza = to_core(element)
    assert stanza is not None
    assert (stanza.type, stanza.id, stanza.to, stanza.from_) == tuple(
        element.get(k) for k in ("type", "id", "to", "from")
    )
    assert stanza.payload == element.children
    assert from_core(stanza) == element


def test_the_codec_renders_the_cores_own_errors() -> None:
    error = StanzaError.build("wait", "remote-server-timeout", "late")
    element = from_core(Stanza("iq", "error", "1", PROXY, USER, (), error))
    assert str(element) == (
        f"<iq type='error' id='1' to='{USER}' from='{PROXY}'><error type='wait'>"
        f"<remote-server-timeout xmlns='{STANZAS_NS}'/>"
        f"<text xmlns='{STANZAS_NS}'>late</text></error></iq>"
    )
    back = to_core(element)
    assert back is not None and back.error == error


def test_a_late_timer_fires_late_and_a_punctual_one_on_time() -> None:
    def timeout_at(lag: float) -> float:
        outcome = run(
            Schedule(
                users=(User(USER),),
                resources=(Resource("a", answer_after=None),),
                steps=(Online(0.0, "a"), Request(1.0, USER, "1")),
                settings=Settings(request_timeout=3.0, timer_lag=lag),
            )
        )
        hop = next(h for h in outcome.hops if h.src == "proxy" and h.stanza.get("type") == "error")
        return hop.sent

    # Sent at the request's arrival (1.0 + the user's 0.01 + the component's 0.005) + 3 s.
    assert timeout_at(0.0) == pytest.approx(4.015)
    assert timeout_at(0.7) == pytest.approx(4.715)


def _sim(*args: str) -> str:
    command = [sys.executable, "-m", "client_proxy.sim", *args]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("args", [(), ("--server", "prosody"), ("--server", "ejabberd")], ids=str)
def test_python_m_client_proxy_sim_prints_the_four_stanzas(args: tuple[str, ...]) -> None:
    out = _sim(*args)
    assert out.splitlines() == [
        "user -> proxy   : <iq type='get' id='1234' to='proxy.example.org' "
        "from='user@example.org/abc'>",
        "proxy -> target : <iq type='get' id='4.123400000000.0.177f.1.a.T3tXcejpXPoTCXrS' "
        "to='svc@example.org/a' from='proxy.example.org/user@example.org/abc'>",
        "target -> proxy : <iq type='result' id='4.123400000000.0.177f.1.a.T3tXcejpXPoTCXrS' "
        "to='proxy.example.org/user@example.org/abc' from='svc@example.org/a'>",
        "proxy -> user   : <iq type='result' id='1234' to='user@example.org/abc' "
        "from='proxy.example.org'>",
    ]


def test_python_m_client_proxy_sim_all_shows_where_the_servers_differ() -> None:
    ack = f"server -> proxy: <presence type='unavailable' to='{PROXY}' from='{TARGET}'/>"
    prosody, ejabberd = _sim("--all"), _sim("--all", "--server", "ejabberd")
    assert ack in prosody
    assert [line for line in prosody.splitlines() if ack not in line] == ejabberd.splitlines()


def test_a_schedule_on_another_server_prints_as_the_python_that_builds_it() -> None:
    schedule = Schedule(users=(User(USER),), resources=(Resource("a"),))
    on_ejabberd = schedule.on(EJABBERD)
    assert on_ejabberd.settings == Settings(server=EJABBERD)
    assert repr(on_ejabberd.settings) == "Settings(server=ServerProfile.EJABBERD)"
    assert repr(schedule.on(PROSODY)) == repr(schedule)
    # A profile of one's own prints in full, and that too builds it again.
    custom = dataclasses.replace(EJABBERD, name="custom", resubscribe_copies=1)
    namespace = {name: getattr(sim, name) for name in sim.__all__}
    assert eval(repr(schedule.on(custom)), namespace) == schedule.on(custom)
