"""Hypothesis strategies for client-proxy's core, shipped as a conformance kit.

A transport (the slixmpp shell, a simulator, an adapter for another XMPP library) feeds the core
with :class:`~client_proxy.core.Stanza` values built from what its server sent. These strategies
draw such values, so that the properties proved for the core (``tests/property``) can be run
again, with the same generators, against a transport's own conversion layer::

    from hypothesis import given
    from client_proxy.testing import strategies as cps

    @given(cps.requester_jids())
    def test_my_transport_keeps_the_requester(requester):
        stanza = my_transport.to_core(my_transport.parse(iq_from(requester)))
        assert stanza.from_ == requester

Three families:

*Addresses as a server stamps them* (:func:`localparts`, :func:`domainparts`,
:func:`resourceparts`, :func:`requester_jids`, :func:`near_limit_requester_jids`,
:func:`overlong_requester_jids`). The server applies the JID profiles to every address it routes
(RFC 6120 §8.1.2.1), so the core only ever sees normalised addresses in ``from``. Each part is
drawn as text and normalised with slixmpp's stringprep profiles (Nodeprep, IDNA/Nameprep,
Resourceprep; RFC 6122 / RFC 3920 Appendix A-B); text a profile rejects is filtered out, and the
composed address must come out of slixmpp's own ``JID`` parser unchanged. slixmpp is the
*oracle* here: it is an independent implementation of the profiles, used by the tests only,
never by the core (which must not import it).

*Anything the network can send* (:func:`garbage_text`, :func:`addresses`, :func:`any_stanzas`,
:func:`times`, :func:`any_events`): attributes present or missing, garbage and huge strings,
lone surrogates, NaN and infinite clocks. ``step`` must be total over all of it.

*Plausible traffic* (:func:`proxy_configs`, :func:`plausible_events`, :func:`event_programs`,
:func:`reachable_states`): events built from small shared pools of requesters, ids and target
resources, so that requests, replies and presence collide on the same keys and the machine
reaches its deep states (limits hit, parked requests, retries, drains) within a few dozen steps.

Everything is importable without a running server and has no effect on import beyond slixmpp's
own (its pure-Python stringprep module logs one warning when first imported).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Sequence

from client_proxy.core import (
    ERROR_CONDITIONS,
    ERROR_TYPES,
    IQ_TYPES,
    MAX_PART_BYTES,
    PRESENCE_TYPES,
    ConfigChanged,
    ConnectionLost,
    ConnectionUp,
    EndOfStreamSent,
    Event,
    Output,
    ProxyConfig,
    ProxyState,
    Stanza,
    StanzaError,
    StanzaReceived,
    StopRequested,
    TimePassed,
    encode_requester,
    initial_state,
    step,
)
from hypothesis import strategies as st
from slixmpp.jid import JID, InvalidJID
from slixmpp.stringprep import StringprepError, idna, nodeprep, resourceprep

__all__ = [
    "EXAMPLE_PROXY",
    "EXAMPLE_TARGET",
    "addresses",
    "any_events",
    "any_stanzas",
    "domainparts",
    "event_programs",
    "garbage_text",
    "ill_typed_priorities",
    "jid_unchanged",
    "localparts",
    "near_limit_requester_jids",
    "overlong_requester_jids",
    "plausible_events",
    "priority_texts",
    "proxy_configs",
    "reachable_states",
    "requester_jids",
    "resourceparts",
    "rtl_requester_jids",
    "run_events",
    "server_resourceprep",
    "stanza_errors",
    "times",
    "utf8_size",
]

#: The component domain used by the examples and the default strategies.
EXAMPLE_PROXY = "proxy.example.org"
#: The implementing client's bare JID used by the examples and the default strategies.
EXAMPLE_TARGET = "svc@example.org"


# -- the oracle ---------------------------------------------------------------------------------


def utf8_size(text: str) -> int:
    """Octets of ``text`` in UTF-8, the unit of RFC 7622's 1023-octet limits."""
    return len(text.encode("utf-8", "surrogatepass"))


def _prepared(profile: Callable[[str], str]) -> Callable[[str], str | None]:
    """``profile`` as a total function: the prepared text, or None where the profile refuses."""

    def apply(text: str) -> str | None:
        try:
            return profile(text)
        except (StringprepError, UnicodeError, ValueError):
            return None

    return apply


_nodeprep = _prepared(nodeprep)
_nameprep = _prepared(idna)
server_resourceprep = _prepared(resourceprep)
server_resourceprep.__doc__ = """Resourceprep (RFC 3920 Appendix B) as slixmpp implements it,
without the unassigned-code-point check of RFC 3454 §7 (like a server's non-strict mode): the
prepared text, or None if the profile refuses ``text``."""


def jid_unchanged(jid: str) -> bool:
    """True if slixmpp's ``JID`` parser (strict: it also refuses code points unassigned in
    Unicode 3.2) accepts ``jid`` and gives it back exactly: a normalised, valid address."""
    try:
        return str(JID(jid).full) == jid
    except (InvalidJID, ValueError):
        return False


def _fits(max_bytes: int) -> Callable[[str | None], bool]:
    def fits(text: str | None) -> bool:
        return bool(text) and utf8_size(text or "") <= max_bytes

    return fits


# -- addresses as a server stamps them ----------------------------------------------------------

_ASCII_LOWER = "abcdefghijklmnopqrstuvwxyz"
_DIGITS = "0123456789"

# Mostly ASCII (what most deployments see), then any letter or digit of any script: uppercase
# and compatibility forms are folded by the profiles, right-to-left scripts exercise the bidi
# rule (RFC 3454 §6).
_LOCAL_CHARS = st.one_of(
    st.sampled_from(_ASCII_LOWER + _DIGITS + "._-+!=~"),
    st.characters(categories=("Ll", "Lu", "Lo", "Lm", "Nd", "Mn", "Sm"), codec="utf-8"),
)
_LABEL_CHARS = st.one_of(
    st.sampled_from(_ASCII_LOWER + _DIGITS + "-"),
    st.characters(categories=("Ll", "Lo"), codec="utf-8"),
)
# A resourcepart may carry `@`, `/`, spaces and punctuation (RFC 7622 §3.4); the separators are
# listed on their own so that they show up often.
_RESOURCE_CHARS = st.one_of(
    st.sampled_from("@/ "),
    st.sampled_from(_ASCII_LOWER + _DIGITS + "._-+!=~:'\"&<>()[]{}#%^*?,;|\\`"),
    st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Co", "Cn")),
)

#: Characters that every profile leaves alone, of 1, 2, 3 and 4 UTF-8 octets, all left-to-right
#: or neutral: used to fill a part up to an exact size.
_FILL_CHARS = ("a", "z", "0", "-", ".", "é", "ж", "€", "中", "𠀀")
#: The same for a resourcepart, which also carries the JID separators and spaces.
_RESOURCE_FILL_CHARS = (*_FILL_CHARS, "@", "/", " ")


def localparts(max_bytes: int = MAX_PART_BYTES) -> st.SearchStrategy[str]:
    """Localparts as a server stamps them: drawn text after Nodeprep (RFC 6122 Appendix A),
    non-empty and at most ``max_bytes`` octets."""
    return (
        st.text(_LOCAL_CHARS, min_size=1, max_size=24)
        .map(_nodeprep)
        .filter(_fits(max_bytes))
        .map(str)
    )


def _labels() -> st.SearchStrategy[str]:
    return st.text(_LABEL_CHARS, min_size=1, max_size=20)


def domainparts() -> st.SearchStrategy[str]:
    """Domainparts as a server stamps them: dotted labels after IDNA (Nameprep, then back to
    Unicode), as slixmpp normalises them; internationalised labels included."""
    drawn = (
        st.lists(_labels(), min_size=1, max_size=4)
        .map(".".join)
        .map(_nameprep)
        .filter(_fits(253))  # DNS: RFC 1035 §2.3.4, which slixmpp's parser enforces
        .map(str)
    )
    common = st.sampled_from(["example.org", "example.net", "jabber.example", "exämple.org"])
    return st.one_of(common, drawn)


def resourceparts(max_bytes: int = MAX_PART_BYTES) -> st.SearchStrategy[str]:
    """Resourceparts as a server stamps them: drawn text after Resourceprep (RFC 6122
    Appendix B), which may contain `@`, `/` and spaces."""
    return (
        st.text(_RESOURCE_CHARS, min_size=1, max_size=24)
        .map(server_resourceprep)
        .filter(_fits(max_bytes))
        .map(str)
    )


def _compose(local: str | None, domain: str, resource: str | None) -> str:
    jid = domain if local is None else f"{local}@{domain}"
    return jid if resource is None else f"{jid}/{resource}"


def requester_jids() -> st.SearchStrategy[str]:
    """Addresses a server may stamp as a request's ``from``: full JIDs mostly, bare JIDs and bare
    domains (servers, components) too, now and then written right to left
    (:func:`rtl_requester_jids`). Every part is normalised, and the whole passes slixmpp's
    ``JID`` unchanged. Most are far below the 1023-octet limit; see
    :func:`near_limit_requester_jids` for those close to it."""
    full = st.builds(_compose, localparts(), domainparts(), resourceparts())
    bare_jid = st.builds(_compose, localparts(), domainparts(), st.none())
    domain_only = st.builds(
        _compose, st.none(), domainparts(), st.one_of(st.none(), resourceparts())
    )
    return st.one_of(full, full, bare_jid, domain_only, rtl_requester_jids()).filter(jid_unchanged)


#: Right-to-left letters (RFC 3454 table D.1, RandALCat): Hebrew and Arabic.
_RTL_LETTERS = st.one_of(
    st.characters(min_codepoint=0x05D0, max_codepoint=0x05EA),
    st.characters(min_codepoint=0x0627, max_codepoint=0x064A),
)
_RTL_WORDS = st.text(_RTL_LETTERS, min_size=1, max_size=8)
#: Neither left-to-right nor right-to-left (RFC 3454 tables D.1, D.2): digits, separators.
_NEUTRAL_WORDS = st.text(st.sampled_from("0123456789-_"), min_size=1, max_size=4)
_LTR_WORDS = st.sampled_from(["example", "org", "abc", "x"])


def rtl_requester_jids() -> st.SearchStrategy[str]:
    """Valid addresses written right to left, wholly or in part, for RFC 3454 §6's bidi rule,
    which Resourceprep applies to the whole requester once it is carried in one resourcepart:
    a string with a right-to-left character may hold no left-to-right one, and must begin and
    end with a right-to-left one. Each part alone passes its own profile (the rule is checked
    part by part when the server stamps the address); the whole may not: a Hebrew localpart at
    a Latin domain, or a right-to-left address whose resource is only digits."""
    part = st.one_of(_RTL_WORDS, _RTL_WORDS, _NEUTRAL_WORDS, _LTR_WORDS)
    spaced = st.builds(lambda a, b: f"{a} {b}", _RTL_WORDS, _RTL_WORDS)
    local = st.one_of(st.none(), part.map(_nodeprep).filter(bool).map(str))
    domain = (
        st.lists(st.one_of(_RTL_WORDS, _RTL_WORDS, _LTR_WORDS), min_size=1, max_size=3)
        .map(".".join)
        .map(_nameprep)
        .filter(bool)
        .map(str)
    )
    resource = st.one_of(
        st.none(), st.one_of(part, spaced).map(server_resourceprep).filter(bool).map(str)
    )
    return st.builds(_compose, local, domain, resource).filter(jid_unchanged)


def _filled(draw: st.DrawFn, chars: Sequence[str], size: int) -> str:
    """A string of exactly ``size`` UTF-8 octets, cycling through a drawn choice of ``chars`` and
    topped up with ASCII."""
    pattern = draw(st.lists(st.sampled_from(chars), min_size=1, max_size=8))
    out: list[str] = []
    used = 0
    i = 0
    while True:
        c = pattern[i % len(pattern)]
        n = utf8_size(c)
        if used + n > size:
            break
        out.append(c)
        used += n
        i += 1
    out.append("x" * (size - used))
    return "".join(out)


@st.composite
def _sized_requester(draw: st.DrawFn, min_bytes: int, max_bytes: int) -> str:
    local = draw(st.one_of(st.none(), localparts(max_bytes=64)))
    domain = draw(domainparts())
    size = draw(st.integers(min_bytes, max_bytes))
    prefix = _compose(local, domain, "")
    room = size - utf8_size(prefix)
    if room < 1:
        # The prefix alone is too long for this size: Hypothesis draws another.
        return ""
    return prefix + _filled(draw, _RESOURCE_FILL_CHARS, room)


def near_limit_requester_jids(
    min_bytes: int = MAX_PART_BYTES - 8, max_bytes: int = MAX_PART_BYTES + 8
) -> st.SearchStrategy[str]:
    """Full JIDs of exactly ``min_bytes``..``max_bytes`` octets (by default around the 1023-octet
    limit of the resourcepart that carries them, RFC 7622 §3.4), every part valid and
    normalised, and the whole a resourcepart that Resourceprep leaves alone (so that its length
    alone decides whether the proxy can carry it)."""
    return (
        _sized_requester(min_bytes, max_bytes)
        .filter(jid_unchanged)
        .filter(lambda jid: server_resourceprep(jid) == jid)
    )


@st.composite
def _long_part_requester(draw: st.DrawFn) -> str:
    """A valid JID whose localpart or resourcepart alone is close to its own 1023-octet limit."""
    where = draw(st.sampled_from(["local", "resource"]))
    size = draw(st.integers(MAX_PART_BYTES - 16, MAX_PART_BYTES))
    domain = draw(domainparts())
    if where == "local":
        local = _filled(draw, _FILL_CHARS, size)
        return _compose(local, domain, draw(st.one_of(st.none(), resourceparts(max_bytes=64))))
    resource = _filled(draw, _RESOURCE_FILL_CHARS, size)
    return _compose(draw(st.one_of(st.none(), localparts(max_bytes=64))), domain, resource)


def overlong_requester_jids() -> st.SearchStrategy[str]:
    """Valid JIDs (each part within its own 1023 octets) that are longer than 1023 octets as a
    whole, so that no resourcepart can carry them: the proxy must refuse, never truncate."""
    return (
        st.one_of(
            near_limit_requester_jids(MAX_PART_BYTES + 1, MAX_PART_BYTES + 24),
            _long_part_requester(),
        )
        .filter(lambda jid: utf8_size(jid) > MAX_PART_BYTES)
        .filter(jid_unchanged)
    )


# -- anything the network can send --------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def garbage_text(max_size: int = 40) -> st.SearchStrategy[str]:
    """Any text at all: controls, unassigned and private-use code points, lone surrogates (which
    no XML parser gives, but a transport might), and now and then a huge string."""
    anything = st.text(st.characters(exclude_categories=()), max_size=max_size)
    huge = st.builds(
        lambda chunk, n: chunk * n,
        st.text(st.characters(exclude_categories=()), min_size=1, max_size=4),
        st.integers(250, 20_000),
    )
    return st.one_of(anything, anything, anything, huge)


@functools.lru_cache(maxsize=64)
def addresses(proxy: str = EXAMPLE_PROXY, target: str = EXAMPLE_TARGET) -> st.SearchStrategy[str]:
    """Addresses for ``to`` and ``from``: the ones that reach the core's branches (the proxy
    domain, its full JIDs, translated addresses, the target and its resources, strangers) and
    garbage, including near-misses of the proxy and target addresses."""
    relevant = st.sampled_from(
        [
            proxy,
            f"{proxy}/x",
            f"svc@{proxy}",
            f"svc@{proxy}/x",
            encode_requester(proxy, "user@example.org/abc"),
            encode_requester(proxy, "user@example.org/a/b@c"),
            f"{proxy}/",
            f"@{proxy}",
            f"{proxy}.",
            f"x.{proxy}",
            target,
            f"{target}/a",
            f"{target}/b",
            f"{target}/",
            f"{target.upper()}/a",
            "user@example.org/abc",
            "user@example.org",
            "example.org",
            "/",
            "@",
            "",
        ]
    )
    translated = st.builds(encode_requester, st.just(proxy), garbage_text())
    return st.one_of(relevant, relevant, translated, garbage_text())


@functools.lru_cache(maxsize=64)
def stanza_errors() -> st.SearchStrategy[StanzaError]:
    """Error summaries as a transport may build them from an `<error/>` that arrived: valid RFC
    6120 §8.3 ones, and anything at all (the network is not checked)."""
    valid = st.builds(
        StanzaError,
        st.sampled_from(sorted(ERROR_TYPES)),
        st.sampled_from(sorted(ERROR_CONDITIONS)),
        st.one_of(st.none(), st.text(max_size=20)),
    )
    junk = st.builds(
        StanzaError, garbage_text(), garbage_text(), st.one_of(st.none(), garbage_text())
    )
    return st.one_of(valid, junk)


@functools.lru_cache(maxsize=64)
def priority_texts() -> st.SearchStrategy[str | None]:
    """`<priority/>` texts (RFC 6121 §4.7.2.3 wants an integer from -128 to 127): absent, valid,
    out of range, huge, signed, padded, non-ASCII digits, floats, words, garbage."""
    return st.one_of(
        st.none(),
        st.integers(-200, 200).map(str),
        st.integers().map(str),
        st.sampled_from(
            ["", " ", " 5 ", "+5", "-0", "1e3", "1.5", "nan", "inf", "٣", "1_0", "0x10", "\x00"]
        ),
        st.builds(lambda n: "9" * n, st.integers(4000, 6000)),
        garbage_text(),
    )


def ill_typed_priorities() -> st.SearchStrategy[object]:
    """Priority values of the wrong type (int, float, bytes, ...), as a careless transport might
    pass along what its XML library gives."""
    return st.one_of(
        st.integers(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.binary(max_size=8),
        st.booleans(),
        st.tuples(),
    )


@functools.lru_cache(maxsize=64)
def any_stanzas(
    proxy: str = EXAMPLE_PROXY,
    target: str = EXAMPLE_TARGET,
    priorities: st.SearchStrategy[object] | None = None,
) -> st.SearchStrategy[Stanza]:
    """Any stanza a transport may hand over: any kind (element names the core does not know too),
    any type, every attribute present or missing, payloads and extra attributes of any shape.
    ``priorities`` defaults to :func:`priority_texts`."""
    kinds = st.one_of(st.sampled_from(["iq", "presence", "message"]), garbage_text(10))
    types = st.one_of(
        st.none(), st.sampled_from(sorted(IQ_TYPES | PRESENCE_TYPES)), garbage_text(10)
    )
    ids = st.one_of(st.none(), st.sampled_from(["1", "2", ""]), garbage_text())
    optional_address = st.one_of(st.none(), addresses(proxy, target))
    payloads = st.one_of(st.just(()), st.text(max_size=20), st.tuples(st.text(max_size=5)))
    extras = st.lists(st.tuples(garbage_text(10), garbage_text(10)), max_size=3).map(tuple)
    return st.builds(
        Stanza,
        kinds,
        types,
        ids,
        optional_address,
        optional_address,
        payloads,
        st.one_of(st.none(), stanza_errors()),
        priority_texts() if priorities is None else priorities,
        extras,
    )


@functools.lru_cache(maxsize=64)
def times() -> st.SearchStrategy[float]:
    """Values for ``now`` (and ``drain``): ordinary, negative, huge, NaN and infinite."""
    return st.one_of(
        st.floats(min_value=-10.0, max_value=1e6),
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from([math.nan, math.inf, -math.inf, -1.0, 0.0, 1e300]),
        st.integers(-(10**6), 10**6).map(float),
    )


@functools.lru_cache(maxsize=64)
def any_events(
    proxy: str = EXAMPLE_PROXY,
    target: str = EXAMPLE_TARGET,
    priorities: st.SearchStrategy[object] | None = None,
) -> st.SearchStrategy[Event]:
    """Any event, with any ``now``: the input side of totality."""
    return st.one_of(
        st.builds(StanzaReceived, times(), any_stanzas(proxy, target, priorities)),
        st.builds(StanzaReceived, times(), any_stanzas(proxy, target, priorities)),
        st.builds(TimePassed, times()),
        st.builds(ConnectionUp, times()),
        st.builds(ConnectionLost, times()),
        st.builds(StopRequested, times(), times()),
        st.builds(EndOfStreamSent, times()),
        # A reload, mostly of the same proxy and target, now and then of another target.
        st.builds(ConfigChanged, times(), proxy_configs(proxy, target)),
        st.builds(ConfigChanged, times(), proxy_configs(proxy, "other@example.net")),
    )


# -- plausible traffic --------------------------------------------------------------------------

#: Small pools, so that plausible events collide on the same requests and resources.
_REQUESTERS = (
    "alice@example.org/phone",
    "alice@example.org/laptop",
    "bob@example.net/a/b@c",
    "example.com",
)
_IDS = ("1", "2", "x")
_RESOURCES = ("a", "b", "c/d")


def proxy_configs(
    proxy: str = EXAMPLE_PROXY, target: str = EXAMPLE_TARGET
) -> st.SearchStrategy[ProxyConfig]:
    """Configurations, small limits favoured (so that they are hit), both retry policies, and
    timeouts and grace periods from tiny to long (``sync_grace`` of 0 disables parking)."""
    return st.builds(
        ProxyConfig,
        st.just(proxy),
        st.just(target),
        request_timeout=st.one_of(
            st.sampled_from([0.5, 1.0, 5.0, 30.0]), st.floats(min_value=1e-3, max_value=1e4)
        ),
        retry_get=st.booleans(),
        retry_set=st.booleans(),
        max_outstanding=st.one_of(st.integers(1, 6), st.just(10_000)),
        max_per_requester=st.one_of(st.integers(1, 4), st.just(1_000)),
        sync_grace=st.one_of(
            st.sampled_from([0.0, 1.0, 5.0]), st.floats(min_value=0.0, max_value=100.0)
        ),
    )


def plausible_events(
    config: ProxyConfig,
    requesters: Sequence[str] = _REQUESTERS,
    ids: Sequence[str] = _IDS,
    resources: Sequence[str] = _RESOURCES,
) -> st.SearchStrategy[Callable[[float], Event]]:
    """One event of ordinary traffic, as a function of ``now`` (see :func:`event_programs`):
    requests and replies from the pools (right, wrong and forged senders alike), IQs and
    messages the target starts towards users, the target's presence of every type, connection
    changes, stops with and without drain, and time."""
    return _plausible_events(
        config.proxy_domain, config.target, tuple(requesters), tuple(ids), tuple(resources)
    )


@functools.lru_cache(maxsize=32)
def _plausible_events(
    proxy: str,
    target: str,
    requesters: tuple[str, ...],
    ids: tuple[str, ...],
    resources: tuple[str, ...],
) -> st.SearchStrategy[Callable[[float], Event]]:
    # Built once per set of pools: building and validating a strategy costs more than drawing
    # from it, and programs are drawn by the hundred.
    requester = st.sampled_from(list(requesters))
    rid = st.sampled_from(list(ids))
    resource = st.sampled_from(list(resources))

    def request(kind: str, who: str, id_: str, to: str) -> Callable[[float], Event]:
        stanza = Stanza("iq", kind, id_, who, to, f"<q who='{who}' id='{id_}'/>")
        return lambda now: StanzaReceived(now, stanza)

    def reply(
        kind: str, sender: str, who: str, id_: str, error: StanzaError | None
    ) -> Callable[[float], Event]:
        stanza = Stanza("iq", kind, id_, sender, encode_requester(proxy, who), "<answer/>", error)
        return lambda now: StanzaReceived(now, stanza)

    def presence(res: str | None, kind: str | None, to: str) -> Callable[[float], Event]:
        sender = target if res is None else f"{target}/{res}"
        stanza = Stanza("presence", kind, None, sender, to, (), None, None)
        return lambda now: StanzaReceived(now, stanza)

    def call(res: str, who: str, id_: str) -> Callable[[float], Event]:
        stanza = Stanza("iq", "get", id_, f"{target}/{res}", encode_requester(proxy, who), "<c/>")
        return lambda now: StanzaReceived(now, stanza)

    def message(sender: str, to: str) -> Callable[[float], Event]:
        stanza = Stanza("message", "chat", "m1", sender, to, "<m/>")
        return lambda now: StanzaReceived(now, stanza)

    senders = st.one_of(
        resource.map(lambda r: f"{target}/{r}"),
        st.sampled_from([target, "mallory@evil.example/x"]),
    )
    bounce = st.builds(StanzaError, st.just("cancel"), st.just("service-unavailable"))
    return st.one_of(
        st.builds(
            request,
            st.sampled_from(["get", "set"]),
            requester,
            rid,
            st.sampled_from([proxy, f"{proxy}/x"]),
        ),
        st.builds(
            reply,
            st.sampled_from(["result", "error"]),
            senders,
            requester,
            rid,
            st.one_of(st.none(), bounce, stanza_errors()),
        ),
        st.builds(
            presence,
            st.one_of(st.none(), resource),
            st.sampled_from(
                [None, None, "unavailable", "error", "subscribed", "unsubscribed", "probe"]
            ),
            st.sampled_from([proxy, proxy, f"{proxy}/x"]),
        ),
        st.builds(call, resource, requester, rid),
        st.one_of(
            st.builds(message, requester, st.just(proxy)),
            st.builds(
                message,
                resource.map(lambda r: f"{target}/{r}"),
                requester.map(lambda who: encode_requester(proxy, who)),
            ),
        ),
        st.just(ConnectionUp),
        st.just(ConnectionLost),
        st.just(EndOfStreamSent),
        st.builds(lambda d: lambda now: StopRequested(now, d), st.sampled_from([0.0, 1.0, 60.0])),
        st.just(TimePassed),
    )


def event_programs(
    config: ProxyConfig, min_size: int = 0, max_size: int = 40
) -> st.SearchStrategy[list[Event]]:
    """A list of plausible events with a clock that moves forward by steps from none to far past
    every deadline (so that timeouts, the end of ``sync_grace`` and drains happen), and now and
    then backwards (which the core must tolerate)."""
    steps = {
        "sync_grace": config.sync_grace,
        "request_timeout": config.request_timeout,
        "past_everything": config.request_timeout + config.sync_grace + 1.0,
    }

    def build(program: Iterable[tuple[float | str, Callable[[float], Event]]]) -> list[Event]:
        now = 0.0
        events: list[Event] = [ConnectionUp(now)]
        for dt, make in program:
            now += steps[dt] if isinstance(dt, str) else dt
            events.append(make(now))
        return events

    return _programs(config.proxy_domain, config.target, min_size, max_size).map(build)


@functools.lru_cache(maxsize=32)
def _programs(
    proxy: str, target: str, min_size: int, max_size: int
) -> st.SearchStrategy[list[tuple[float | str, Callable[[float], Event]]]]:
    # The steps are named where they depend on the configuration, so that the strategy does not.
    steps = st.sampled_from(
        [0.0, 0.0, 0.25, 1.0, "sync_grace", "request_timeout", "past_everything", -1.0]
    )
    events = _plausible_events(proxy, target, _REQUESTERS, _IDS, _RESOURCES)
    return st.lists(st.tuples(steps, events), min_size=min_size, max_size=max_size)


@functools.lru_cache(maxsize=1)
def _default_configs() -> st.SearchStrategy[ProxyConfig]:
    return proxy_configs()


def run_events(
    state: ProxyState, events: Iterable[Event]
) -> tuple[ProxyState, list[tuple[tuple[Output, ...], float | None]]]:
    """Apply ``events`` in order; the final state and each step's (outputs, deadline)."""
    trace: list[tuple[tuple[Output, ...], float | None]] = []
    for event in events:
        t = step(state, event)
        state = t.state
        trace.append((t.outputs, t.deadline))
    return state, trace


@st.composite
def reachable_states(
    draw: st.DrawFn,
    configs: st.SearchStrategy[ProxyConfig] | None = None,
    garbage: bool = True,
) -> ProxyState:
    """A state reached from :func:`~client_proxy.core.initial_state` by a program of plausible
    events (see :func:`event_programs`), mixed with arbitrary ones when ``garbage`` is true."""
    config = draw(_default_configs() if configs is None else configs)
    seed = draw(st.integers(0, 2**64 - 1))
    events = draw(event_programs(config))
    if garbage:
        extra = draw(st.lists(any_events(config.proxy_domain, config.target), max_size=5))
        for event in extra:
            events.insert(draw(st.integers(0, len(events))), event)
    state, _ = run_events(initial_state(config, seed), events)
    return state
