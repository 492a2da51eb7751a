"""The implementing client starts IQs and sends messages; users message the service.

- a call (an IQ a target resource starts towards `proxy/<user>`) reaches the user from the proxy
  domain, and the user's answer reaches exactly the resource that asked, from the translated
  address, with that resource's id; even when several resources use the same id towards the same
  user, and whatever the order of the answers;
- every call gets exactly one answer (the user's, or `remote-server-timeout`), and a user cannot
  make the proxy deliver an answer nobody asked for;
- a user's messages go to one resource, the same while it stays online; the target's messages
  reach users from the proxy domain; an error bounced for one goes back to the resource that
  sent it;
- switched off, both get mod_client_proxy's `feature-not-implemented`.
"""

from __future__ import annotations

from client_proxy.core import (
    ConnectionUp,
    CountMetric,
    ProxyConfig,
    ProxyState,
    SendStanza,
    Stanza,
    StanzaError,
    StanzaReceived,
    TimePassed,
    Transition,
    initial_state,
    step,
)
from hypothesis import given
from hypothesis import strategies as st

PROXY = "proxy.example.org"
TARGET = "svc@example.org"
RESOURCES = ("a", "b", "c")
USERS = ("alice@example.org/phone", "alice@example.org/laptop", "bob@other.example/x")

resources = st.sampled_from(RESOURCES)
users = st.sampled_from(USERS)
ids = st.sampled_from(["1", "2", "same"])


def _ready(cfg: ProxyConfig, online: tuple[str, ...] = RESOURCES) -> ProxyState:
    state = step(initial_state(cfg, 5), ConnectionUp(0.0)).state
    approved = Stanza("presence", "subscribed", None, TARGET, PROXY)
    state = step(state, StanzaReceived(0.0, approved)).state
    for name in online:
        presence = Stanza("presence", None, None, f"{TARGET}/{name}", PROXY)
        state = step(state, StanzaReceived(0.0, presence)).state
    return state


def _sent(t: Transition) -> list[Stanza]:
    return [o.stanza for o in t.outputs if isinstance(o, SendStanza)]


@given(
    calls=st.lists(st.tuples(resources, users, ids), min_size=1, max_size=8),
    order=st.randoms(use_true_random=False),
    payloads=st.lists(st.text(max_size=5), min_size=8, max_size=8),
)
def test_calls_come_back_to_the_resource_that_asked(
    calls: list[tuple[str, str, str]], order: object, payloads: list[str]
) -> None:
    state = _ready(ProxyConfig(PROXY, TARGET, rate_limit=0))
    seen_ids: set[tuple[str, str]] = set()
    pending = []  # (what the user got, who asked, their id, payload)
    for i, (resource, user, ident) in enumerate(calls):
        asked = Stanza("iq", "get", ident, f"{TARGET}/{resource}", f"{PROXY}/{user}", payloads[i])
        t = step(state, StanzaReceived(1.0, asked))
        state = t.state
        (out,) = _sent(t)
        assert out.from_ == PROXY and out.to == user and out.payload == payloads[i]
        assert (user, out.id) not in seen_ids  # the proxy's ids never collide
        seen_ids.add((user, out.id or ""))
        pending.append((out, resource, ident, payloads[i]))
    order.shuffle(pending)  # type: ignore[attr-defined]
    for out, resource, ident, payload in pending:
        answer = Stanza("iq", "result", out.id, user_of(out), PROXY, ("answer", payload))
        t = step(state, StanzaReceived(2.0, answer))
        state = t.state
        (back,) = _sent(t)
        assert back.to == f"{TARGET}/{resource}"
        assert back.id == ident
        assert back.from_ == f"{PROXY}/{out.to}"
        assert back.payload == ("answer", payload)
        # A second answer finds nothing: delivered to nobody.
        assert _sent(step(state, StanzaReceived(2.0, answer))) == []
    assert len(state.calls) == 0


def user_of(out: Stanza) -> str:
    assert out.to is not None
    return out.to


@given(resource=resources, user=users, late=st.booleans())
def test_a_call_nobody_answers_times_out_once(resource: str, user: str, late: bool) -> None:
    cfg = ProxyConfig(PROXY, TARGET, request_timeout=10, rate_limit=0)
    state = _ready(cfg)
    asked = Stanza("iq", "set", "c1", f"{TARGET}/{resource}", f"{PROXY}/{user}")
    t = step(state, StanzaReceived(1.0, asked))
    (out,) = _sent(t)
    assert t.deadline == 11.0
    t = step(t.state, TimePassed(11.0))
    (timeout,) = _sent(t)
    assert timeout.to == f"{TARGET}/{resource}" and timeout.id == "c1"
    assert timeout.error is not None and timeout.error.condition == "remote-server-timeout"
    assert timeout.from_ == f"{PROXY}/{user}"
    if late:
        answer = Stanza("iq", "result", out.id, user, PROXY)
        assert _sent(step(t.state, StanzaReceived(12.0, answer))) == []


@given(user=users, forged_id=st.text(max_size=10))
def test_a_user_cannot_answer_what_nobody_asked(user: str, forged_id: str) -> None:
    state = _ready(ProxyConfig(PROXY, TARGET, rate_limit=0))
    for kind in ("result", "error"):
        forged = Stanza("iq", kind, forged_id, user, PROXY)
        assert _sent(step(state, StanzaReceived(1.0, forged))) == []


@given(
    callers=st.lists(resources, min_size=1, max_size=6),
    leaving=resources,
    all_at_once=st.booleans(),
)
def test_only_the_calls_of_a_resource_that_leaves_are_forgotten(
    callers: list[str], leaving: str, all_at_once: bool
) -> None:
    """Calls from several resources; one goes offline (or, with ``all_at_once``, the target
    says none is online): the calls it started, and only those, are forgotten (nobody is left
    to take their answers); the others still get theirs."""
    state = _ready(ProxyConfig(PROXY, TARGET, rate_limit=0))
    user = USERS[0]
    out = []
    for i, resource in enumerate(callers):
        asked = Stanza("iq", "get", f"c{i}", f"{TARGET}/{resource}", f"{PROXY}/{user}")
        t = step(state, StanzaReceived(1.0, asked))
        state = t.state
        out.append((resource, _sent(t)[0]))
    sender = TARGET if all_at_once else f"{TARGET}/{leaving}"
    gone = step(state, StanzaReceived(2.0, Stanza("presence", "unavailable", None, sender, PROXY)))
    state = gone.state
    dropped = [o for o in gone.outputs if getattr(o, "name", None) == "dropped.call_resource_gone"]
    left = [(r, o) for r, o in out if not all_at_once and r != leaving]
    assert len(dropped) == len(out) - len(left)
    assert len(state.calls) == len(left)
    for resource, asked in out:
        t = step(state, StanzaReceived(3.0, Stanza("iq", "result", asked.id, user, PROXY)))
        state = t.state
        back = _sent(t)
        if (resource, asked) in left:
            assert [b.to for b in back] == [f"{TARGET}/{resource}"]
        else:
            assert back == []


def test_a_call_whose_resource_leaves_is_forgotten() -> None:
    state = _ready(ProxyConfig(PROXY, TARGET, rate_limit=0))
    user = USERS[0]
    t = step(state, StanzaReceived(1.0, Stanza("iq", "get", "c", f"{TARGET}/a", f"{PROXY}/{user}")))
    (out,) = _sent(t)
    gone = Stanza("presence", "unavailable", None, f"{TARGET}/a", PROXY)
    state = step(t.state, StanzaReceived(2.0, gone)).state
    assert len(state.calls) == 0
    late = Stanza("iq", "result", out.id, user, PROXY)
    assert _sent(step(state, StanzaReceived(3.0, late))) == []


@given(user=users, churn=st.lists(st.tuples(st.booleans(), resources), max_size=6))
def test_a_users_messages_stay_on_one_resource_while_it_is_online(
    user: str, churn: list[tuple[bool, str]]
) -> None:
    state = _ready(ProxyConfig(PROXY, TARGET, rate_limit=0))
    online = set(RESOURCES)

    def deliver(s: ProxyState, n: int) -> tuple[ProxyState, str | None]:
        t = step(s, StanzaReceived(1.0, Stanza("message", "chat", f"m{n}", user, PROXY, "hi")))
        (out,) = _sent(t)
        if out.type == "error":
            assert out.to == user and out.error is not None
            return t.state, None
        assert out.from_ == f"{PROXY}/{user}" and out.payload == "hi"
        assert out.to is not None
        return t.state, out.to.split("/", 1)[1]

    state, first = deliver(state, 0)
    for n, (arrive, name) in enumerate(churn, 1):
        kind = None if arrive else "unavailable"
        presence = Stanza("presence", kind, None, f"{TARGET}/{name}", PROXY)
        state = step(state, StanzaReceived(1.0, presence)).state
        (online.add if arrive else online.discard)(name)
        state, now_at = deliver(state, n)
        if not online:
            assert now_at is None
        else:
            assert now_at in online
            if first in online and not arrive:
                assert now_at == first  # somebody else left: it stays put
        first = now_at


@given(resource=resources, user=users)
def test_target_messages_reach_users_and_their_errors_come_back(resource: str, user: str) -> None:
    state = _ready(ProxyConfig(PROXY, TARGET, rate_limit=0))
    sent = Stanza("message", "chat", "m1", f"{TARGET}/{resource}", f"{PROXY}/{user}", "hello")
    t = step(state, StanzaReceived(1.0, sent))
    (out,) = _sent(t)
    assert out.from_ == PROXY and out.to == user and out.id == "m1" and out.payload == "hello"
    bounce = Stanza(
        "message", "error", "m1", user, PROXY, error=StanzaError("cancel", "service-unavailable")
    )
    t = step(t.state, StanzaReceived(2.0, bounce))
    (back,) = _sent(t)
    assert back.to == f"{TARGET}/{resource}" and back.from_ == f"{PROXY}/{user}"
    assert back.type == "error" and back.id == "m1"
    # Only once, and never for a message nobody sent.
    assert _sent(step(t.state, StanzaReceived(2.0, bounce))) == []


def test_switched_off_they_get_the_references_answer() -> None:
    cfg = ProxyConfig(PROXY, TARGET, outbound_iq=False, messages=False, rate_limit=0)
    state = _ready(cfg)
    for stanza in (
        Stanza("iq", "get", "1", f"{TARGET}/a", f"{PROXY}/{USERS[0]}"),
        Stanza("message", "chat", "2", f"{TARGET}/a", f"{PROXY}/{USERS[0]}"),
        Stanza("message", "chat", "3", USERS[0], PROXY),
    ):
        (out,) = _sent(step(state, StanzaReceived(1.0, stanza)))
        assert out.type == "error" and out.error is not None
        assert out.error.condition == "feature-not-implemented" and out.to == stanza.from_


@given(
    cap=st.integers(1, 3),
    messages=st.lists(st.tuples(resources, users, ids), min_size=1, max_size=8),
)
def test_the_ways_back_for_messages_are_bounded_and_each_message_still_goes(
    cap: int, messages: list[tuple[str, str, str]]
) -> None:
    """A message from the target is remembered (for the error the user's side may bounce) at
    most ``max_outstanding`` times at once, like requests and calls; past that it is still
    delivered, its way back is not remembered, and that is counted
    (``dropped.message_route_full``). A newer message with a remembered (user, id) takes its
    way back over without a new place."""
    state = _ready(ProxyConfig(PROXY, TARGET, rate_limit=0, max_outstanding=cap))
    remembered: dict[tuple[str, str], str] = {}
    for resource, user, ident in messages:
        sent = Stanza("message", "chat", ident, f"{TARGET}/{resource}", f"{PROXY}/{user}", "m")
        t = step(state, StanzaReceived(1.0, sent))
        (out,) = _sent(t)
        assert (out.to, out.from_, out.id) == (user, PROXY, ident)
        full = (user, ident) not in remembered and len(remembered) >= cap
        counted = [o.name for o in t.outputs if isinstance(o, CountMetric)]
        assert counted == (["dropped.message_route_full"] if full else [])
        if not full:
            remembered[(user, ident)] = f"{TARGET}/{resource}"
        state = t.state
        assert len(state.routes) == len(remembered) <= cap
    # Each remembered way back leads to the resource that sent the latest message.
    for (user, ident), sender in remembered.items():
        bounce = Stanza("message", "error", ident, user, PROXY, error=StanzaError("cancel", "gone"))
        (back,) = _sent(step(state, StanzaReceived(2.0, bounce)))
        assert (back.to, back.from_, back.id) == (sender, f"{PROXY}/{user}", ident)
