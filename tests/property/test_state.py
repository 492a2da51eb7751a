"""The state's own helpers, the state before the first event, and the values that go in."""

from __future__ import annotations

import dataclasses
import math
import typing

import pytest
from client_proxy.core import (
    ConfigChanged,
    ConnectionLost,
    ConnectionUp,
    EndOfStreamSent,
    Event,
    Link,
    ProxyConfig,
    ProxyState,
    Stanza,
    StanzaReceived,
    StopRequested,
    Subscription,
    TimePassed,
    initial_state,
)
from client_proxy.core._queue import queue_key, queue_seq
from client_proxy.core._state import Step
from client_proxy.testing import strategies as cps
from hypothesis import given
from hypothesis import strategies as st

SEQS = st.integers(min_value=0, max_value=2**64)


@given(SEQS)
def test_queue_seq_inverts_queue_key(seq):
    """So distinct sequence numbers never share a queue key, and a key names its number."""
    assert queue_seq(queue_key(seq)) == seq


@given(st.integers(min_value=0, max_value=2**64 - 32))
def test_consecutive_numbers_share_a_leaf(seq):
    """Numbers in one aligned block of 32 differ only in key bits 15-19: one leaf of the map."""
    block = seq - seq % 32
    keys = {queue_key(block + i) for i in range(32)}
    assert len(keys) == 32
    assert {k & ~(31 << 15) for k in keys} == {queue_key(block) & ~(31 << 15)}


def test_a_working_copy_freezes_back_into_the_state_it_was_opened_from():
    """Step unpacks ProxyState in its order and closes it by name: with a distinct value in
    every field, any slip in the order shows as a field that does not come back."""
    config = ProxyConfig("proxy.example.org", "svc@example.org")
    marks = {name: object() for name in ProxyState._fields}
    marks["config"] = config
    marks["now"] = 5.0
    state = ProxyState(**marks)  # type: ignore[arg-type]
    w = Step(state, 5.0)
    for name in ProxyState._fields:
        assert getattr(w, name) is getattr(state, name), name
    assert w.close() == state
    assert set(Step.__slots__) == {*ProxyState._fields, "out"}


@given(cps.proxy_configs(), st.integers(min_value=-(2**80), max_value=2**80))
def test_the_initial_state_knows_nothing_and_holds_nothing(config, seed):
    """``initial_state``: disconnected, nothing known of the target, nothing outstanding, held,
    queued or counted yet, and the choice's generator at the seed (as a 64-bit number: any
    integer is a seed). The embedder reads ``session`` (docs/embedding.md), so its fields say
    exactly that before the first event too."""
    state = initial_state(config, seed)
    assert state.config is config
    assert state.rng == seed % 2**64
    assert state.now == -math.inf and state.due == -math.inf
    session = state.session
    assert session.link is Link.DOWN and session.subscription is Subscription.NONE
    assert session.resources == () and session.online == ()
    assert not session.synced, "nothing has said whether any resource is online yet"
    assert session.sync_until == -math.inf
    assert session.parked == () and session.held == () and session.held_bytes == 0
    assert session.stop_at is None and not session.stopped and session.flushes == 0
    for table in (state.requests, state.per_requester, state.queue, state.rates, state.load):
        assert len(table) == 0
    for table in (state.seen, state.calls, state.routes):
        assert len(table) == 0
    # Its name in the ids it seals: 8 hex digits, a function of the seed unless given.
    assert len(state.instance) == 8 and int(state.instance, 16) >= 0
    assert initial_state(config, seed, instance=0xABC).instance == "00000abc"
    assert state.epoch == 0.0
    assert state.bytes_held == 0
    # An empty queue: the next number handed out is the first, and nothing is before it.
    assert state.head == state.next_seq == 0
    assert state.turn == 0
    assert state.sweep_at == math.inf


def test_distinct_seeds_name_distinct_instances():
    """Processes given different seeds (and no instance) seal under different names, so that
    none takes another's answers for its own; and the name leaves the choice's generator alone.
    (32 bits from a 64-bit seed must collide somewhere; not among nearby seeds.)"""
    config = ProxyConfig("proxy.example.org", "svc@example.org")
    seeds = [*range(20_000), *(2**63 + k for k in range(1000)), 2**64 - 1]
    names = {initial_state(config, seed).instance for seed in seeds}
    assert len(names) == len(seeds)
    assert all(initial_state(config, seed).rng == seed for seed in seeds[:10])


def test_without_a_seed_every_process_starts_alike():
    """A transport that passes no seed still gets a repeatable run (seed 0)."""
    config = ProxyConfig("proxy.example.org", "svc@example.org")
    assert initial_state(config) == initial_state(config, 0)


EVENTS = (
    ConnectionUp(1.0),
    ConnectionLost(1.0),
    StanzaReceived(1.0, Stanza("iq", "get", "1", "u@example.org/r", "proxy.example.org")),
    TimePassed(1.0),
    StopRequested(1.0, 2.0),
    EndOfStreamSent(1.0),
    ConfigChanged(1.0, ProxyConfig("proxy.example.org", "svc@example.org")),
)


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_events_are_frozen_values_with_slots(event):
    """STYLE.md (h11): every event is a small frozen class with slots: a value the transport
    cannot change after handing it over, usable as a key, with no per-instance dict."""
    assert {type(e) for e in EVENTS} == set(typing.get_args(Event))
    assert not hasattr(event, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.now = 2.0  # type: ignore[misc]
    assert hash(event) == hash(dataclasses.replace(event))


@pytest.mark.parametrize("enum", [Link, Subscription])
def test_link_and_subscription_name_themselves(enum):
    """What the shell's status line prints (``link=up subscription=approved``): each member's
    value is its name in lower case, and values are distinct."""
    for member in enum:
        assert member.value == member.name.lower()
    assert len({m.value for m in enum}) == len(enum)


def test_the_subscription_is_in_place_once_approved_or_announced():
    """``Subscription.in_place``, which /healthz and the subscription gauge read: approved by
    `subscribed`, or announced by a resource's presence; not before."""
    assert {s for s in Subscription if s.in_place} == {
        Subscription.APPROVED,
        Subscription.ANNOUNCED,
    }
    assert all(isinstance(s.in_place, bool) for s in Subscription)
