"""Whole-system properties of client-proxy, and the Hypothesis schedules that exercise them.

The properties are about what the people at the edges see, not about the core's state:

- every request a user sends gets exactly one answer, from the address it was sent to, with its
  id (and a result carries the answer the target gave to *that* request);
- no user ever receives a stanza nobody owed it, and the target only ever receives requests
  that users really sent (the proxy forwards, it never invents);
- a `set` reaches the target at most once unless the configuration allows retrying sets;
- after the faults stop and time passes, the proxy's view of the target's online resources is
  the server's;
- the transport never had to drop a stanza the core asked it to send, and the server never had
  to refuse one from the component.

They hold under any schedule :func:`schedules` draws: sessions dying without a word, the
component stream dropping and coming back, stanzas reordered between sessions, slow and silent
resources, duplicated presence, forged replies, a timer that fires late, a stop with a drain;
and on either server the simulation models (:data:`~client_proxy.sim.SERVERS`: Prosody's
rules, and ejabberd's where the two were measured to differ). A schedule plays on Prosody
unless its settings say otherwise; ``schedule.on(server)`` plays it on another.

To check another transport of the core against them, make it a
:class:`~client_proxy.sim.ProxyEndpoint` (the simulated server hands it
:class:`~client_proxy.sim.Element` stanzas; convert them to your library's objects and back if
you want your codec in the loop) and run, on each server::

    import pytest
    from hypothesis import given
    from client_proxy.sim import SERVERS, run
    from client_proxy.testing.whole_system import check_outcome, schedules

    @pytest.mark.parametrize("server", SERVERS, ids=lambda s: s.name)
    @given(schedules())
    def test_my_transport(server, schedule):
        check_outcome(run(schedule.on(server), transport=MyTransport))

A failure prints the schedule, with its server, as a script that replays it.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from client_proxy.core import decode_requester
from client_proxy.core._jid import bare, domain_of, resource_of
from client_proxy.core._seal import original_of
from client_proxy.sim import (
    PROXY,
    SIM_NS,
    TARGET,
    ComponentDown,
    ComponentUp,
    Element,
    Forge,
    Offline,
    Online,
    Outcome,
    RepeatPresence,
    Request,
    Resource,
    Schedule,
    SentRequest,
    Settings,
    Step,
    Stop,
    User,
    Vanish,
)
from hypothesis import strategies as st

from .strategies import requester_jids, resourceparts

__all__ = [
    "ALL_FAULTS",
    "PROPERTIES",
    "REQUESTERS",
    "RESOURCE_NAMES",
    "AnswerAudit",
    "WholeSystemViolation",
    "answered_exactly_once",
    "audit_answers",
    "check_outcome",
    "leaks_to_target",
    "nothing_unowed",
    "repeated_sets",
    "schedules",
    "transport_faults",
    "view_mismatch",
    "violations",
]


class WholeSystemViolation(AssertionError):
    """A run broke a whole-system property. The message lists what, and how to replay it."""


# -- the properties ----------------------------------------------------------------------------


def _serial_of(stanza: Element, name: str) -> str | None:
    child = stanza.child(name, SIM_NS)
    return None if child is None else child.text()


@dataclass(frozen=True, slots=True)
class AnswerAudit:
    """What the users' inboxes say about their requests (see :func:`audit_answers`)."""

    #: Requests that never got an answer.
    unanswered: tuple[str, ...]
    #: Stanzas a user received that answered none of its waiting requests: second answers,
    #: answers nobody asked for, anything that is not an IQ answer at all.
    unowed: tuple[str, ...]
    #: Results carrying the target's answer to one request, delivered as the answer to
    #: another (or forged by the target).
    misattributed: tuple[str, ...]


def audit_answers(outcome: Outcome) -> AnswerAudit:
    """Match every stanza the users received to the requests they sent.

    A strict client matches an answer on (address, id) alone, so requests are grouped by
    (user, address, id) and each user's inbox is walked in time order. A result is matched by
    its payload (the target echoes the request's serial); an error takes the oldest waiting
    request of its group that no later result claims (a group holds several requests only when
    a user reuses an id).
    """
    unanswered: list[str] = []
    unowed: list[str] = []
    misattributed: list[str] = []
    by_key: dict[tuple[str, str, str], list[SentRequest]] = defaultdict(list)
    for r in sorted(outcome.requests, key=lambda r: r.at):
        by_key[(r.user, r.to, r.id)].append(r)
    # The serials each group's results will claim, consumed as the walk reaches them.
    claims: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    answers = []
    for got in outcome.user_received:
        s = got.stanza
        kind = s.get("type")
        if s.name != "iq" or kind not in ("result", "error"):
            unowed.append(f"t={got.at:g}: {got.jid} received {s}, which answers nothing")
            continue
        if kind == "error" and s.child("error") is None:
            unowed.append(f"t={got.at:g}: {got.jid} received an error without <error/>: {s}")
        key = (got.jid, s.get("from") or "", s.get("id") or "")
        text = _serial_of(s, "answer") if kind == "result" else None
        if text is not None:
            claims[key].append(text)
        answers.append((got, key, text))
    answered: dict[int, float] = {}
    for got, key, text in answers:
        s = got.stanza
        waiting = [r for r in by_key.get(key, ()) if r.at <= got.at and r.serial not in answered]
        if text is not None:
            claims[key].remove(text)
            own = next((r for r in by_key.get(key, ()) if str(r.serial) == text), None)
            if own is not None and own in waiting:
                answered[own.serial] = got.at
                continue
            if own is None:
                what = f"a result whose payload answers no request of theirs ({text!r})"
            elif own.serial in answered:
                what = (
                    f"the answer to their request #{own.serial}, which had already been "
                    f"answered at t={answered[own.serial]:g}"
                )
            else:
                what = f"the answer to their request #{own.serial}, sent later"
            if waiting:
                misattributed.append(
                    f"t={got.at:g}: {got.jid} received {what}, as the answer to their request "
                    f"#{waiting[0].serial} (same address and id): {s}"
                )
                answered[waiting[0].serial] = got.at
            else:
                unowed.append(f"t={got.at:g}: {got.jid} received {what}; nothing was waiting")
            continue
        later = set(claims[key])
        pick = next((r for r in waiting if str(r.serial) not in later), None) or next(
            iter(waiting), None
        )
        if pick is None:
            unowed.append(
                f"t={got.at:g}: {got.jid} received {s}, but no request of theirs to "
                f"{key[1]!r} with id {key[2]!r} was waiting (a second answer, or one nobody "
                "asked for)"
            )
        else:
            answered[pick.serial] = got.at
    for r in sorted(outcome.requests, key=lambda r: r.serial):
        if r.serial not in answered:
            unanswered.append(
                f"request #{r.serial} ({r.type} id {r.id!r} from {r.user} to {r.to}, sent at "
                f"t={r.at:g}) never got an answer (the run ended at t={outcome.end:g})"
            )
    return AnswerAudit(tuple(unanswered), tuple(unowed), tuple(misattributed))


def answered_exactly_once(outcome: Outcome) -> list[str]:
    """Every request gets exactly one answer, from the address it was sent to, with its id,
    after it was sent, and that answer is its own (a result carries the target's answer to
    *that* request)."""
    audit = audit_answers(outcome)
    return [*audit.unanswered, *audit.misattributed, *audit.unowed]


def nothing_unowed(outcome: Outcome) -> list[str]:
    """No user receives a stanza nobody owed it, and the target receives from the proxy only
    requests users sent (:func:`leaks_to_target`)."""
    return [*audit_answers(outcome).unowed, *leaks_to_target(outcome)]


def leaks_to_target(outcome: Outcome) -> list[str]:
    """The target receives from the proxy only the subscription request and requests that a
    user really sent, with that user's id, type and payload."""
    problems: list[str] = []
    sent = {(r.user, r.id, r.type, str(r.serial)): r for r in outcome.requests}
    for got in outcome.target_received:
        s = got.stanza
        sender = s.get("from") or ""
        if domain_of(sender) != PROXY:
            continue
        kind = s.get("type")
        if s.name == "presence" and kind == "subscribe" and sender == PROXY:
            continue
        if s.name == "presence" and outcome.schedule.settings.server.component_gone.bounced(s):
            continue  # the server's bounce of the target's own presence while the proxy is away
        if s.name == "iq" and kind in ("get", "set"):
            requester = decode_requester(PROXY, sender)
            serial = _serial_of(s, "query")
            r = sent.get((requester or "", _original(s.get("id") or ""), kind, serial or ""))
            if r is not None and r.at <= got.at:
                continue
        problems.append(f"t={got.at:g}: {got.jid} received {s}, which no user sent")
    return problems


def _original(ident: str) -> str:
    """The requester's id that an id the proxy forwarded carries (``_seal``)."""
    original = original_of(ident)
    return ident if original is None else original


def repeated_sets(outcome: Outcome) -> list[str]:
    """Without ``retry_set``, each `set` a user sends is forwarded to the target at most once:
    a resource may have acted on it (DESIGN.md: retried only where that is safe)."""
    if outcome.schedule.settings.retry_set:
        return []
    forwards: Counter[tuple[str, str, str]] = Counter()
    for hop in outcome.hops:
        s = hop.stanza
        if (
            hop.src == "proxy"
            and s.name == "iq"
            and s.get("type") == "set"
            and bare(s.get("to") or "") == TARGET
        ):
            ident = _original(s.get("id") or "")
            forwards[(s.get("from") or "", ident, _serial_of(s, "query") or "")] += 1
    return [
        f"the set #{serial} (id {id!r} from {sender}) was sent to the target {n} times"
        for (sender, id, serial), n in forwards.items()
        if n > 1
    ]


def view_mismatch(outcome: Outcome) -> list[str]:
    """Once the faults have stopped and the run has settled, the proxy sees online exactly the
    resources the server has available presence for."""
    if outcome.proxy_online is None or outcome.proxy_online == outcome.server_online:
        return []
    return [
        f"after the faults stopped, the proxy sees {sorted(outcome.proxy_online)} online, the "
        f"server {sorted(outcome.server_online)}"
    ]


def transport_faults(outcome: Outcome) -> list[str]:
    """Nothing the core asked to send had to be dropped (the stream was reported lost), and
    the server refused nothing from the component."""
    problems = [
        f"the core asked to send {s} after its transport had reported the connection lost "
        "(ConnectionLost); no transport can send it"
        for s in outcome.unsendable
    ]
    problems += [f"the server refused the component's stanza: {v}" for v in outcome.violations]
    return problems


#: Every property, by name: a function from an :class:`~client_proxy.sim.Outcome` to the
#: sentences describing how the run broke it (empty if it did not).
PROPERTIES: dict[str, Callable[[Outcome], list[str]]] = {
    "transport_faults": transport_faults,
    "answered_exactly_once": answered_exactly_once,
    "nothing_unowed": nothing_unowed,
    "repeated_sets": repeated_sets,
    "view_mismatch": view_mismatch,
}


def violations(outcome: Outcome, properties: Collection[str] = tuple(PROPERTIES)) -> list[str]:
    """How ``outcome`` breaks the named ``properties`` (all by default), without repeats."""
    found: list[str] = []
    for name in properties:
        for v in PROPERTIES[name](outcome):
            if v not in found:
                found.append(v)
    return found


def check_outcome(
    outcome: Outcome,
    properties: Collection[str] = tuple(PROPERTIES),
    transcript_lines: int = 120,
) -> None:
    """Raise :class:`WholeSystemViolation` if ``outcome`` breaks one of the named
    ``properties`` (all by default, see :data:`PROPERTIES`). The message lists the violations,
    the script that replays the run, its transcript and the proxy's log. What the transport
    had to drop is always listed, as it explains the rest."""
    found = violations(outcome, properties)
    if not found:
        return
    found = violations(outcome, ("transport_faults",)) + [
        v for v in found if v not in violations(outcome, ("transport_faults",))
    ]
    logs = "\n".join(f"    {r.level:7} {r.code}: {r.message}" for r in outcome.logs)
    raise WholeSystemViolation(
        "whole-system properties violated:\n"
        + "\n".join(f"  - {v}" for v in found)
        + "\n\nreplay it with this script:\n\n"
        + outcome.schedule.script()
        + f"\ntranscript (virtual seconds):\n{outcome.transcript(transcript_lines)}\n"
        + f"\nthe proxy's log:\n{logs}\n"
    )


# -- the schedules -----------------------------------------------------------------------------

#: Requesters, awkward ones included: another domain, `/`, `@` and non-ASCII in the resource,
#: a space, and one too long to carry in a resourcepart (RFC 7622 §3.4), which the proxy must
#: refuse with an answer.
REQUESTERS: tuple[str, ...] = (
    "alice@example.org/phone",
    "bob@example.org/desk",
    "carol@other.example/tab/2",
    "dan@example.org/ünï",
    "eve@example.org/a@b",
    "frank@example.org/ r",
    "long@example.org/" + "r" * 1010,
)
#: Resources of the target: DESIGN.md measured that `@`, `/` and non-ASCII pass verbatim.
RESOURCE_NAMES: tuple[str, ...] = ("a", "b", "c/1", "ph@ne", "日本語")
_IDS = ("1", "2", "3", "x")


def _a_client_session(jid: str) -> bool:
    """A full JID of an account on the simulated server: not the proxy's, not the target's."""
    return (
        resource_of(jid) is not None
        and "@" in bare(jid)
        and domain_of(jid) != PROXY
        and bare(jid) != TARGET
    )


# Mostly the fixed pools (readable failures, frequent collisions), sometimes anything a server
# may stamp (the conformance kit's strategies, normalised by the JID profiles).
_REQUESTER = st.one_of(
    st.sampled_from(REQUESTERS),
    st.sampled_from(REQUESTERS),
    requester_jids().filter(_a_client_session),
)
_RESOURCE_NAME = st.one_of(
    st.sampled_from(RESOURCE_NAMES), st.sampled_from(RESOURCE_NAMES), resourceparts(64)
)
_TIMES = st.integers(0, 80).map(lambda k: k / 10)
_LATENCIES = st.sampled_from((0.001, 0.01, 0.1, 0.5))

#: The faults :func:`schedules` can inject, by name.
ALL_FAULTS: frozenset[str] = frozenset(
    {
        "vanish",  # a session dies without unavailable presence
        "offline",  # a resource goes offline (gracefully) mid-request
        "component",  # the component stream drops and comes back
        "reorder",  # sessions with different latencies
        "slow",  # resources that answer late, or never
        "duplicate",  # duplicated presence
        "forge",  # unsolicited replies from the target
        "errors",  # resources answering with errors, or twice
        "timer_lag",  # the transport's timer firing late
        "stop",  # the proxy stopped with a drain
        "limits",  # tiny request limits
        "id_reuse",  # a requester reusing an id, even while its request is outstanding
        "unsubscribed",  # the target has not approved the proxy yet
    }
)


@st.composite
def _resource(draw: st.DrawFn, name: str, faults: Collection[str]) -> Resource:
    answer_after: float | None = 0.1
    if "slow" in faults:
        answer_after = draw(st.sampled_from((0.0, 0.3, 1.0, 2.0, 4.0, 12.0, None)))
    error: str | None = None
    twice = False
    if "errors" in faults:
        error = draw(st.sampled_from((None, None, "item-not-found", "service-unavailable")))
        twice = draw(st.booleans())
    latency = draw(_LATENCIES) if "reorder" in faults else 0.01
    return Resource(name, answer_after=answer_after, error=error, twice=twice, latency=latency)


@st.composite
def _settings(draw: st.DrawFn, faults: Collection[str]) -> Settings:
    limits = "limits" in faults and draw(st.booleans())
    return Settings(
        request_timeout=draw(st.sampled_from((1.0, 3.0, 10.0))),
        sync_grace=draw(st.sampled_from((0.0, 0.5, 2.0))),
        retry_get=draw(st.booleans()),
        retry_set=draw(st.booleans()),
        max_outstanding=2 if limits else 10_000,
        max_per_requester=1 if limits else 1_000,
        detect_delay=draw(st.sampled_from((0.2, 1.0, 5.0, 20.0))),
        approve_delay=draw(st.sampled_from((0.0, 0.3, 2.0))),
        subscribed=draw(st.booleans()) if "unsubscribed" in faults else True,
        component_latency=draw(st.sampled_from((0.001, 0.005, 0.05))),
        timer_lag=draw(st.sampled_from((0.0, 0.0, 0.1, 1.0, 3.0)))
        if "timer_lag" in faults
        else 0.0,
        seed=draw(st.integers(0, 2**32 - 1)),
    )


@st.composite
def _request(draw: st.DrawFn, users: Sequence[str]) -> Request:
    return Request(
        draw(_TIMES),
        draw(st.sampled_from(users)),
        draw(st.sampled_from(_IDS)),
        to=draw(st.sampled_from((PROXY, PROXY, PROXY + "/x"))),
        type=draw(st.sampled_from(("get", "get", "set"))),
    )


@st.composite
def _fault(
    draw: st.DrawFn, users: Sequence[str], resources: Sequence[str], faults: Collection[str]
) -> Step:
    """A step that is not a request: presence churn, or one of the faults."""
    at = draw(_TIMES)
    kinds = ["online", "online"]
    kinds += [k for k in ("vanish", "offline", "forge", "stop") if k in faults]
    if "duplicate" in faults:
        kinds.append("repeat")
    if "component" in faults:
        kinds += ["down", "down", "up"]
    kind = draw(st.sampled_from(kinds))
    if kind == "down":
        return ComponentDown(at)
    if kind == "up":
        return ComponentUp(at)
    if kind == "stop":
        return Stop(at, drain=draw(st.sampled_from((0.0, 0.5, 5.0))))
    resource = draw(st.sampled_from(resources))
    if kind == "online":
        return Online(at, resource)
    if kind == "vanish":
        return Vanish(at, resource)
    if kind == "offline":
        return Offline(at, resource)
    if kind == "repeat":
        return RepeatPresence(at, resource)
    return Forge(at, resource, draw(st.sampled_from(users)), draw(st.sampled_from(_IDS)))


def _unique_ids(requests: list[Step]) -> list[Step]:
    """The same requests, each user's ids made unique (`1`, then `1.2`, `1.3`...), as clients
    that number or randomise their ids send them."""
    seen: Counter[tuple[str, str]] = Counter()
    out: list[Step] = []
    for r in requests:
        assert isinstance(r, Request)
        seen[(r.user, r.id)] += 1
        n = seen[(r.user, r.id)]
        out.append(r if n == 1 else dataclasses.replace(r, id=f"{r.id}.{n}"))
    return out


def _with_one_stop(steps: list[Step]) -> list[Step]:
    """Keep the first Stop only, and no component fault after it: a stopping proxy closes its
    stream for good, so a drop during the drain would lose its last answers by construction."""
    out: list[Step] = []
    stopped = False
    for s in steps:
        if isinstance(s, Stop):
            if stopped:
                continue
            stopped = True
        elif stopped and isinstance(s, ComponentDown | ComponentUp):
            continue
        out.append(s)
    return out


@st.composite
def schedules(
    draw: st.DrawFn,
    faults: Collection[str] = ALL_FAULTS,
    max_requests: int = 20,
    max_faults: int = 15,
) -> Schedule:
    """Schedules of a small deployment (1-3 requesters, 1-3 target resources): up to
    ``max_requests`` requests and ``max_faults`` other steps (presence churn and the faults
    named in ``faults``, see :data:`ALL_FAULTS`) over 8 virtual seconds."""
    unknown = set(faults) - ALL_FAULTS
    if unknown:
        raise ValueError(f"unknown faults {sorted(unknown)}; known: {sorted(ALL_FAULTS)}")
    user_jids = draw(st.lists(_REQUESTER, min_size=1, max_size=3, unique=True))
    names = draw(st.lists(_RESOURCE_NAME, min_size=1, max_size=3, unique=True))
    users = tuple(
        User(jid, latency=draw(_LATENCIES) if "reorder" in faults else 0.01) for jid in user_jids
    )
    resources = tuple(draw(_resource(name, faults)) for name in names)
    initially = [n for n in names if draw(st.sampled_from((True, True, False)))]
    requests: list[Step] = draw(st.lists(_request(user_jids), max_size=max_requests))
    others = draw(st.lists(_fault(user_jids, names, faults), max_size=max_faults))
    if "id_reuse" not in faults:
        requests = _unique_ids(requests)
    steps = sorted(requests + others, key=lambda s: s.at)
    steps = [Online(0.0, n) for n in initially] + _with_one_stop(steps)
    return Schedule(users, resources, tuple(steps), draw(_settings(faults)))
