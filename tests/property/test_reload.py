"""A reload (ConfigChanged) while requests are in flight: what the model-based machine does not
look at directly. The policy keys themselves are exercised by its `reload` rule."""

from __future__ import annotations

import dataclasses
from collections import Counter

from client_proxy.core import (
    ConfigChanged,
    ConnectionUp,
    CountMetric,
    LogRecord,
    ProxyConfig,
    ProxyState,
    SendStanza,
    Stanza,
    StanzaError,
    StanzaReceived,
    TimePassed,
    initial_state,
    step,
)
from client_proxy.testing import strategies as cps
from hypothesis import given
from hypothesis import strategies as st

PROXY = cps.EXAMPLE_PROXY
TARGET = cps.EXAMPLE_TARGET
ROUTINGS = ["random", "round-robin", "least-outstanding", "priority", "sticky"]


@given(
    first=st.sampled_from(ROUTINGS),
    then=st.sampled_from(ROUTINGS),
    requests=st.integers(0, 12),
)
def test_switching_to_least_outstanding_counts_what_each_resource_holds(first, then, requests):
    config = ProxyConfig(PROXY, TARGET, routing=first, rate_limit=0.0)
    state = _ready(config)
    for i in range(requests):
        stanza = Stanza("iq", "get", f"q{i}", f"user{i}@example.org/r", PROXY)
        state = step(state, StanzaReceived(1.0, stanza)).state
    state = step(state, ConfigChanged(1.0, dataclasses.replace(config, routing=then))).state
    held = Counter(o.resource for o in state.requests.values() if o.resource is not None)
    if then == "least-outstanding":
        assert dict(state.load) == dict(held)
    else:
        assert not state.load


def _ready(config: ProxyConfig) -> ProxyState:
    """Connected, subscribed, with resources a, b and c online."""
    state = step(initial_state(config, seed=5), ConnectionUp(0.0)).state
    for sender, kind in ((TARGET, "subscribed"), *((f"{TARGET}/{r}", None) for r in "abc")):
        state = step(
            state, StanzaReceived(0.0, Stanza("presence", kind, None, sender, PROXY))
        ).state
    return state


def test_a_new_target_is_refused_and_the_old_config_stays():
    config = ProxyConfig(PROXY, TARGET)
    state = _ready(config)
    other = ProxyConfig(PROXY, "other@example.net", routing="sticky")
    t = step(state, ConfigChanged(1.0, other))
    assert t.state.config == config
    assert [o.code for o in t.outputs if isinstance(o, LogRecord)] == ["config.rejected"]


def test_switching_the_rate_limit_off_forgets_the_rates_and_their_sweep():
    config = ProxyConfig(PROXY, TARGET, rate_limit=1.0, rate_burst=1)
    state = _ready(config)
    stanza = Stanza("iq", "get", "q", "user@example.org/r", PROXY)
    state = step(state, StanzaReceived(1.0, stanza)).state
    assert state.rates and state.sweep_at < float("inf")
    state = step(state, ConfigChanged(1.0, dataclasses.replace(config, rate_limit=0.0))).state
    assert not state.rates and state.sweep_at == float("inf")
    # And time passing after it has nothing to sweep (no division by a zero rate).
    step(state, TimePassed(1e6))


@given(
    rate=st.one_of(st.sampled_from([0.5, 1.0, 2.0]), st.floats(0.01, 1000)),
    burst=st.integers(1, 5),
    routing=st.sampled_from(ROUTINGS),
)
def test_a_reload_is_no_way_round_the_rate_limit(rate, burst, routing):
    """A reload that keeps the rate limit on (whatever else it changes) keeps what each
    account has used of its bucket: after a full burst, the next request at the same instant
    is still refused."""
    config = ProxyConfig(PROXY, TARGET, rate_limit=rate, rate_burst=burst)
    state = _ready(config)
    for i in range(burst):
        stanza = Stanza("iq", "get", f"q{i}", "user@example.org/r", PROXY)
        state = step(state, StanzaReceived(1.0, stanza)).state
    assert len(state.requests) == burst
    state = step(state, ConfigChanged(1.0, dataclasses.replace(config, routing=routing))).state
    t = step(state, StanzaReceived(1.0, Stanza("iq", "get", "more", "user@example.org/s", PROXY)))
    (refusal,) = [o.stanza for o in t.outputs if isinstance(o, SendStanza)]
    assert refusal.error is not None and refusal.error.condition == "policy-violation"
    # The account's bucket, and its sweep, are kept.
    assert set(t.state.rates) == {"user@example.org"} and t.state.sweep_at < float("inf")


@given(
    old=st.floats(10.0, 100.0),
    new=st.floats(0.5, 9.0),
    within=st.floats(0.0, 0.99),
    beyond=st.floats(0.01, 0.99),
)
def test_a_shorter_timeout_also_cuts_the_ways_back_of_messages(old, new, within, beyond):
    """A message from the target is remembered (for the error the user's side may bounce)
    until ``request_timeout``; a reload with a shorter one cuts that too, like every other wait:
    an error before the new end goes back to the resource, one after it finds nothing."""
    config = ProxyConfig(PROXY, TARGET, request_timeout=old, rate_limit=0)
    user = "alice@example.org/phone"
    message = Stanza("message", "chat", "m1", f"{TARGET}/a", f"{PROXY}/{user}", "hi")
    state = step(_ready(config), StanzaReceived(1.0, message)).state
    shorter = dataclasses.replace(config, request_timeout=new)
    state = step(state, ConfigChanged(1.0, shorter)).state
    bounce = Stanza("message", "error", "m1", user, PROXY, error=StanzaError("cancel", "gone"))
    early = step(state, StanzaReceived(1.0 + new * within, bounce))
    assert [(o.stanza.to, o.stanza.type) for o in early.outputs if isinstance(o, SendStanza)] == [
        (f"{TARGET}/a", "error")
    ]
    late = step(state, StanzaReceived(1.0 + new + (old - new) * beyond, bounce))
    assert not [o for o in late.outputs if isinstance(o, SendStanza)]
    assert CountMetric("dropped.message_error_unmatched") in late.outputs
