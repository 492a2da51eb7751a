"""A second transport for the core: a deterministic, in-memory simulation of an XMPP deployment.

A simulated server (:class:`SimServer`, Prosody's or ejabberd's behaviour where the proxy can
tell, as its :class:`ServerProfile` says) routes stanzas between scripted client sessions
(requesters, and the resources of the target account) and one external component: the core,
driven by :class:`CoreTransport` exactly as a real transport drives it. Time is virtual
(:class:`Clock`), so a run takes milliseconds and the same :class:`Schedule` always gives the
same run::

    >>> from client_proxy.sim import *
    >>> outcome = run(Schedule(
    ...     users=(User("user@example.org/abc"),),
    ...     resources=(Resource("a"),),
    ...     steps=(Online(0.0, "a"), Request(1.0, "user@example.org/abc", "1234")),
    ... ))
    >>> answer = outcome.user_received[-1].stanza
    >>> answer.top_tag()
    "<iq type='result' id='1234' to='user@example.org/abc' from='proxy.example.org'>"
    >>> sorted(outcome.proxy_online), sorted(outcome.server_online)
    (['a'], ['a'])

A schedule plays on Prosody unless its settings say otherwise
(``Settings(server=ServerProfile.EJABBERD)``, or ``schedule.on(ServerProfile.EJABBERD)``).
``python -m client_proxy.sim`` prints the four stanzas of one proxied request;
:mod:`client_proxy.testing.whole_system` holds the properties every run must keep.
"""

from ._clients import FORGED, Received, Requester, SentRequest, TargetClient
from ._clock import Clock, Hop, RunawaySimulation, Stream
from ._codec import from_core, read_error, to_core
from ._profile import SERVERS, Bounce, ServerProfile
from ._run import Outcome, config_of, run
from ._schedule import (
    PROXY,
    TARGET,
    ComponentDown,
    ComponentUp,
    Forge,
    Offline,
    Online,
    RepeatPresence,
    Request,
    Resource,
    Schedule,
    Settings,
    Step,
    Stop,
    User,
    Vanish,
)
from ._server import ComponentEndpoint, ComponentLink, SimServer, TargetSubscription
from ._transport import CoreTransport, ProxyEndpoint, TransportFactory
from ._xml import (
    DELAY_NS,
    SIM_NS,
    STANZAS_NS,
    Element,
    error_element,
    error_reply,
    iq,
    presence,
)

__all__ = [
    "DELAY_NS",
    "FORGED",
    "PROXY",
    "SERVERS",
    "SIM_NS",
    "STANZAS_NS",
    "TARGET",
    "Bounce",
    "Clock",
    "ComponentDown",
    "ComponentEndpoint",
    "ComponentLink",
    "ComponentUp",
    "CoreTransport",
    "Element",
    "Forge",
    "Hop",
    "Offline",
    "Online",
    "Outcome",
    "ProxyEndpoint",
    "Received",
    "RepeatPresence",
    "Request",
    "Requester",
    "Resource",
    "RunawaySimulation",
    "Schedule",
    "SentRequest",
    "ServerProfile",
    "Settings",
    "SimServer",
    "Step",
    "Stop",
    "Stream",
    "TargetClient",
    "TargetSubscription",
    "TransportFactory",
    "User",
    "Vanish",
    "config_of",
    "error_element",
    "error_reply",
    "from_core",
    "iq",
    "presence",
    "read_error",
    "run",
    "to_core",
]
