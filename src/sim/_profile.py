"""Server profiles: the rules in which the simulated server behaves like Prosody or like ejabberd.

Each field of :class:`ServerProfile` is one rule measured to differ between Prosody 0.12.3 and
ejabberd 23.01 (DESIGN.md, "Server facts measured here"; docs/deploy.md, "The gap"; and, for the
cases DESIGN.md's table leaves open, tests/integration/test_presence_answers.py, which measures
them on both servers in every test run). Everything else the simulated server does is one rule
for both, and :mod:`client_proxy.sim._server` says at each rule whether it was measured the same
on both servers, or measured on Prosody only (or taken from Prosody's code), in which case the
ejabberd profile keeps Prosody's rule: the profile holds only what was measured.

What the profiles differ in:

- ``probe_cancels_pending``, a `probe` while the proxy's `subscribe` is pending: Prosody answers
  `unsubscribed` and the request is lost; ejabberd answers nothing and the request survives;
- ``resubscribe_copies``, a `subscribe` when already subscribed: Prosody answers `subscribed`
  plus every resource's presence twice; ejabberd `subscribed` alone;
- ``acknowledges_subscribe``, a `subscribe` not yet approved: Prosody answers a bare
  `unavailable`, ejabberd nothing (DESIGN.md, with the target offline; test_presence_answers,
  with the target online);
- ``unavailable_for_probe_with_nobody_online``, a `probe` once subscribed while no resource is
  available: Prosody answers a bare `unavailable`, ejabberd nothing (test_presence_answers);
- ``session_gone``, an IQ to a full JID with no session: `service-unavailable` (cancel) on
  both; ejabberd echoes the payload and adds the text "User session not found";
- ``component_gone``, a stanza for the component's domain while it is disconnected: Prosody's
  `remote-server-timeout` (wait) with `<not-connected/>`; ejabberd's `forbidden` (auth) with
  the payload echoed (s2s off).

One more measured difference is not a rule here: ejabberd accepts a second connection for the
component's domain and splits its stanzas between the two, where Prosody refuses it with
`conflict`. A simulated run has one proxy and never opens a second connection.

The ejabberd profile is ejabberd with s2s off (``s2s_access: none``), as the integration tests
run it; with s2s on, its default, the bounce for the disconnected component is
`remote-server-not-found` (cancel), measured for an IQ only, so it has no profile of its own.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from client_proxy.core._jid import domain_of

from ._xml import Element, error_element, error_reply

__all__ = ["SERVERS", "Bounce", "ServerProfile"]

# Prosody's mod_component: the error child telling a bounced sender the component is away.
_NOT_CONNECTED = Element("not-connected", (("xmlns", "xmpp:prosody.im/protocol/component"),))


@dataclass(frozen=True, slots=True)
class Bounce:
    """The error a server sends back in place of a stanza it cannot deliver (RFC 6120 §8.3.1):
    same name and id, `to` and `from` swapped, type error, and this `<error/>`."""

    type: str
    condition: str
    text: str | None = None
    #: The stanza's payload comes back before the `<error/>` (RFC 6120 §8.3.1 allows it).
    echo: bool = False
    #: `<error by=.../>` names the domain the stanza was for (RFC 6120 §8.3.2).
    by_domain: bool = False
    #: Children of `<error/>` beyond the condition and text (Prosody's `<not-connected/>`).
    extra: tuple[Element, ...] = ()

    def error(self, to: str) -> Element:
        """The `<error/>` child of the bounce of a stanza that was sent to ``to``."""
        by = domain_of(to) if self.by_domain else None
        return error_element(self.type, self.condition, self.text, by, self.extra)

    def reply(self, stanza: Element) -> Element:
        """The bounce of ``stanza``."""
        to = stanza.get("to") or ""
        by = domain_of(to) if self.by_domain else None
        return error_reply(
            stanza, self.type, self.condition, self.text, by=by, extra=self.extra, echo=self.echo
        )

    def bounced(self, stanza: Element) -> bool:
        """Whether ``stanza`` is such a bounce (judged by its `<error/>`, the one part that
        says who made it)."""
        return stanza.get("type") == "error" and stanza.child("error") == self.error(
            stanza.get("from") or ""
        )


@dataclass(frozen=True, slots=True)
class ServerProfile:
    """The rules the simulated server follows where Prosody and ejabberd were measured to
    differ (the module docstring has the table). ``ServerProfile.PROSODY`` and
    ``ServerProfile.EJABBERD`` are the two measured; a run picks one in its
    :class:`~client_proxy.sim.Settings` (``server``)."""

    #: What ``python -m client_proxy.sim --server`` and the test ids call it.
    name: str
    #: A `probe` from the proxy while its `subscribe` is pending is answered `unsubscribed` for
    #: the target, and the pending request is lost (Prosody); or ignored (ejabberd).
    probe_cancels_pending: bool
    #: How many times each available resource's presence follows `subscribed` when the proxy,
    #: already subscribed, sends `subscribe` again: 2 on Prosody (and a bare `unavailable` when
    #: no resource is available); 0 on ejabberd, `subscribed` alone (the probe brings them).
    resubscribe_copies: int
    #: A `subscribe` from the proxy, not yet approved, is acknowledged with a bare
    #: `unavailable`, whether the target is online or not (Prosody); or not at all (ejabberd).
    acknowledges_subscribe: bool
    #: A `probe` from the subscribed proxy while no resource of the target is available is
    #: answered with a bare `unavailable` (Prosody); or not at all (ejabberd).
    unavailable_for_probe_with_nobody_online: bool
    #: The answer to an IQ request sent to a full JID that has no session.
    session_gone: Bounce
    #: The answer to a stanza for the component's domain while the component is disconnected.
    component_gone: Bounce

    PROSODY: ClassVar[ServerProfile]
    EJABBERD: ClassVar[ServerProfile]

    def __repr__(self) -> str:
        # The two measured profiles print as the expression that names them, so that a
        # schedule's repr stays the Python that builds it (Schedule.script).
        for known in SERVERS:
            if known == self:
                return f"ServerProfile.{known.name.upper()}"
        fields = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self))
        return f"ServerProfile({fields})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


ServerProfile.PROSODY = ServerProfile(
    name="prosody",
    # DESIGN.md, server facts: "probe while the component's subscribe is pending".
    probe_cancels_pending=True,
    # DESIGN.md, server facts: "repeated subscribe when already subscribed" (each twice).
    resubscribe_copies=2,
    # DESIGN.md, server facts: "subscribe while the target is offline"; with the target
    # online, tests/integration/test_presence_answers.py (and mod_presence: "acknowledging
    # receipt", whatever the target's state).
    acknowledges_subscribe=True,
    # tests/integration/test_presence_answers.py; mod_presence, when no resource is available.
    unavailable_for_probe_with_nobody_online=True,
    # DESIGN.md, server facts: "IQ to an offline full JID"; RFC 6121 §8.5.3.2.3.
    session_gone=Bounce("cancel", "service-unavailable"),
    # DESIGN.md, server facts, and docs/deploy.md, "The gap": Prosody's mod_component, with
    # its text, `by` and <not-connected/>, no payload.
    component_gone=Bounce(
        "wait",
        "remote-server-timeout",
        "Component unavailable",
        by_domain=True,
        extra=(_NOT_CONNECTED,),
    ),
)

ServerProfile.EJABBERD = ServerProfile(
    name="ejabberd",
    # DESIGN.md, server facts: "nothing; the request survives".
    probe_cancels_pending=False,
    # DESIGN.md, server facts: "subscribed only: the proxy must probe to learn the resources".
    resubscribe_copies=0,
    # DESIGN.md, server facts: "subscribe while the target is offline": nothing; with the
    # target online, tests/integration/test_presence_answers.py: nothing either.
    acknowledges_subscribe=False,
    # tests/integration/test_presence_answers.py: nothing.
    unavailable_for_probe_with_nobody_online=False,
    # DESIGN.md, server facts: "the same, payload echoed, text 'User session not found'".
    session_gone=Bounce("cancel", "service-unavailable", "User session not found", echo=True),
    # docs/deploy.md, "The gap", with s2s off: forbidden (auth), "Access denied by service
    # policy", the payload echoed. Whether ejabberd sets `by` was not recorded: left out.
    component_gone=Bounce("auth", "forbidden", "Access denied by service policy", echo=True),
)

#: The measured profiles, Prosody first: the whole-system properties run on each.
SERVERS: tuple[ServerProfile, ...] = (ServerProfile.PROSODY, ServerProfile.EJABBERD)
