"""The state's own helpers."""

from __future__ import annotations

from client_proxy.core import ProxyConfig, ProxyState
from client_proxy.core._queue import queue_key, queue_seq
from client_proxy.core._state import Step
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
