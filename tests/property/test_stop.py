"""The end of a stop, as the core decides it: after the proxy's end of stream
(:class:`EndOfStreamSent`), whatever the server still routes is answered, and the answers are
held, never written on the ended stream; once the stream is gone they ask for a fresh one
(:class:`Reconnect`), are sent there in order, once, and nothing is asked of the target on it;
after ``MAX_FLUSHES`` fresh streams that did not come up, what is held is given up and counted.
"""

from __future__ import annotations

import dataclasses

from client_proxy.core import (
    ConnectionLost,
    ConnectionUp,
    CountMetric,
    EndOfStreamSent,
    Link,
    LogRecord,
    ProxyConfig,
    ProxyState,
    Reconnect,
    SendStanza,
    Stanza,
    StanzaReceived,
    Stopped,
    StopRequested,
    TimePassed,
    initial_state,
    step,
)
from client_proxy.core._link import MAX_FLUSHES
from client_proxy.testing import strategies as cps
from hypothesis import example, given
from hypothesis import strategies as st

PROXY = cps.EXAMPLE_PROXY
TARGET = cps.EXAMPLE_TARGET
CONFIG = ProxyConfig(PROXY, TARGET, request_timeout=5.0, sync_grace=1.0)


def stopped_and_ended(held_requests: list[str], config: ProxyConfig = CONFIG) -> ProxyState:
    """A proxy that served, was stopped with requests outstanding that its resource answered,
    emitted Stopped and wrote its end of stream."""
    state = initial_state(config, seed=3)
    events = [
        ConnectionUp(0.0),
        StanzaReceived(0.0, Stanza("presence", "subscribed", None, TARGET, PROXY)),
        StanzaReceived(0.0, Stanza("presence", None, None, f"{TARGET}/a", PROXY)),
    ]
    for event in events:
        state = step(state, event).state
    forwards = []
    for i, requester in enumerate(held_requests):
        t = step(state, StanzaReceived(0.1, Stanza("iq", "get", f"r{i}", requester, PROXY, "<q/>")))
        state = t.state
        forwards += [o.stanza for o in t.outputs if isinstance(o, SendStanza)]
    t = step(state, StopRequested(0.2, 10.0))
    state = t.state
    stopped = [o for o in t.outputs if isinstance(o, Stopped)]
    for f in forwards:
        t = step(state, StanzaReceived(0.3, Stanza("iq", "result", f.id, f.to, f.from_)))
        state = t.state
        stopped += [o for o in t.outputs if isinstance(o, Stopped)]
    assert len(stopped) == 1 and state.session.stopped
    state = step(state, EndOfStreamSent(0.4)).state
    assert state.session.link is Link.CLOSING
    return state


late_traffic = st.lists(cps.plausible_events(CONFIG), max_size=12)


def stanza_events(draws: list) -> list[StanzaReceived]:
    return [e for e in (f(0.5) for f in draws) if isinstance(e, StanzaReceived)]


@given(
    before=st.lists(st.sampled_from(["alice@example.org/phone", "bob@example.net/b"]), max_size=3),
    late=late_traffic,
)
def test_after_the_end_of_stream_answers_are_held_and_sent_once_on_a_fresh_stream(before, late):
    state = stopped_and_ended(before)
    answered: list[Stanza] = []
    for event in stanza_events(late):
        t = step(state, event)
        assert not [o for o in t.outputs if isinstance(o, SendStanza)], t.outputs
        assert [o.name for o in t.outputs if isinstance(o, CountMetric)].count("stop.late") == 1
        new = t.state.session.held[len(state.session.held) :]
        assert t.state.session.held[: len(state.session.held)] == state.session.held
        answered += new
        # A request from a user is answered, and the answer is held for it.
        s = event.stanza
        # Every stanza is counted; a request (whoever sent it) is named in the log, by its id.
        request = s.kind == "iq" and s.type in ("get", "set")
        named = [o for o in t.outputs if isinstance(o, LogRecord) and o.code == "stop.late"]
        assert len(named) == (1 if request else 0), t.outputs
        assert all(f"id={s.id} " in o.message for o in named), named
        if s.kind == "iq" and s.type in ("get", "set") and not s.from_.startswith(TARGET):
            assert any(a.to == s.from_ and a.id == s.id and a.type == "error" for a in new), new
        state = t.state
    held = state.session.held
    assert held == tuple(answered)

    t = step(state, ConnectionLost(1.0))
    assert [o for o in t.outputs if isinstance(o, Reconnect)] == ([Reconnect()] if held else [])
    assert not [o for o in t.outputs if isinstance(o, SendStanza)]
    state = t.state

    t = step(state, ConnectionUp(1.1))
    sent = [o.stanza for o in t.outputs if isinstance(o, SendStanza)]
    assert sent == list(held)  # in order, each once, and nothing asked of the target
    assert not t.state.session.held
    assert not [o for o in t.outputs if isinstance(o, Stopped | Reconnect)]
    # Later steps send none of them again.
    t = step(t.state, TimePassed(100.0))
    assert not [o for o in t.outputs if isinstance(o, SendStanza)]


@given(
    late=st.lists(st.sampled_from(["alice@example.org/phone", "carol@example.com/c"]), min_size=1)
)
def test_a_fresh_stream_is_asked_for_at_most_max_flushes_times(late):
    state = stopped_and_ended([])
    for i, requester in enumerate(late):
        stanza = Stanza("iq", "set", f"late-{i}", requester, PROXY, "<q/>")
        state = step(state, StanzaReceived(0.5, stanza)).state
    held = state.session.held
    assert len(held) == len(late)
    reconnects = 0
    lost: list[str] = []
    for attempt in range(MAX_FLUSHES + 2):
        # The stream goes, then each fresh one fails to come up: the transport says so.
        t = step(state, ConnectionLost(1.0 + attempt))
        state = t.state
        reconnects += sum(isinstance(o, Reconnect) for o in t.outputs)
        lost += [o.name for o in t.outputs if isinstance(o, CountMetric) and o.name == "stop.lost"]
        assert not [o for o in t.outputs if isinstance(o, SendStanza)]
    assert reconnects == MAX_FLUSHES
    assert len(lost) == len(held)
    assert not state.session.held


@given(max_outstanding=st.integers(1, 4), late=st.integers(0, 12))
@example(max_outstanding=2, late=4)  # exactly the hold's size
@example(max_outstanding=2, late=5)  # one more
def test_the_hold_is_bounded_and_what_does_not_fit_is_counted(max_outstanding, late):
    """Answers wait in the hold only while the stream cannot carry them: at most
    2 x max_outstanding (requests and calls are each bounded by it, and each gets one answer),
    however many stanzas a transport delivers meanwhile; each answer that does not fit is
    counted (``dropped.held_overflow``), and the budget counts exactly what is held."""
    config = dataclasses.replace(CONFIG, max_outstanding=max_outstanding)
    state = stopped_and_ended([], config)
    overflow = 0
    for i in range(late):
        stanza = Stanza("iq", "get", f"late-{i}", "alice@example.org/phone", PROXY, "<q/>")
        t = step(state, StanzaReceived(0.5, stanza))
        overflow += [o for o in t.outputs if isinstance(o, CountMetric)].count(
            CountMetric("dropped.held_overflow")
        )
        state = t.state
    cap = 2 * max_outstanding
    held = state.session.held
    assert len(held) == min(late, cap)
    assert overflow == max(0, late - cap)
    assert [(a.to, a.id) for a in held] == [
        ("alice@example.org/phone", f"late-{i}") for i in range(min(late, cap))
    ]
    size = sum(len(a.id or "") + len(a.from_ or "") + len(a.to or "") for a in held)
    assert state.session.held_bytes == state.bytes_held == size


def test_answers_held_while_the_stream_was_down_at_the_stop_ask_for_a_fresh_stream():
    """Stopped while offline: the answers due meanwhile are not dropped, they are flushed."""
    state = initial_state(CONFIG, seed=1)
    for event in (
        ConnectionUp(0.0),
        StanzaReceived(0.0, Stanza("presence", "subscribed", None, TARGET, PROXY)),
        StanzaReceived(0.0, Stanza("presence", None, None, f"{TARGET}/a", PROXY)),
        StanzaReceived(0.1, Stanza("iq", "get", "q1", "alice@example.org/phone", PROXY)),
        ConnectionLost(0.2),
    ):
        state = step(state, event).state
    t = step(state, StopRequested(0.3, 0.0))
    assert [type(o) for o in t.outputs if isinstance(o, Stopped | Reconnect)] == [
        Stopped,
        Reconnect,
    ]
    (answer,) = t.state.session.held
    assert (answer.to, answer.id, answer.type) == ("alice@example.org/phone", "q1", "error")
    t = step(t.state, ConnectionUp(0.4))
    assert [o.stanza for o in t.outputs if isinstance(o, SendStanza)] == [answer]
