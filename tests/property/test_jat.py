"""Jabber Address Translation: the round trip is exact, the translated address survives the
server's normalisation, distinct requesters stay distinct, and addresses too long to carry are
refused, never truncated (DESIGN.md, "Invariants": JAT round trip).

slixmpp's JID parser and stringprep profiles are the oracle: an implementation of the profiles
independent of the core's own check.
"""

from __future__ import annotations

import stringprep

from client_proxy.core import (
    ConnectionUp,
    ProxyConfig,
    SendStanza,
    Stanza,
    StanzaReceived,
    decode_requester,
    encode_requester,
    initial_state,
    step,
    translation_problem,
)
from client_proxy.core._seal import original_of
from client_proxy.testing import strategies as cps
from client_proxy.testing.strategies import jid_unchanged, server_resourceprep, utf8_size
from hypothesis import example, given
from hypothesis import strategies as st
from slixmpp.jid import JID

PROXY = cps.EXAMPLE_PROXY
#: RFC 7622 §3.2-3.4: each part of a JID, a resourcepart too, is at most 1023 octets of UTF-8.
#: Written here from the RFC, not read from the core, which the tests check against it.
RFC_7622_OCTETS = 1023
TARGET = cps.EXAMPLE_TARGET
CONFIG = ProxyConfig(PROXY, TARGET)

ids = st.one_of(st.sampled_from(["1", "abc", "", "a b", "ünï"]), st.text(max_size=30))
# The addresses a requester may write to: the domain, a full JID at it, a bare JID at it.
proxy_addresses = st.sampled_from([PROXY, f"{PROXY}/x", f"svc@{PROXY}", f"svc@{PROXY}/a/b"])
# Requesters the proxy agrees to carry (which ones it refuses is the completeness test's job).
carried_requesters = cps.requester_jids().filter(lambda r: translation_problem(r) is None)


def resource_of(jid: str) -> str | None:
    """RFC 7622 §3.1: everything after the first `/` (the test's own, not the core's)."""
    _bare, slash, resource = jid.partition("/")
    return resource if slash else None


def ready(resource: str = "a"):
    """Connected, with one target resource online."""
    state = initial_state(CONFIG, seed=7)
    for event in (
        ConnectionUp(0.0),
        StanzaReceived(0.0, Stanza("presence", "subscribed", None, TARGET, PROXY)),
        StanzaReceived(0.0, Stanza("presence", None, None, f"{TARGET}/{resource}", PROXY)),
    ):
        state = step(state, event).state
    return state


READY = ready()


def sent(outputs) -> list[Stanza]:
    return [o.stanza for o in outputs if isinstance(o, SendStanza)]


def oracle_accepts_as_resource(requester: str) -> bool:
    """Would a server carry ``requester`` as a resourcepart, unchanged? Both of slixmpp's
    implementations must say so: the stringprep profile, and the strict JID parser."""
    return server_resourceprep(requester) == requester and jid_unchanged(
        encode_requester(PROXY, requester)
    )


@given(carried_requesters, ids, proxy_addresses, st.sampled_from(["get", "set"]))
@example("user@example.org/abc", "1234", PROXY, "get")
@example("bob@example.net/a/b@c", "1", f"{PROXY}/x", "set")
@example("exämple.org/リソース @/x", "é", f"svc@{PROXY}", "get")
def test_request_then_reply_restores_to_from_and_id(requester, id_, to, kind):
    """A request and its reply, through the proxy, with the server's normalisation of the
    translated address in between: the requester gets its own id, from the very address it
    wrote to."""
    payload = object()
    request = Stanza("iq", kind, id_, requester, to, payload, None, None, (("xml:lang", "en"),))
    t = step(READY, StanzaReceived(1.0, request))
    (forward,) = sent(t.outputs)
    assert forward.to == f"{TARGET}/a"
    assert forward.from_ == encode_requester(PROXY, requester)
    assert (forward.type, forward.payload) == (kind, payload)
    assert forward.extra == request.extra
    # The id is the proxy's own, carrying the requester's (sealed: core._seal).
    assert original_of(forward.id) == id_

    # The server normalises the address the implementing client answers to (RFC 6120
    # §8.1.2.1): what comes back is what slixmpp's parser makes of it.
    reply_to = str(JID(forward.from_).full)
    reply = Stanza("iq", "result", forward.id, forward.to, reply_to, "<answer/>")
    t = step(t.state, StanzaReceived(2.0, reply))
    (back,) = sent(t.outputs)
    assert (back.to, back.from_, back.id) == (requester, to, id_)
    assert (back.type, back.payload) == ("result", "<answer/>")
    assert not t.state.requests


@given(carried_requesters)
@example("user@example.org/a/b@c")
@example("example.org")
@example("ünïcødé@exämple.org/リソース")
def test_translated_resource_is_left_alone_by_resourceprep(requester):
    """Soundness: what the proxy agrees to carry is a resourcepart that Resourceprep (and the
    strict JID parser) leaves exactly as it is, and that decodes back to the requester."""
    assert translation_problem(requester) is None
    translated = encode_requester(PROXY, requester)
    assert resource_of(translated) == requester
    assert server_resourceprep(requester) == requester
    assert jid_unchanged(translated)
    assert str(JID(translated).resource) == requester
    assert decode_requester(PROXY, translated) == requester


@given(st.one_of(cps.requester_jids(), cps.near_limit_requester_jids()))
@example("שלום@example.org/x")  # bidi: RandALCat and L in one resourcepart (RFC 3454 §6)
@example("ישראל@ישראל.example/x")
@example("a@example.org/" + "x" * (RFC_7622_OCTETS - 14))  # exactly 1023 octets
@example("a@example.org/" + "x" * (RFC_7622_OCTETS - 13))  # one more
def test_refuses_exactly_what_the_server_would_not_carry(requester):
    """Completeness and soundness: a server-stamped requester is refused exactly when the
    oracle would not carry it unchanged as one resourcepart: too long for one (slixmpp's
    strict parser enforces RFC 7622's 1023 octets), or changed by Resourceprep (for example a
    right-to-left localpart beside a left-to-right domain: each part passes the bidi rule
    alone, the whole does not)."""
    assert (translation_problem(requester) is None) == oracle_accepts_as_resource(requester)


@given(cps.requester_jids(), cps.requester_jids())
@example("a@example.org/b", "a@example.org/b/")
@example("a@example.org/b@c", "a@example.org/b")
def test_distinct_requesters_never_collide(first, second):
    """Distinct requesters get distinct translated addresses, and each decodes to its own."""
    one, two = encode_requester(PROXY, first), encode_requester(PROXY, second)
    assert (one == two) == (first == second)
    assert decode_requester(PROXY, one) == first
    assert decode_requester(PROXY, two) == second


@given(st.lists(carried_requesters, min_size=2, max_size=6, unique=True), ids)
def test_same_id_from_distinct_requesters_gets_distinct_answers(requesters, id_):
    """Many requesters using one id at once: each is forwarded under its own address and each
    reply reaches only its own requester."""
    state = READY
    forwards = []
    for r in requesters:
        t = step(state, StanzaReceived(1.0, Stanza("iq", "get", id_, r, PROXY)))
        state = t.state
        forwards.extend(sent(t.outputs))
    assert len({f.from_ for f in forwards}) == len(requesters)
    answered = []
    for f in reversed(forwards):
        t = step(state, StanzaReceived(2.0, Stanza("iq", "result", f.id, f.to, f.from_, f.from_)))
        state = t.state
        (back,) = sent(t.outputs)
        assert encode_requester(PROXY, back.to) == back.payload == f.from_
        answered.append(back.to)
    assert sorted(answered) == sorted(requesters)
    assert len({f.id for f in forwards}) == len(requesters)


@given(cps.overlong_requester_jids(), ids, proxy_addresses)
@example("a@example.org/" + "x" * (RFC_7622_OCTETS - 13), "1", PROXY)  # 1024 octets
@example("a@example.org/" + "€" * 337, "1", PROXY)  # 1025 octets, 350 characters
def test_overlong_requester_is_refused_never_truncated(requester, id_, to):
    """A valid JID longer than a resourcepart may be gets one not-acceptable (modify) error, from
    the address it wrote to, with its id; nothing reaches the target and nothing stays."""
    assert utf8_size(requester) > RFC_7622_OCTETS
    assert translation_problem(requester) is not None
    t = step(READY, StanzaReceived(1.0, Stanza("iq", "get", id_, requester, to, "<q/>")))
    (refusal,) = sent(t.outputs)
    assert (refusal.to, refusal.from_, refusal.id, refusal.type) == (requester, to, id_, "error")
    assert refusal.error is not None
    assert (refusal.error.type, refusal.error.condition) == ("modify", "not-acceptable")
    assert not t.state.requests


@given(cps.near_limit_requester_jids())
@example("a@example.org/" + "x" * (RFC_7622_OCTETS - 14))  # exactly 1023 octets
@example("a@example.org/" + "𠀀" * 252 + "x")  # 1023 octets of mostly 4-octet characters
def test_near_the_limit_the_length_alone_decides(requester):
    """Around 1023 octets, counted in UTF-8 and not in characters: accepted up to the limit and
    forwarded whole, refused past it."""
    t = step(READY, StanzaReceived(1.0, Stanza("iq", "get", "1", requester, PROXY)))
    (out,) = sent(t.outputs)
    if utf8_size(requester) <= RFC_7622_OCTETS:
        assert out.to == f"{TARGET}/a"
        assert resource_of(out.from_) == requester
        assert utf8_size(resource_of(out.from_)) <= RFC_7622_OCTETS
    else:
        assert out.to == requester
        assert out.error is not None
        assert out.error.condition == "not-acceptable"


def _has_domain(text: str) -> bool:
    """RFC 7622 §3.1: the bare JID (before the first `/`) after its first `@`, if any, is the
    domainpart, which may not be empty."""
    bare = text.split("/", 1)[0]
    return bool(bare.partition("@")[2] if "@" in bare else bare)


# Anything at all, with the characters that matter to the rules drawn often: the separators, a
# space, left-to-right and right-to-left letters, a digit, and characters Resourceprep maps to
# nothing (RFC 3454 table B.1: a soft hyphen, zero-width joiners and spaces, a variation
# selector), which NFKC leaves alone.
any_text = st.text(
    st.one_of(
        st.characters(exclude_categories=()),
        st.sampled_from("@/ .a1"),
        st.characters(min_codepoint=0x05D0, max_codepoint=0x05EA),
        st.sampled_from("\u00ad\u034f\u180b\u200b\u200d\ufeff"),
    ),
    max_size=16,
)


@given(any_text)
@example("")
@example("u@")  # no domain
@example("u@/r")
@example("/r")
@example("@example.org")  # an empty localpart still leaves a domain
@example("\u05d0@\u05d0/1")  # right to left, ending in a digit (RFC 3454 §6, rule 3)
@example("1@\u05d0/\u05d0")  # right to left, beginning with a digit
@example("\u05d0@\u05d0/\u05d0")
@example("a\u0301@example.org")  # NFKC would compose it
@example("u@example.org/a\u00adb")  # Resourceprep drops the soft hyphen (table B.1)
@example("u@example.org/\u0221")  # unassigned in Unicode 3.2 (RFC 3454 table A.1)
def test_any_text_is_carried_exactly_when_the_resourcepart_profile_leaves_it_alone(text):
    """Whatever a transport hands over as a sender, not only what servers stamp: the proxy
    carries it if and only if it is not empty, has a domain, fits in a resourcepart (1023
    octets) and Resourceprep leaves it exactly as it is (the oracle, slixmpp's profile, is
    lenient about code points unassigned in Unicode 3.2; a strict server refuses them, and so
    does the proxy)."""
    unassigned = any(stringprep.in_table_a1(ch) for ch in text)
    carriable = (
        bool(text)
        and _has_domain(text)
        and utf8_size(text) <= RFC_7622_OCTETS
        and server_resourceprep(text) == text
        and not unassigned
    )
    assert (translation_problem(text) is None) == carriable, translation_problem(text)
