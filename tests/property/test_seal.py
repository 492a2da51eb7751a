"""Sealed ids (``client_proxy.core._seal``): what the proxy puts on each request it forwards and
each call it passes to a user, so that any instance holding the key can deliver the answer.

- Sealing then opening gives back every field, for any original id and any JIDs the
  conformance kit generates; the id is only ever as long as :func:`sealed_size` says.
- Any change to a sealed id (a character replaced, inserted or removed), another key, another
  direction or another answerer fails verification: nothing but the id that was sealed opens.
- No two forwards share an id, whatever requesters, ids and resources (the proxy's own
  requests, through :func:`step`); and what the proxy delivers for ids it did not seal itself
  is exactly what verifies and has not expired (the model-based machine in ``test_machine``
  checks it in every interleaving; here, head on).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac

from client_proxy.core import (
    ConfigChanged,
    ConnectionUp,
    ProxyConfig,
    SendStanza,
    Stanza,
    StanzaReceived,
    initial_state,
    step,
)
from client_proxy.core._recovery import sealed_deadline
from client_proxy.core._seal import (
    CALL,
    REQUEST,
    Sealed,
    mac,
    open_id,
    original_of,
    seal,
    sealed_size,
    wall_ms,
)
from client_proxy.core._state import Step
from client_proxy.testing import strategies as cps
from hypothesis import assume, example, given
from hypothesis import strategies as st

PROXY = "proxy.example.org"
TARGET = "svc@example.org"

keys = st.binary(min_size=0, max_size=80)
instances = st.integers(0, 2**32 - 1).map(lambda n: f"{n:08x}")
#: Any text an id attribute can carry, the separator included.
original_ids = st.one_of(st.sampled_from(["", "1", "a.b.c", ".", "x" * 300]), st.text())
fields = st.builds(
    Sealed,
    instances,
    st.integers(0, 2**64),
    st.integers(0, 2**63 - 1),
    cps.resourceparts(64),
    st.one_of(st.just(""), cps.addresses()),
    original_ids,
)
answerers = st.one_of(cps.requester_jids(), st.text())
directions = st.sampled_from([REQUEST, CALL])


@given(keys, directions, fields, answerers)
@example(b"", REQUEST, Sealed("00000000", 0, 0, "", "", ""), "")
@example(b"k", CALL, Sealed("ffffffff", 1, 2, "a.b", "proxy.example.org/x.y", "1.2.3"), "u@x/y")
# A resource name of 15 characters or more: its length takes the hex digit f, or two digits.
@example(b"k", REQUEST, Sealed("0000abcd", 3, 4, "focus-0123456789abcdef", "", "q1"), "u@x/y")
@example(b"k", REQUEST, Sealed("0000abcd", 3, 4, "r" * 15, "proxy.example.org", "q1"), "u@x/y")
def test_sealing_then_opening_gives_back_every_field(key, direction, sealed, answerer):
    ident = seal(key, direction, sealed, answerer)
    assert open_id(key, direction, ident, answerer) == sealed
    assert original_of(ident) == sealed.original
    assert len(ident.encode("utf-8", "surrogatepass")) == sealed_size(sealed) + len(
        sealed.original.encode("utf-8", "surrogatepass")
    )


@given(keys, directions, fields, answerers, st.data())
def test_any_change_to_a_sealed_id_fails_verification(key, direction, sealed, answerer, data):
    ident = seal(key, direction, sealed, answerer)
    where = data.draw(st.integers(0, len(ident)), label="where")
    how = data.draw(st.sampled_from(["replace", "insert", "delete"]), label="how")
    char = data.draw(st.characters(), label="char")
    if how == "replace" and where < len(ident):
        changed = ident[:where] + char + ident[where + 1 :]
    elif how == "insert":
        changed = ident[:where] + char + ident[where:]
    else:
        changed = ident[:where] + ident[where + 1 :]
    assume(changed != ident)
    assert open_id(key, direction, changed, answerer) is None


def _hmac_key(key: bytes) -> bytes:
    """The key HMAC really uses (RFC 2104 §2): hashed if longer than the block, padded with
    zeros to it; keys that differ only in trailing zeros are one key (the daemon's are always
    32 bytes from HKDF)."""
    return (hashlib.sha256(key).digest() if len(key) > 64 else key).ljust(64, b"\0")


@given(keys, keys, directions, fields, st.tuples(answerers, answerers))
def test_another_key_direction_or_answerer_fails_verification(
    key, other_key, direction, sealed, who
):
    answerer, other = who
    ident = seal(key, direction, sealed, answerer)
    if _hmac_key(other_key) != _hmac_key(key):
        assert open_id(other_key, direction, ident, answerer) is None
    flipped = CALL if direction == REQUEST else REQUEST
    assert open_id(key, flipped, ident, answerer) is None
    if other != answerer:
        assert open_id(key, direction, ident, other) is None


@given(keys, st.text(), answerers)
def test_what_was_never_sealed_does_not_open(key, ident, answerer):
    """Garbage, from anyone: None, never an exception (the core is total)."""
    opened = open_id(key, REQUEST, ident, answerer)
    if opened is not None:  # only an id that was sealed, by chance (2**-96)
        assert seal(key, REQUEST, opened, answerer) == ident


@given(keys, st.binary(max_size=300))
@example(b"k" * 64, b"")
@example(b"k" * 65, b"m")  # a key longer than SHA-256's block is hashed first
def test_the_mac_is_hmac_sha256(key, message):
    assert mac(key, message) == hmac.digest(key, message, "sha256")


@given(st.one_of(st.floats(allow_nan=True), st.integers(-(2**70), 2**70).map(float)))
@example(2.0**63 / 1000.0)  # exactly 2**63 ms: the first value that must be clamped
def test_any_clock_makes_a_deadline(seconds):
    ms = wall_ms(seconds)
    assert 0 <= ms < 2**63


@given(
    st.one_of(st.floats(allow_nan=True), st.integers(-(2**70), 2**70).map(float)),
    st.one_of(st.floats(allow_nan=True), st.floats(-1e12, 1e12)),
)
@example(10.0, -1e9)  # a wall clock before 1970: the deadline carried is 0, not negative
@example(10.0, 1.7e9)
def test_a_forwards_sealed_deadline_is_its_deadline_on_the_wall_clock(deadline, epoch):
    """_recovery.sealed_deadline, the hot path's own spelling of wall_ms(deadline + epoch)."""
    w = Step(initial_state(ProxyConfig(PROXY, TARGET)), 0.0)
    w.epoch = epoch
    assert sealed_deadline(w, deadline) == wall_ms(deadline + epoch)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["alice@example.org/a", "bob@example.org/b", "a@b/c.d"]),
            st.sampled_from(["1", "2", "1.2"]),
            st.sampled_from(["get", "set"]),
        ),
        max_size=30,
    ),
    st.integers(0, 2**64 - 1),
)
def test_no_two_forwards_share_an_id(requests, seed):
    """Requests (the same requester and id again once answered, or after a time-out) and the
    retries of gets when their resource goes: every forward goes out with a new id."""
    config = ProxyConfig(PROXY, TARGET, rate_limit=0, request_timeout=1.0, seal_key=b"k" * 32)
    state = step(initial_state(config, seed), ConnectionUp(0.0)).state
    for name in ("a", "b", "c"):
        presence = Stanza("presence", None, None, f"{TARGET}/{name}", PROXY)
        state = step(state, StanzaReceived(0.0, presence)).state
    ids = []
    now = 0.0
    for requester, ident, kind in requests:
        now += 0.6  # every other request finds the one before it timed out
        t = step(state, StanzaReceived(now, Stanza("iq", kind, ident, requester, PROXY, "<q/>")))
        state = t.state
        ids += [o.stanza.id for o in t.outputs if isinstance(o, SendStanza) and o.until]
        # Its resource goes: a get is retried elsewhere, with an id of its own.
        for key, o in state.requests.items():
            if key == (requester, ident) and o.resource is not None:
                gone = Stanza("presence", "unavailable", None, f"{TARGET}/{o.resource}", PROXY)
                t = step(state, StanzaReceived(now, gone))
                state = t.state
                ids += [o.stanza.id for o in t.outputs if isinstance(o, SendStanza) and o.until]
                back = Stanza("presence", None, None, f"{TARGET}/{o.resource}", PROXY)
                state = step(state, StanzaReceived(now, back)).state
                break
    assert len(ids) == len(set(ids))
    for ident in ids:
        assert open_id(b"k" * 32, REQUEST, ident or "", _requester_of(ident, requests)) is not None


def _requester_of(ident: str | None, requests: list[tuple[str, str, str]]) -> str:
    for requester, _, _ in requests:
        if open_id(b"k" * 32, REQUEST, ident or "", requester) is not None:
            return requester
    raise AssertionError(f"{ident!r} was sealed for none of the requesters")


def _instance_answer(config: ProxyConfig, left: float, now: float, flaw: str | None) -> Stanza:
    sealed = Sealed("ffffffff", 3, wall_ms(now + left), "a", "", "orig")
    key = config.seal_key + (b"!" if flaw == "key" else b"")
    ident = seal(key, REQUEST, sealed, "alice@example.org/x")
    if flaw == "tampered":
        ident = ident.replace("4.orig", "4.orih")
        assert ident.startswith("4.orih")
    sender = f"{TARGET}/{'b' if flaw == 'resource' else 'a'}"
    return Stanza("iq", "result", ident, sender, f"{PROXY}/alice@example.org/x", "<r/>")


@given(
    left=st.sampled_from([-5.0, -0.001, 0.0, 0.002, 1.0, 30.0]),
    flaw=st.sampled_from([None, "key", "tampered", "resource", "settled"]),
    copies=st.integers(1, 3),
    wall=st.sampled_from([None, 1.8e9]),
)
def test_another_instances_answer_is_delivered_once_exactly_when_it_verifies_in_time(
    left, flaw, copies, wall
):
    """... and not at all when that instance stopped cleanly (``settled``): it answered
    everything it forwarded before it ended."""
    config = ProxyConfig(PROXY, TARGET, seal_key=b"shared")
    settled = {"ffffffff"} if flaw == "settled" else {"0badcafe"}
    state = initial_state(config, 1, settled=settled)
    state = step(state, ConnectionUp(10.0, wall=wall)).state
    epoch = 0.0 if wall is None else wall - 10.0
    answer = _instance_answer(config, left, 10.0 + epoch, flaw)
    delivered = []
    counts = []
    for _ in range(copies):
        t = step(state, StanzaReceived(10.0, answer))
        state = t.state
        delivered += [o.stanza for o in t.outputs if isinstance(o, SendStanza)]
        counts += [o.name for o in t.outputs if hasattr(o, "name")]
    expected = {
        "key": "dropped.reply_forged",
        "tampered": "dropped.reply_forged",
        "resource": "dropped.reply_wrong_resource",
        "settled": "dropped.reply_after_stop",
    }
    if flaw is not None:
        assert delivered == [] and counts == [expected[flaw]] * copies
    elif left * 1000 <= 1:  # the deadline, in whole milliseconds, is not ahead
        assert delivered == [] and counts == ["dropped.reply_expired"] * copies
    else:
        (back,) = delivered
        assert (back.id, back.to, back.from_, back.payload) == (
            "orig",
            "alice@example.org/x",
            PROXY,
            "<r/>",
        )
        assert counts == ["answered.recovered"] + ["dropped.reply_duplicate"] * (copies - 1)


@given(wall=st.sampled_from([None, 1.8e9, 1.0e3]))
def test_the_memory_of_delivered_ids_is_bounded_and_forgets_what_expired(
    wall: float | None,
) -> None:
    """At most ``max_outstanding`` ids of other instances' answers are remembered. At the cap,
    those past their deadline are forgotten first; if it is still full (a reload lowered the
    cap), the new answer is not delivered (twice would be worse) and the memory keeps only what
    has not expired. Deadlines are wall-clock time and the memory's own in ``now``'s terms:
    with ``wall`` far from ``now``, each is converted the right way."""
    config = ProxyConfig(PROXY, TARGET, seal_key=b"shared", max_outstanding=3)
    state = step(initial_state(config, 1), ConnectionUp(0.0, wall=wall)).state
    epoch = 0.0 if wall is None else wall

    def answer(number: int, deadline_s: float) -> Stanza:
        deadline = wall_ms(deadline_s + epoch)
        sealed = Sealed("ffffffff", number, deadline, "a", "", f"o{number}")
        ident = seal(b"shared", REQUEST, sealed, "alice@example.org/x")
        return Stanza("iq", "result", ident, f"{TARGET}/a", f"{PROXY}/alice@example.org/x")

    first, second, third = answer(1, 5.0), answer(2, 50.0), answer(3, 50.0)
    for reply in (first, second, third):
        state = step(state, StanzaReceived(1.0, reply)).state
    assert set(state.seen) == {first.id, second.id, third.id}
    state = step(state, ConfigChanged(2.0, dataclasses.replace(config, max_outstanding=1))).state
    t = step(state, StanzaReceived(6.0, answer(4, 50.0)))  # the first has expired by now
    assert [o.name for o in t.outputs if hasattr(o, "name")] == ["dropped.recovered_memory"]
    assert not [o for o in t.outputs if isinstance(o, SendStanza)]
    assert set(t.state.seen) == {second.id, third.id}
    # Back under the cap once they expire: delivered again.
    t = step(t.state, StanzaReceived(60.0, answer(5, 70.0)))
    assert [o.name for o in t.outputs if hasattr(o, "name")] == ["answered.recovered"]
    assert set(t.state.seen) == {answer(5, 70.0).id}


@given(settled=st.booleans(), wall=st.sampled_from([None, 1.8e9]))
def test_a_users_answer_to_another_instances_call_goes_back_once_unless_it_stopped(
    settled: bool, wall: float | None
) -> None:
    """The other direction: a user answers an IQ a target resource started through another
    instance. It goes back to that resource, from the translated address, with the resource's
    own id, once; not at all if that instance stopped cleanly (it answered the call then)."""
    config = ProxyConfig(PROXY, TARGET, seal_key=b"shared")
    state = initial_state(config, 1, settled={"ffffffff"} if settled else ())
    state = step(state, ConnectionUp(1.0, wall=wall)).state
    epoch = 0.0 if wall is None else wall - 1.0
    user = "alice@example.org/x"
    sealed = Sealed("ffffffff", 9, wall_ms(31.0 + epoch), "a", "", "c1")
    ident = seal(b"shared", CALL, sealed, user)
    answer = Stanza("iq", "result", ident, user, PROXY, "<r/>")
    counts = []
    back = []
    for _ in range(2):
        t = step(state, StanzaReceived(2.0, answer))
        state = t.state
        counts += [o.name for o in t.outputs if hasattr(o, "name")]
        back += [o.stanza for o in t.outputs if isinstance(o, SendStanza)]
    if settled:
        assert back == [] and counts == ["dropped.call_after_stop"] * 2
    else:
        ((to, from_, id_),) = [(b.to, b.from_, b.id) for b in back]
        assert (to, from_, id_) == (f"{TARGET}/a", f"{PROXY}/{user}", "c1")
        assert counts == ["answered.recovered", "dropped.reply_duplicate"]
