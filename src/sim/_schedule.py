"""A schedule: who is in the simulated deployment, how they behave, and what happens when.

A schedule is plain data, and its ``repr`` is the Python that builds it: a failing case prints
as a script that replays it (:meth:`Schedule.script`). Steps that make no sense when they come
(taking offline a resource that is not online, reconnecting a connected component) do nothing,
so that any list of steps is a valid schedule and Hypothesis can shrink freely.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from ._profile import ServerProfile

__all__ = [
    "PROXY",
    "TARGET",
    "ComponentDown",
    "ComponentUp",
    "Forge",
    "Offline",
    "Online",
    "RepeatPresence",
    "Request",
    "Resource",
    "Schedule",
    "Settings",
    "Step",
    "Stop",
    "User",
    "Vanish",
]

#: The proxy's component domain and the target's bare JID in every simulated deployment.
PROXY = "proxy.example.org"
TARGET = "svc@example.org"


def _repr(obj: Any, positional: int) -> str:
    """``Name(a, b, key=value)``: the first ``positional`` fields by position, the others by
    keyword and only when they differ from their defaults. Valid Python, and short."""
    parts: list[str] = []
    for i, f in enumerate(dataclasses.fields(obj)):
        value = getattr(obj, f.name)
        if i < positional:
            parts.append(repr(value))
        elif f.default is dataclasses.MISSING or value != f.default:
            parts.append(f"{f.name}={value!r}")
    return f"{type(obj).__name__}({', '.join(parts)})"


@dataclass(frozen=True, slots=True, repr=False)
class User:
    """A requester: one client session, connected from the start and never leaving."""

    jid: str
    latency: float = 0.01

    def __repr__(self) -> str:
        return _repr(self, 1)


@dataclass(frozen=True, slots=True, repr=False)
class Resource:
    """A resource of the target account and how its client answers the requests it gets.

    ``answer_after`` seconds after a request arrives it sends the answer (None: never answers);
    ``error`` makes that answer an error with this condition (RFC 6120 §8.3.3) instead of a
    result; ``twice`` sends the answer twice (a buggy client). ``priority`` goes in its presence.
    """

    name: str
    answer_after: float | None = 0.1
    error: str | None = None
    twice: bool = False
    latency: float = 0.01
    priority: int | None = None

    def __repr__(self) -> str:
        return _repr(self, 1)


@dataclass(frozen=True, slots=True, repr=False)
class Settings:
    """The deployment's knobs: the proxy's configuration, the server's and the network's."""

    request_timeout: float = 5.0
    sync_grace: float = 1.0
    retry_get: bool = True
    retry_set: bool = False
    max_outstanding: int = 10_000
    max_per_requester: int = 1_000
    #: Seconds before the server notices a session whose client died without a word.
    detect_delay: float = 2.0
    #: Seconds the target's client takes to approve the proxy's subscription request.
    approve_delay: float = 0.1
    #: The target approved the proxy in an earlier run (the usual case after a restart).
    subscribed: bool = True
    #: One-way latency of the component stream.
    component_latency: float = 0.005
    #: How late the transport's timer fires after the deadline the core gave it.
    timer_lag: float = 0.0
    #: The seed of the proxy's resource choice.
    seed: int = 0
    #: The server the simulated one behaves like, where Prosody and ejabberd differ.
    server: ServerProfile = ServerProfile.PROSODY

    def __repr__(self) -> str:
        return _repr(self, 0)


@dataclass(frozen=True, slots=True, repr=False)
class Request:
    """``user`` sends an IQ request with ``id`` to ``to`` (the proxy or a full JID at it)."""

    at: float
    user: str
    id: str
    to: str = PROXY
    type: Literal["get", "set"] = "get"

    def __repr__(self) -> str:
        return _repr(self, 3)


@dataclass(frozen=True, slots=True, repr=False)
class Online:
    """The resource's client logs in and sends its initial presence. If a dead session of the
    same resource is still bound, the server replaces it (RFC 6120 §7.7.2.2)."""

    at: float
    resource: str

    def __repr__(self) -> str:
        return _repr(self, 2)


@dataclass(frozen=True, slots=True, repr=False)
class Offline:
    """The resource's client sends unavailable presence and closes its stream."""

    at: float
    resource: str

    def __repr__(self) -> str:
        return _repr(self, 2)


@dataclass(frozen=True, slots=True, repr=False)
class Vanish:
    """The resource's client dies without a word; the server notices ``detect_delay`` later."""

    at: float
    resource: str

    def __repr__(self) -> str:
        return _repr(self, 2)


@dataclass(frozen=True, slots=True, repr=False)
class RepeatPresence:
    """The resource sends the same available presence again (duplicate presence)."""

    at: float
    resource: str

    def __repr__(self) -> str:
        return _repr(self, 2)


@dataclass(frozen=True, slots=True, repr=False)
class Forge:
    """The resource sends an unsolicited result to the proxy, as if answering ``requester``'s
    request ``id``. If it does hold that request (or it is on its way to it), this is merely an
    early answer and carries the proper payload; otherwise the payload says `forged`, and the
    proxy must never deliver it."""

    at: float
    resource: str
    requester: str
    id: str

    def __repr__(self) -> str:
        return _repr(self, 4)


@dataclass(frozen=True, slots=True, repr=False)
class ComponentDown:
    """The component stream is cut."""

    at: float

    def __repr__(self) -> str:
        return _repr(self, 1)


@dataclass(frozen=True, slots=True, repr=False)
class ComponentUp:
    """The proxy reconnects its component stream."""

    at: float

    def __repr__(self) -> str:
        return _repr(self, 1)


@dataclass(frozen=True, slots=True, repr=False)
class Stop:
    """The operator stops the proxy (reconnecting it first if it is down), allowing ``drain``
    seconds for outstanding replies. A stopped proxy closes its stream and never reconnects."""

    at: float
    drain: float = 0.0

    def __repr__(self) -> str:
        return _repr(self, 1)


Step = (
    Request
    | Online
    | Offline
    | Vanish
    | RepeatPresence
    | Forge
    | ComponentDown
    | ComponentUp
    | Stop
)


@dataclass(frozen=True, slots=True, repr=False)
class Schedule:
    """Everything one simulated run does. The component connects at time 0; steps run at their
    times, in list order among equal times. After the last step the faults stop: the
    simulation reconnects the component if it is down, and runs until nothing is left to do."""

    users: tuple[User, ...]
    resources: tuple[Resource, ...]
    steps: tuple[Step, ...] = ()
    settings: Settings = Settings()

    def __repr__(self) -> str:
        return self.expression()

    def expression(self, indent: str = "") -> str:
        """``Schedule(...)`` as valid Python, one user, resource or step a line."""
        inner = indent + "    "
        more = inner + "    "

        def block(name: str, items: tuple[Any, ...]) -> str:
            if not items:
                return f"{inner}{name}=(),\n"
            rows = "".join(f"{more}{item!r},\n" for item in items)
            return f"{inner}{name}=(\n{rows}{inner}),\n"

        text = "Schedule(\n"
        text += block("users", self.users)
        text += block("resources", self.resources)
        text += block("steps", self.steps)
        if self.settings != Settings():
            text += f"{inner}settings={self.settings!r},\n"
        return text + indent + ")"

    def on(self, server: ServerProfile) -> Schedule:
        """The same schedule, played on ``server``."""
        return dataclasses.replace(self, settings=dataclasses.replace(self.settings, server=server))

    def script(self) -> str:
        """A Python script that replays this schedule and checks the whole-system properties."""
        return (
            "from client_proxy.sim import *\n"
            "from client_proxy.testing.whole_system import check_outcome\n\n"
            f"schedule = {self.expression()}\n"
            "outcome = run(schedule)\n"
            "print(outcome.transcript())\n"
            "check_outcome(outcome)\n"
        )

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        # Hypothesis's (IPython's) pretty printer: show the multi-line form in falsifying
        # examples, so that they can be pasted back as they are.
        printer.text(self.expression())

    @property
    def end(self) -> float:
        """The time of the last step (0 without steps)."""
        return max((s.at for s in self.steps), default=0.0)
