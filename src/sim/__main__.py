"""``python -m client_proxy.sim``: one request through the proxy, with no XMPP server at all.

The simulated server and clients stand in for Prosody (or, with ``--server ejabberd``, ejabberd)
and real accounts; the proxy is the real core, driven by the simulation's transport. Prints the
four stanzas that cross the component stream (user -> proxy -> target -> proxy -> user), as
DESIGN.md shows them; they are the same on both servers. ``--all`` prints every stanza of the
run instead, the subscription handshake included, which is where the servers differ.
"""

from __future__ import annotations

import argparse

from client_proxy.core._jid import bare

from ._profile import SERVERS
from ._run import Outcome, run
from ._schedule import PROXY, TARGET, Online, Request, Resource, Schedule, User

_USER = "user@example.org/abc"

DEMO = Schedule(
    users=(User(_USER),),
    resources=(Resource("a", answer_after=0.2),),
    steps=(Online(0.0, "a"), Request(1.0, _USER, "1234")),
)


def _role(jid: str | None) -> str:
    if jid is None:
        return "?"
    if bare(jid) == PROXY or jid.startswith(PROXY + "/"):
        return "proxy"
    if bare(jid) == TARGET:
        return "target"
    return "user"


def four_stanzas(outcome: Outcome) -> list[str]:
    """The IQs that crossed the component stream, one a line, named by role."""
    lines = []
    for hop in outcome.hops:
        s = hop.stanza
        if s.name == "iq" and "proxy" in (hop.src, hop.dst):
            who = f"{_role(s.get('from'))} -> {_role(s.get('to'))}"
            lines.append(f"{who:<16}: {s.top_tag()}")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m client_proxy.sim", description=__doc__)
    parser.add_argument("--all", action="store_true", help="print every stanza of the run")
    servers = {server.name: server for server in SERVERS}
    parser.add_argument(
        "--server",
        choices=list(servers),
        default=SERVERS[0].name,
        help="the server the simulated one behaves like (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    outcome = run(DEMO.on(servers[args.server]))
    if args.all:
        print(outcome.transcript())
        return
    for line in four_stanzas(outcome):
        print(line)


if __name__ == "__main__":
    main()
