"""The express lane (``client_proxy.core._express``) is an optimisation and nothing else.

Whenever it answers, its transition is exactly the general machine's: the same next state, the
same outputs in the same order, the same deadline. It may decline (None) anything. The tests
below also make sure it does not decline everything: ordinary requests and results must take
it, or the benchmark would be measuring the general machine while claiming otherwise.
"""

from __future__ import annotations

import dataclasses

from client_proxy.core import (
    ROUTING_STRATEGIES,
    ConnectionLost,
    ConnectionUp,
    Event,
    ProxyConfig,
    ProxyState,
    SendStanza,
    Stanza,
    StanzaError,
    StanzaReceived,
    StopRequested,
    TimePassed,
    encode_requester,
    initial_state,
    queue_key,
    step,
)
from client_proxy.core._express import express
from client_proxy.core._machine import _general
from client_proxy.testing import strategies as cps
from hypothesis import event, given
from hypothesis import strategies as st

PROXY = cps.EXAMPLE_PROXY
TARGET = cps.EXAMPLE_TARGET
REQUESTERS = (
    "alice@example.org/phone",
    "bob@example.net/a/b@c",
    "example.com",
    "émile@example.fr/téléphone",
    TARGET + "/a",  # the target itself: its IQs are calls, not requests
    "\ufb01@example.org/x",  # Resourceprep would change it (NFKC): refused
    "x" * 1012 + "@example.org/r",  # over 1023 octets: refused
)


def configs(usual: int = 1) -> st.SearchStrategy[ProxyConfig]:
    """The issue-2 configurations, with every setting the lane reads varied as well; ``usual``
    weighs the defaults (the lane's cases) against the rest (its near misses)."""

    def mostly(default: object, *others: object) -> st.SearchStrategy[object]:
        return st.sampled_from([default] * usual + list(others))

    return st.builds(
        lambda base, routing, rate, burst, threshold, pattern, deny, allow: dataclasses.replace(
            base,
            routing=routing,
            rate_limit=rate,
            rate_burst=burst,
            failure_threshold=threshold,
            resource_pattern=pattern,
            deny=deny,
            allow=allow,
        ),
        cps.proxy_configs().map(
            # Per-requester limits small enough to be reached from the three requesters.
            lambda c: dataclasses.replace(c, max_per_requester=min(c.max_per_requester, 3))
        ),
        st.one_of(
            st.sampled_from(["random", "round-robin"]), st.sampled_from(sorted(ROUTING_STRATEGIES))
        ),
        mostly(100.0, 0.0, 1.0),
        mostly(200, 1, 2),
        mostly(3, 0, 1),
        mostly(None, "a|c/d"),
        mostly((), ("mallory@evil.example",), ("example.com",)),
        mostly((), ("example.org", "example.com")),
    )


_FAILURE = StanzaError("cancel", "service-unavailable")


@st.composite
def ordinary_stanzas(draw: st.DrawFn, state: ProxyState) -> Stanza:
    """What the lane is for, and its near misses: a request to the proxy, or an answer for a
    request the state holds (or one that timed out and may still be answered late), from its
    resource or from another one, a result, a failure or another error."""
    answerable = sorted(
        [(key, o.resource or "") for key, o in state.requests.items()]
        + [(key, late.resource) for key, late in state.lates.items()]
    )
    if answerable and draw(st.integers(0, 2)) == 0:
        (requester, ident), resource = draw(st.sampled_from(answerable))
        resource = resource or "a"  # a parked request has none yet
        sender = draw(st.sampled_from([resource, resource, "b", "c/d"]))
        kind, error = draw(
            st.sampled_from(
                [
                    ("result", None),
                    ("result", None),
                    ("error", _FAILURE),
                    ("error", _FAILURE),
                    ("error", StanzaError("modify", "bad-request")),
                ]
            )
        )
        return Stanza(
            "iq",
            kind,
            ident,
            f"{TARGET}/{sender}",
            encode_requester(PROXY, requester),
            "<answer/>",
            error,
            None,
            (("xml:lang", "en"),),
        )
    if draw(st.integers(0, 9)) == 5:
        # Now and then an IQ the target starts (a call): it shares the deadline queue.
        return Stanza(
            "iq",
            "get",
            draw(st.sampled_from(["c1", "c2"])),
            f"{TARGET}/{draw(st.sampled_from(['a', 'b']))}",
            encode_requester(PROXY, draw(st.sampled_from(REQUESTERS[:3]))),
            "<c/>",
        )
    # Ids from a small pool (so that they collide) or new ones (so that requests are accepted).
    ident = draw(st.one_of(st.sampled_from(["1", "2", "x"]), st.just(f"n{state.next_seq}")))
    return Stanza(
        "iq",
        draw(st.sampled_from(["get", "set"])),
        ident,
        # Mostly requesters that can be served, sometimes the target or one that cannot be.
        draw(st.sampled_from(REQUESTERS[:4] * 3 + REQUESTERS[4:])),
        draw(st.sampled_from([PROXY, PROXY, f"{PROXY}/x"])),
        "<q/>",
    )


def times_near(state: ProxyState) -> st.SearchStrategy[float]:
    """``now`` for the next event: the same, a little later, at or past the next deadline,
    earlier (a clock going back), or any value at all."""
    due = state.due
    near = [state.now, state.now + 0.25, state.now - 1.0]
    if due != float("inf"):
        near += [due, due + 1.0]
    return st.one_of(st.sampled_from(near), st.sampled_from(near), cps.times())


def _ready(
    config: ProxyConfig, seed: int = 3, resources: tuple[str, ...] = ("a", "b")
) -> ProxyState:
    """Connected, subscribed, the resources online: the state a running proxy is in."""
    state = step(initial_state(config, seed), ConnectionUp(0.0)).state
    state = step(
        state, StanzaReceived(0.0, Stanza("presence", "subscribed", None, TARGET, PROXY))
    ).state
    for r in resources:
        presence = Stanza("presence", None, None, f"{TARGET}/{r}", PROXY)
        state = step(state, StanzaReceived(0.0, presence)).state
    return state


_PRESENCE = st.builds(
    lambda r, kind: Stanza("presence", kind, None, TARGET if r is None else f"{TARGET}/{r}", PROXY),
    st.sampled_from(["a", "b", "c/d", None]),
    st.sampled_from([None, None, "unavailable", "subscribed"]),
)
_LINK = st.sampled_from([ConnectionLost, ConnectionUp])
_STOP = st.sampled_from([StopRequested, lambda now: StopRequested(now, 1.0)])


@st.composite
def next_events(draw: st.DrawFn, state: ProxyState) -> Event:
    """The next event in a running proxy: mostly requests and answers, then the target's
    presence (resources coming and going, a repeated `subscribed`), and now and then the link
    going down and up again; a little later, much later (deadlines), or at any time at all."""
    config = state.config
    choice = draw(st.integers(0, 19))
    if choice < 18:
        now = state.now + draw(
            st.sampled_from([0.0] * 4 + [0.01] * 4 + [0.5, config.request_timeout])
        )
    else:
        now = draw(times_near(state))
    # A stop is rare (nothing is proxied after it): one draw in 400, and away from the ends of
    # either list, which Hypothesis favours.
    kind = draw(
        st.sampled_from(
            ["stanza"] * 20 + ["stop"] + ["stanza"] * 8 + ["presence"] * 8 + ["link"] * 3
        )
    )
    if kind == "stanza":
        return StanzaReceived(now, draw(ordinary_stanzas(state)))
    if kind == "presence":
        return StanzaReceived(now, draw(_PRESENCE))
    if kind == "link":
        return draw(_LINK)(now)
    if draw(st.integers(0, 9)) == 5:
        return draw(_STOP)(now)
    return StanzaReceived(now, draw(ordinary_stanzas(state)))


def _agree(state: ProxyState, now: float, s: Stanza) -> None:
    fast = express(state, now, s)
    event("express lane" if fast is not None else "general machine")
    if fast is not None:
        assert fast == _general(state, StanzaReceived(now, s))


@given(cps.reachable_states(configs()), st.data())
def test_the_lane_agrees_with_the_general_machine_anywhere(state, data):
    """Any reachable state, any stanza, any time: the lane mostly declines, and when it does
    not, it agrees."""
    s = data.draw(st.one_of(ordinary_stanzas(state), cps.any_stanzas(PROXY, TARGET)))
    _agree(state, data.draw(times_near(state)), s)


@given(
    configs(usual=4), st.integers(0, 2**64 - 1), st.sampled_from([("a",), ("a", "b")]), st.data()
)
def test_the_lane_agrees_with_the_general_machine_in_a_running_proxy(config, seed, online, data):
    """At every step of a running proxy's traffic: the cases the lane is for, and their near
    misses (a duplicate id, a limit reached, a rate exceeded, the wrong resource, an error, a
    reply owed late, a deadline due, the link down, a resync, a clock gone back)."""
    state = _ready(config, seed, online)
    lane = 0
    for _ in range(data.draw(st.integers(10, 60))):
        e = data.draw(next_events(state))
        if isinstance(e, StanzaReceived):
            fast = express(state, e.now, e.stanza)
            if fast is not None:
                lane += 1
                assert fast == _general(state, e)
        state = _general(state, e).state
    event(f"steps through the lane: {min(lane, 5)}{'+' if lane >= 5 else ''}")


@given(
    st.sampled_from(["random", "round-robin"]),
    st.sampled_from([0.0, 100.0]),
    st.lists(st.tuples(st.sampled_from(REQUESTERS[:3]), st.booleans()), max_size=20),
    st.sampled_from([PROXY, f"{PROXY}/x"]),
)
def test_ordinary_traffic_takes_the_lane(routing, rate, history, to):
    """In a running proxy, a new request and its result take the lane whatever came before (other
    requests, answered or still outstanding), and the lane's answers are the general machine's
    (this is the very path `just bench-core` measures)."""
    state = _ready(ProxyConfig(PROXY, TARGET, routing=routing, rate_limit=rate))
    now = 1.0
    for i, (requester, answered) in enumerate(history):
        t = step(state, StanzaReceived(now, Stanza("iq", "get", f"h{i}", requester, PROXY)))
        state = t.state
        if answered:
            forwarded = t.outputs[0].stanza  # type: ignore[union-attr]
            result = Stanza("iq", "result", forwarded.id, forwarded.to, forwarded.from_)
            state = step(state, StanzaReceived(now, result)).state
        now += 0.01
    request = Stanza("iq", "get", "new", "carol@example.org/tablet", PROXY, "<q/>")
    forwarded_by_lane = express(state, now, request)
    # A request to a full JID at the proxy is the general machine's (the lane takes the domain).
    if to != PROXY:
        assert express(state, now, request._replace(to=to)) is None
    assert forwarded_by_lane is not None
    assert forwarded_by_lane == _general(state, StanzaReceived(now, request))
    forwarded = forwarded_by_lane.outputs[0].stanza  # type: ignore[union-attr]
    result = Stanza("iq", "result", "new", forwarded.to, forwarded.from_, "<r/>")
    state = forwarded_by_lane.state
    relayed_by_lane = express(state, now + 0.1, result)
    assert relayed_by_lane is not None
    assert relayed_by_lane == _general(state, StanzaReceived(now + 0.1, result))
    assert relayed_by_lane.outputs[0].stanza.to == "carol@example.org/tablet"  # type: ignore[union-attr]


def test_a_deadline_due_is_left_to_the_general_machine():
    """A step at or past the next deadline must expire first, which only the general machine
    does; the lane declines, and step() still answers the timed-out request."""
    state = _ready(ProxyConfig(PROXY, TARGET, request_timeout=5.0))
    state = step(
        state, StanzaReceived(1.0, Stanza("iq", "get", "1", "a@example.org/x", PROXY))
    ).state
    late = Stanza("iq", "get", "2", "b@example.org/y", PROXY)
    assert express(state, 6.0, late) is None
    outputs = step(state, StanzaReceived(6.0, late)).outputs
    conditions = [
        o.stanza.error.condition for o in outputs if isinstance(o, SendStanza) and o.stanza.error
    ]
    assert conditions == ["remote-server-timeout"]
    assert step(state, TimePassed(6.0)).state.requests == step(
        state, StanzaReceived(6.0, late)
    ).state.requests.delete(("b@example.org/y", "2"))


def _request(ident: str, requester: str = "alice@example.org/phone") -> Stanza:
    return Stanza("iq", "get", ident, requester, PROXY, "<q/>")


def _run(state: ProxyState, *events: Event) -> ProxyState:
    for e in events:
        state = step(state, e).state
    return state


def _answer(state: ProxyState, now: float, s: Stanza) -> tuple[ProxyState, Stanza]:
    """Send request ``s``; the new state and the stanza the resource got."""
    t = step(state, StanzaReceived(now, s))
    return t.state, t.outputs[0].stanza  # type: ignore[union-attr]


def _result_for(
    forwarded: Stanza, kind: str = "result", error: StanzaError | None = None
) -> Stanza:
    return Stanza("iq", kind, forwarded.id, forwarded.to, forwarded.from_, "<r/>", error)


def test_near_misses_random_traffic_rarely_reaches():
    """Cases the generated traffic reaches too seldom to rely on, one by one: in each the lane
    must decline, or agree with the general machine where it does not."""
    config = ProxyConfig(PROXY, TARGET, failure_threshold=1, sync_grace=5.0)

    # Stopping: a request is refused, not forwarded.
    stopping = _run(_ready(config), StopRequested(1.0, 10.0))
    assert express(stopping, 1.5, _request("1")) is None

    # Over the rate limit: refused.
    strict = _ready(dataclasses.replace(config, rate_limit=1.0, rate_burst=1))
    state, _ = _answer(strict, 1.0, _request("1"))
    assert express(state, 1.0, _request("2")) is None
    refusal = step(state, StanzaReceived(1.0, _request("2"))).outputs[-1].stanza  # type: ignore[union-attr]
    assert refusal.error.condition == "policy-violation"

    # A resource cooling down after a failure: the general machine routes around it.
    state, forwarded = _answer(_ready(config), 1.0, _request("1"))
    state = _run(state, StanzaReceived(1.1, _result_for(forwarded, "error", _FAILURE)))
    assert any(r.cooling_until > 1.2 for r in state.resources)
    assert express(state, 1.2, _request("2")) is None

    # A reply that a resource owes for a timed-out request with the same key: a new request with
    # that key, with only that resource online, must skip it (Outstanding.skip).
    alone = _ready(config, resources=("a",))
    state, forwarded = _answer(alone, 1.0, _request("k"))
    state = _run(state, TimePassed(1.0 + config.request_timeout))
    state, _ = _answer(state, 40.0, _request("k"))
    assert state.requests[("alice@example.org/phone", "k")].skip == 1
    assert express(state, 40.1, _result_for(forwarded)) is None

    # Reconnected, resources back but `subscribed` not yet: the deadline is the end of the
    # resync grace, which the lane must take into account for a request into an empty queue.
    # (No rate limit here: its sweep would come first.)
    state = _run(
        _ready(dataclasses.replace(config, rate_limit=0.0)),
        ConnectionLost(2.0),
        ConnectionUp(3.0),
        StanzaReceived(3.0, Stanza("presence", None, None, f"{TARGET}/a", PROXY)),
    )
    fast = express(state, 3.1, _request("1"))
    assert fast is not None
    assert fast == _general(state, StanzaReceived(3.1, _request("1")))
    assert fast.deadline == 3.0 + config.sync_grace

    # The answered request was the head of the queue and a call is next: the lane, which only
    # looks up the deadlines of requests, declines.
    state, forwarded = _answer(_ready(config), 1.0, _request("1"))
    call = Stanza("iq", "get", "c", f"{TARGET}/a", f"{PROXY}/alice@example.org/phone", "<c/>")
    state = _run(state, StanzaReceived(2.0, call))
    assert state.queue[queue_key(state.head)][0] == "in"
    assert express(state, 2.5, _result_for(forwarded)) is None
