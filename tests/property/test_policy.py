"""Who may use the service (allow/deny) and how fast (per-requester rate limit).

- a refused requester gets a clear error at once and the target never sees the request;
- a requester over its rate gets `policy-violation` (wait), and other requesters are not affected;
- the limiter admits exactly what a token bucket of the configured rate and burst admits;
- its state is swept: nothing stays once a requester's bucket is full again.
"""

from __future__ import annotations

from client_proxy.core import (
    ConnectionUp,
    ProxyConfig,
    ProxyState,
    SendStanza,
    Stanza,
    StanzaReceived,
    TimePassed,
    initial_state,
    step,
)
from client_proxy.core._policy import listed, rate_check
from hypothesis import example, given
from hypothesis import strategies as st

PROXY = "proxy.example.org"
TARGET = "svc@example.org"

domains = st.sampled_from(["example.org", "evil.example", "partner.example"])
users = st.sampled_from(["alice", "bob", "mallory"])
resources = st.sampled_from(["phone", "laptop"])
jids = st.builds(lambda u, d, r: f"{u}@{d}/{r}", users, domains, resources)
entries = st.one_of(
    domains,
    st.builds(lambda u, d: f"{u}@{d}", users, domains),
    jids,
)


def _ready(cfg: ProxyConfig) -> ProxyState:
    state = step(initial_state(cfg, 1), ConnectionUp(0.0)).state
    presence = Stanza("presence", None, None, f"{TARGET}/a", PROXY)
    return step(state, StanzaReceived(0.0, presence)).state


def _outcome(state: ProxyState, requester: str, ident: str, now: float) -> tuple[ProxyState, str]:
    """'forwarded', or the error condition the requester got."""
    t = step(state, StanzaReceived(now, Stanza("iq", "get", ident, requester, PROXY)))
    sends = [o.stanza for o in t.outputs if isinstance(o, SendStanza)]
    assert len(sends) == 1
    s = sends[0]
    if s.to == f"{TARGET}/a":
        return t.state, "forwarded"
    assert s.to == requester and s.type == "error" and s.error is not None
    assert s.id == ident and s.from_ == PROXY
    return t.state, s.error.condition


def _listed_model(jid: str, entry: str) -> bool:
    bare, _, _resource = jid.partition("/")
    domain = bare.partition("@")[2]
    if "/" in entry:
        return entry == jid
    if "@" in entry:
        return entry == bare
    return entry == domain


@given(jid=jids, allow=st.lists(entries, max_size=3), deny=st.lists(entries, max_size=3))
def test_allow_and_deny_decide_before_the_target_sees_anything(
    jid: str, allow: list[str], deny: list[str]
) -> None:
    cfg = ProxyConfig(PROXY, TARGET, allow=tuple(allow), deny=tuple(deny), rate_limit=0)
    denied = any(_listed_model(jid, e) for e in deny)
    allowed = not allow or any(_listed_model(jid, e) for e in allow)
    assert listed(jid, tuple(deny)) == denied
    _, outcome = _outcome(_ready(cfg), jid, "q1", 1.0)
    assert outcome == ("forwarded" if allowed and not denied else "forbidden")


@given(
    rate=st.floats(0.5, 50),
    burst=st.integers(1, 10),
    gaps=st.lists(st.floats(0, 2), min_size=1, max_size=60),
)
def test_rate_limit_is_a_token_bucket_and_spares_others(
    rate: float, burst: int, gaps: list[float]
) -> None:
    cfg = ProxyConfig(PROXY, TARGET, rate_limit=rate, rate_burst=burst)
    state = _ready(cfg)
    # A plain token bucket, the model: `burst` tokens, refilled at `rate` per second.
    tokens = float(burst)
    last = 1.0
    now = 1.0
    for i, gap in enumerate(gaps):
        now += gap
        tokens = min(float(burst), tokens + (now - last) * rate)
        last = now
        expected = "forwarded" if tokens >= 1.0 - 1e-9 else "policy-violation"
        # Her resources share one bucket: the rate is per account (bare JID).
        resource = ("phone", "laptop", f"fresh{i}")[i % 3]
        state, outcome = _outcome(state, f"alice@example.org/{resource}", f"a{i}", now)
        # Float rounding at the exact boundary may go either way; elsewhere they agree.
        if abs(tokens - 1.0) > 1e-6:
            assert outcome == expected, (i, tokens)
        if outcome == "forwarded":
            tokens -= 1.0
        # Somebody else is never affected by alice's rate.
        state, other = _outcome(state, f"bob{i}@example.org/r", f"b{i}", now)
        assert other == "forwarded"
        state = _answer_all(state, now)


def _answer_all(state: ProxyState, now: float) -> ProxyState:
    for (requester, ident), o in list(state.requests.items()):
        reply = Stanza("iq", "result", ident, f"{TARGET}/{o.resource}", f"{PROXY}/{requester}")
        state = step(state, StanzaReceived(now, reply)).state
    return state


@example(rate=1.25, burst=2, now=8.0)  # rounding at the boundary refused the second of a burst
@given(rate=st.floats(0.1, 100), burst=st.integers(1, 50), now=st.floats(0, 1e6))
def test_gcra_admits_a_full_burst_then_one_per_interval(
    rate: float, burst: int, now: float
) -> None:
    tat = None
    for _ in range(burst):
        tat = rate_check(tat, now, rate, burst)
        assert tat is not None
    assert rate_check(tat, now, rate, burst) is None
    assert rate_check(tat, now + 1.0 / rate + 1e-9 * max(1.0, now), rate, burst) is not None


def test_rate_entries_are_swept_once_buckets_are_full_again() -> None:
    cfg = ProxyConfig(PROXY, TARGET, rate_limit=10, rate_burst=5)
    state = _ready(cfg)
    for i in range(50):
        state, _ = _outcome(state, f"user{i}@example.org/r", f"q{i}", 1.0)
        state = _answer_all(state, 1.0)
    assert len(state.rates) == 50
    t = step(state, TimePassed(100.0))
    assert len(t.state.rates) == 0
    assert t.deadline is None


@given(rate=st.floats(0.1, 100), burst=st.integers(1, 50), now=st.floats(0, 1e6))
def test_the_limiter_asks_to_be_woken_when_a_bucket_can_be_full_again(
    rate: float, burst: int, now: float
) -> None:
    """The rate limiter's memory is swept once a bucket can have filled up again: ``burst /
    rate`` seconds after the first request (at least one second, so as not to wake for every
    request at high rates). That is the wake-up the transport is given, when nothing else is
    due earlier; at it, a requester who sent nothing since is forgotten."""
    cfg = ProxyConfig(PROXY, TARGET, rate_limit=rate, rate_burst=burst, request_timeout=1e9)
    state = initial_state(cfg, 1)
    for event in (
        ConnectionUp(0.0),
        StanzaReceived(0.0, Stanza("presence", "subscribed", None, TARGET, PROXY)),
        StanzaReceived(0.0, Stanza("presence", None, None, f"{TARGET}/a", PROXY)),
    ):
        state = step(state, event).state
    t = step(state, StanzaReceived(now, Stanza("iq", "get", "1", "alice@example.org/a", PROXY)))
    sweep = now + max(1.0, burst / rate)
    assert t.deadline == sweep
    assert set(t.state.rates) == {"alice@example.org"}
    swept = step(t.state, TimePassed(sweep))
    assert len(swept.state.rates) == 0
