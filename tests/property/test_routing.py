"""Routing strategies and eligibility, proven on the core alone.

- every strategy only ever picks an eligible online resource;
- `sticky` keeps a requester on its resource under unrelated churn, and a resource leaving moves
  only the requesters it had (rendezvous hashing moves the minimum);
- `least-outstanding` keeps resources within one request of each other under steady load;
- a resource answering `feature-not-implemented` in a row leaves rotation, and comes back after
  the cool-down or with new presence.
"""

from __future__ import annotations

import re

from client_proxy.core import (
    ROUTING_STRATEGIES,
    ConnectionUp,
    LogRecord,
    ProxyConfig,
    ProxyState,
    SendStanza,
    Stanza,
    StanzaError,
    StanzaReceived,
    Transition,
    initial_state,
    step,
)
from hypothesis import given, settings
from hypothesis import strategies as st

PROXY = "proxy.example.org"
TARGET = "svc@example.org"
RESOURCES = ("a", "b", "c", "d", "worker-1", "worker-2")
REQUESTERS = tuple(f"user{i}@example.org/r{i % 3}" for i in range(12))

resource_names = st.sampled_from(RESOURCES)
requesters = st.sampled_from(REQUESTERS)


def _config(**overrides: object) -> ProxyConfig:
    return ProxyConfig(PROXY, TARGET, rate_limit=0, **overrides)  # type: ignore[arg-type]


def _presence(name: str, now: float, kind: str | None = None, priority: int = 0) -> StanzaReceived:
    return StanzaReceived(
        now, Stanza("presence", kind, None, f"{TARGET}/{name}", PROXY, priority=str(priority))
    )


def _online(
    cfg: ProxyConfig, names: list[str], seed: int = 0, priorities: dict[str, int] | None = None
) -> ProxyState:
    state = step(initial_state(cfg, seed), ConnectionUp(0.0)).state
    for name in names:
        state = step(state, _presence(name, 0.0, priority=(priorities or {}).get(name, 0))).state
    return state


def _request(state: ProxyState, requester: str, ident: str, now: float = 1.0) -> Transition:
    return step(state, StanzaReceived(now, Stanza("iq", "get", ident, requester, PROXY)))


def _forwarded_to(t: Transition) -> str | None:
    """The resource a request was forwarded to, or None if it was refused."""
    for out in t.outputs:
        if isinstance(out, SendStanza) and out.stanza.to and out.stanza.to.startswith(TARGET + "/"):
            return out.stanza.to.split("/", 1)[1]
    return None


def _reply(
    state: ProxyState, t: Transition, now: float = 1.0, error: str | None = None
) -> Transition:
    for out in t.outputs:
        if isinstance(out, SendStanza) and out.stanza.to and out.stanza.to.startswith(TARGET + "/"):
            f = out.stanza
            if error is None:
                answer = Stanza("iq", "result", f.id, f.to, f.from_)
            else:
                answer = Stanza(
                    "iq", "error", f.id, f.to, f.from_, error=StanzaError("cancel", error)
                )
            return step(state, StanzaReceived(now, answer))
    raise AssertionError("nothing was forwarded")


@given(
    strategy=st.sampled_from(sorted(ROUTING_STRATEGIES)),
    online=st.lists(resource_names, min_size=1, max_size=6, unique=True),
    pattern=st.sampled_from([None, "worker-.*", "[ab]"]),
    priorities=st.dictionaries(resource_names, st.integers(-5, 5)),
    seed=st.integers(0, 2**64 - 1),
    who=st.lists(requesters, min_size=1, max_size=30),
)
def test_every_strategy_picks_an_eligible_online_resource(
    *,
    strategy: str,
    online: list[str],
    pattern: str | None,
    priorities: dict[str, int],
    seed: int,
    who: list[str],
) -> None:
    cfg = _config(routing=strategy, resource_pattern=pattern)
    state = _online(cfg, online, seed, priorities)
    eligible = {n for n in online if pattern is None or re.fullmatch(pattern, n)}
    for i, requester in enumerate(who):
        t = _request(state, requester, f"q{i}")
        chosen = _forwarded_to(t)
        if eligible:
            assert chosen in eligible
        else:
            assert chosen is None  # refused: no eligible resource
            errors = [o.stanza.error for o in t.outputs if isinstance(o, SendStanza)]
            assert errors and errors[0] is not None
            assert errors[0].condition == "service-unavailable"
        if strategy == "priority" and chosen is not None:
            top = max(priorities.get(n, 0) for n in eligible)
            assert priorities.get(chosen, 0) == top
        state = t.state  # requests stay outstanding: least-outstanding sees real load


@given(
    online=st.lists(resource_names, min_size=2, max_size=6, unique=True),
    churn=st.lists(st.tuples(st.booleans(), resource_names), max_size=10),
    who=st.lists(requesters, min_size=1, max_size=12, unique=True),
)
def test_sticky_is_stable_under_unrelated_churn_and_moves_the_minimum(
    online: list[str], churn: list[tuple[bool, str]], who: list[str]
) -> None:
    cfg = _config(routing="sticky")
    state = _online(cfg, online)
    present = set(online)

    def assignment(s: ProxyState) -> dict[str, str | None]:
        return {w: _forwarded_to(_request(s, w, "probe-id")) for w in who}

    before = assignment(state)
    for arrive, name in churn:
        if arrive:
            state = step(state, _presence(name, 0.5)).state
            present.add(name)
        else:
            state = step(state, _presence(name, 0.5, "unavailable")).state
            present.discard(name)
        after = assignment(state)
        for w in who:
            if not present:
                assert after[w] is None
            elif before[w] in present:
                # Its resource is still there: it only moves if the newcomer outranks it, and
                # then only to the newcomer (rendezvous hashing moves the minimum).
                assert after[w] == before[w] or (arrive and after[w] == name)
            else:
                assert after[w] in present  # its resource left: it moved, somewhere online
        before = after


@settings(max_examples=50)
@given(
    online=st.lists(resource_names, min_size=2, max_size=5, unique=True),
    rounds=st.lists(st.integers(0, 1000), min_size=20, max_size=120),
    seed=st.integers(0, 2**32),
)
def test_least_outstanding_keeps_resources_within_one(
    online: list[str], rounds: list[int], seed: int
) -> None:
    """Steady load: each round either sends a request or answers the oldest one. After every
    request, the counts of outstanding requests per resource differ by at most one."""
    cfg = _config(routing="least-outstanding")
    state = _online(cfg, online, seed)
    pending: list[Transition] = []
    load = dict.fromkeys(online, 0)
    for i, choice in enumerate(rounds):
        if choice % 3 and pending:
            # Answer the oldest first (steady state: a FIFO service).
            t = pending.pop(0)
            load[_forwarded_to(t) or ""] -= 1
            state = _reply(state, t).state
            continue
        t = _request(state, REQUESTERS[i % len(REQUESTERS)], f"q{i}")
        state = t.state
        chosen = _forwarded_to(t)
        assert chosen is not None
        load[chosen] += 1
        pending.append(t)
        # The new request went to a least loaded resource...
        assert load[chosen] - 1 == min(n - (1 if r == chosen else 0) for r, n in load.items())
    # ...so, answering in order, nobody is ever more than one ahead once the queue drains.
    assert dict(state.load) == {r: n for r, n in load.items() if n}


def test_least_outstanding_spreads_a_burst_evenly() -> None:
    cfg = _config(routing="least-outstanding")
    state = _online(cfg, ["a", "b", "c"])
    load = {"a": 0, "b": 0, "c": 0}
    for i in range(30):
        t = _request(state, REQUESTERS[i % len(REQUESTERS)], f"q{i}")
        state = t.state
        load[_forwarded_to(t) or ""] += 1
        assert max(load.values()) - min(load.values()) <= 1


@given(threshold=st.integers(1, 4), cooldown=st.floats(1, 100), seed=st.integers(0, 2**32))
def test_failing_resource_leaves_rotation_then_returns(
    threshold: int, cooldown: float, seed: int
) -> None:
    cfg = _config(routing="round-robin", failure_threshold=threshold, failure_cooldown=cooldown)
    state = _online(cfg, ["bad", "good"], seed)
    now = 1.0
    failures = 0
    i = 0
    # "bad" answers feature-not-implemented until it is taken out; every get still succeeds
    # (retried on "good").
    while failures < threshold:
        t = _request(state, REQUESTERS[i % 3], f"q{i}", now)
        i += 1
        chosen = _forwarded_to(t)
        if chosen == "bad":
            t2 = _reply(t.state, t, now, error="feature-not-implemented")
            failures += 1
            # the get was retried on "good", not answered with the error
            assert _forwarded_to(t2) == "good"
            state = _reply(t2.state, t2, now).state
            if failures == threshold:
                assert any(
                    isinstance(o, LogRecord) and o.code == "resource.cooldown" for o in t2.outputs
                )
        else:
            state = _reply(t.state, t, now).state
    # Out of rotation for the cool-down: everything goes to "good".
    for j in range(6):
        t = _request(state, REQUESTERS[j % 3], f"during{j}", now + cooldown / 2)
        assert _forwarded_to(t) == "good"
        state = _reply(t.state, t, now + cooldown / 2).state
    # After the cool-down it takes requests again (round-robin reaches it within two).
    later = now + cooldown + 0.001
    seen = set()
    for j in range(2):
        t = _request(state, REQUESTERS[j % 3], f"after{j}", later)
        seen.add(_forwarded_to(t))
        state = _reply(t.state, t, later).state
    assert "bad" in seen


def test_new_presence_ends_a_cool_down() -> None:
    cfg = _config(routing="round-robin", failure_threshold=1, failure_cooldown=1000)
    state = _online(cfg, ["bad", "good"])
    t = _request(state, REQUESTERS[0], "q0")
    assert _forwarded_to(t) == "bad"
    t2 = _reply(t.state, t, error="service-unavailable")
    state = _reply(t2.state, t2).state  # retried on good, answered
    assert all(_forwarded_to(_request(state, REQUESTERS[1], f"x{j}")) == "good" for j in range(3))
    state = step(state, _presence("bad", 2.0)).state
    picks = set()
    for j in range(2):
        t = _request(state, REQUESTERS[1], f"y{j}", 2.0)
        picks.add(_forwarded_to(t))
        state = t.state
    assert picks == {"bad", "good"}
