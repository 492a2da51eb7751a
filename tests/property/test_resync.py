"""The resync after a (re)connect, and the late replies of a slow resource: two things the
machine reaches only now and then, proved here head on.

- After a connect the proxy knows no resource until the target's presence says where it stands.
  For ``sync_grace`` seconds a request that finds no resource waits (parked) rather than being
  refused; as soon as presence says something (a resource is available: it is sent there; none
  is, by a bare `unavailable`, a presence error or a revoked subscription: it is refused at once
  with `service-unavailable`, and so is any new one), the wait is over; with no news by the end
  of the grace, it is refused then (``_machine``'s "No resource").
- A resource that times out still holds the request and may answer it late. Each forward goes
  out with an id of its own (``_seal``), so a late answer never answers a newer request with
  the same requester and id, in whatever order the answers come, and the proxy keeps nothing
  to know it.
"""

from __future__ import annotations

import math

from client_proxy.core import (
    ConnectionUp,
    CountMetric,
    LogRecord,
    ProxyConfig,
    ProxyState,
    SendStanza,
    Stanza,
    StanzaReceived,
    TimePassed,
    Transition,
    initial_state,
    step,
)
from client_proxy.core._seal import original_of
from client_proxy.testing import strategies as cps
from hypothesis import given
from hypothesis import strategies as st

PROXY = cps.EXAMPLE_PROXY
TARGET = cps.EXAMPLE_TARGET
USERS = ("alice@example.org/phone", "bob@example.net/b", "carol@example.com/c")

#: Presence from the target that says no resource is online (RFC 6121 §4.3.2 and §4.7.1), each
#: as (sender's resource, type).
NONE_ONLINE = {
    "bare unavailable": (None, "unavailable"),
    "presence error": (None, "error"),
    "resource error": ("a", "error"),
    "unsubscribed": (None, "unsubscribed"),
    "unsubscribe": (None, "unsubscribe"),
}


def _sent(t: Transition) -> list[Stanza]:
    return [o.stanza for o in t.outputs if isinstance(o, SendStanza)]


def _counts(t: Transition) -> list[str]:
    return [o.name for o in t.outputs if isinstance(o, CountMetric)]


def _presence(resource: str | None, kind: str | None) -> Stanza:
    sender = TARGET if resource is None else f"{TARGET}/{resource}"
    return Stanza("presence", kind, None, sender, PROXY)


def _connected(grace: float) -> ProxyState:
    config = ProxyConfig(PROXY, TARGET, sync_grace=grace, request_timeout=1000.0, rate_limit=0)
    return step(initial_state(config, 5), ConnectionUp(0.0)).state


def _park(state: ProxyState, users: list[str], now: float) -> ProxyState:
    for i, user in enumerate(users):
        t = step(state, StanzaReceived(now, Stanza("iq", "get", f"q{i}", user, PROXY, "<q/>")))
        assert _sent(t) == [] and _counts(t) == ["parked"], t.outputs
        state = t.state
    assert len(state.session.parked) == len(users)
    return state


def _refused_no_resource(t: Transition, users: list[str]) -> None:
    answers = [(a.to, a.id, a.type, a.error and a.error.condition) for a in _sent(t)]
    expected = [(u, f"q{i}", "error", "service-unavailable") for i, u in enumerate(users)]
    assert sorted(a for a in answers if a[0] in users) == sorted(expected), answers
    assert not t.state.session.parked and not t.state.requests


@given(
    grace=st.floats(0.5, 100.0),
    users=st.lists(st.sampled_from(USERS), min_size=1, max_size=3, unique=True),
    at=st.floats(0.0, 1.0),
    news=st.sampled_from(sorted(NONE_ONLINE)),
)
def test_presence_that_says_none_is_online_ends_the_wait_at_once(grace, users, at, news):
    now = at * grace * 0.99  # within the grace
    state = _park(_connected(grace), users, now)
    resource, kind = NONE_ONLINE[news]
    t = step(state, StanzaReceived(now, _presence(resource, kind)))
    _refused_no_resource(t, users)
    assert _counts(t).count("refused.no_resource") == len(users)
    # The wait is over: a new request is refused at once, not parked, though the grace is not.
    late = step(t.state, StanzaReceived(now, Stanza("iq", "get", "new", USERS[0], PROXY)))
    (answer,) = _sent(late)
    assert (answer.to, answer.id, answer.error and answer.error.condition) == (
        USERS[0],
        "new",
        "service-unavailable",
    )
    assert not late.state.requests


@given(
    grace=st.floats(0.5, 100.0),
    users=st.lists(st.sampled_from(USERS), min_size=1, max_size=3, unique=True),
)
def test_a_resource_coming_online_takes_the_parked_requests_in_order(grace, users):
    state = _park(_connected(grace), users, 0.0)
    t = step(state, StanzaReceived(grace / 2, _presence("a", None)))
    forwards = _sent(t)
    assert [(f.to, f.from_, original_of(f.id or "")) for f in forwards] == [
        (f"{TARGET}/a", f"{PROXY}/{u}", f"q{i}") for i, u in enumerate(users)
    ]
    assert not t.state.session.parked and len(t.state.requests) == len(users)


@given(
    grace=st.floats(0.5, 100.0),
    users=st.lists(st.sampled_from(USERS), min_size=1, max_size=3, unique=True),
)
def test_with_no_news_the_grace_ends_the_wait(grace, users):
    """Just before the end of the grace they still wait; at its end they are refused, and the
    operator is told why (``resync.no_resource``)."""
    state = _park(_connected(grace), users, 0.0)
    before = step(state, TimePassed(math.nextafter(grace, -math.inf)))
    assert len(before.state.session.parked) == len(users) and not _sent(before)
    t = step(before.state, TimePassed(grace))
    _refused_no_resource(t, users)
    assert [o.code for o in t.outputs if isinstance(o, LogRecord)].count("resync.no_resource") == 1


def _serve(state: ProxyState, user: str, ident: str, now: float) -> tuple[ProxyState, str, str]:
    """``user`` sends request ``ident``: the next state, the resource it went to, and the id
    it went with."""
    t = step(state, StanzaReceived(now, Stanza("iq", "get", ident, user, PROXY, "<q/>")))
    (forward,) = _sent(t)
    assert forward.from_ == f"{PROXY}/{user}" and original_of(forward.id or "") == ident
    return t.state, (forward.to or "").split("/", 1)[1], forward.id or ""


def _two_online(**settings: object) -> ProxyState:
    config = ProxyConfig(PROXY, TARGET, rate_limit=0, **settings)  # type: ignore[arg-type]
    state = step(initial_state(config, 9), ConnectionUp(0.0)).state
    for name in ("a", "b"):
        state = step(state, StanzaReceived(0.0, _presence(name, None))).state
    return state


@given(
    timeouts=st.integers(1, 4),
    names=st.sampled_from([("a",), ("a", "b")]),
    routing=st.sampled_from(["random", "round-robin"]),
    user=st.sampled_from(USERS),
    order=st.randoms(use_true_random=False),
)
def test_late_replies_to_a_reused_id_are_dropped_and_the_new_answer_gets_through(
    timeouts, names, routing, user, order
):
    """A requester whose request timed out ``timeouts`` times sends it again with the same id;
    the late answers to the earlier ones arrive, from wherever they went, in any order, before
    and after the answer to the newest: each late one is dropped and counted, the newest is
    delivered, and nothing is left behind to remember them by."""
    config = ProxyConfig(PROXY, TARGET, request_timeout=5.0, rate_limit=0, routing=routing)
    state = step(initial_state(config, 9), ConnectionUp(0.0)).state
    for name in names:
        state = step(state, StanzaReceived(0.0, _presence(name, None))).state
    now = 1.0
    late: list[Stanza] = []
    for _ in range(timeouts):
        state, resource, ident = _serve(state, user, "1", now)
        now += 5.0
        t = step(state, TimePassed(now))  # its deadline: remote-server-timeout
        assert [(a.to, a.id, a.error and a.error.condition) for a in _sent(t)] == [
            (user, "1", "remote-server-timeout")
        ]
        state = t.state
        late.append(
            Stanza("iq", "result", ident, f"{TARGET}/{resource}", f"{PROXY}/{user}", "<late/>")
        )
        assert not state.requests and not state.seen
    state, resource, ident = _serve(state, user, "1", now)
    answer = Stanza("iq", "result", ident, f"{TARGET}/{resource}", f"{PROXY}/{user}", "<new/>")
    replies = [*late, answer]
    order.shuffle(replies)
    delivered = []
    for reply in replies:
        t = step(state, StanzaReceived(now, reply))
        state = t.state
        if reply is answer:
            (back,) = _sent(t)
            assert (back.to, back.id, back.payload) == (user, "1", "<new/>")
            delivered.append(back)
        else:
            assert _sent(t) == [] and _counts(t) == ["dropped.reply_late"], t.outputs
    assert len(delivered) == 1
    assert not state.requests and not state.seen


@given(keys=st.integers(1, 40), user=st.sampled_from(USERS))
def test_late_replies_are_known_without_memory(keys, user):
    """However many requests time out, the proxy keeps nothing for their late answers (each
    one's id says it is not outstanding), and drops every one of them."""
    state = _two_online(max_outstanding=2, request_timeout=5.0)
    now = 1.0
    late = []
    for i in range(keys):
        state, resource, ident = _serve(state, user, f"k{i % 3}", now)
        late.append(Stanza("iq", "result", ident, f"{TARGET}/{resource}", f"{PROXY}/{user}"))
        now += 5.0
        state = step(state, TimePassed(now)).state
        assert not state.requests and not state.seen and not state.queue
    for reply in late:
        t = step(state, StanzaReceived(now, reply))
        assert _counts(t) == ["dropped.reply_late"] and _sent(t) == []
        state = t.state


@given(
    kind=st.sampled_from(["get", "set"]),
    retry=st.booleans(),
    measured=st.integers(0, 5000),
    user=st.sampled_from(USERS),
)
def test_a_parked_request_is_held_whole_until_it_is_sent_for_good(kind, retry, measured, user):
    """Parked, a request will be sent: its payload is held and counted at its measured size.
    Once sent, it keeps its payload (and its size) only if it may be sent again (a get with
    ``retry_get``, a set with ``retry_set``); otherwise only its addresses stay, and count."""
    config = ProxyConfig(
        PROXY, TARGET, sync_grace=5.0, rate_limit=0, retry_get=retry, retry_set=retry
    )
    state = step(initial_state(config, 5), ConnectionUp(0.0)).state
    request = Stanza("iq", kind, "p", user, PROXY, "<payload/>")
    state = step(state, StanzaReceived(1.0, request, measured)).state
    own = len("p") + len(user) + len(PROXY)
    ((key, parked),) = state.requests.items()
    assert parked.request.payload == "<payload/>" and parked.size == max(measured, own)
    state = step(state, StanzaReceived(2.0, _presence("a", None))).state
    sent = state.requests[key]
    assert sent.resource == "a"
    if retry:
        assert sent.request.payload == "<payload/>" and sent.size == max(measured, own)
    else:
        assert sent.request.payload != "<payload/>" and sent.size == own
    assert state.bytes_held == sent.size
