"""The bench's implementing client, in a process of its own so that its CPU is measured apart.

It logs in the target account's resources, approves the subscription of each proxy domain
given (comma separated), goes online, and answers every IQ get/set with a result carrying a
small fixed payload. Prints `ready` once all resources are online; stops when its stdin
closes.

    python -m benchmarks._target HOST PORT svc@localhost PASSWORD proxy.localhost r1 r2
"""

from __future__ import annotations

import asyncio
import sys

from ._xmpp import Client, Top, esc, login

#: What every answer carries (the requests carry a payload of their own, see _loadgen).
REPLY_PAYLOAD = "<query xmlns='urn:example:bench'><ok/></query>"


def answerer(client: Client, proxies: frozenset[str]) -> object:
    def on_top(top: Top) -> None:
        if top.name == "iq":
            attrs = top.attrs
            kind = attrs.get("type")
            if kind in ("get", "set"):
                client.send(
                    f"<iq type='result' id='{esc(attrs.get('id', ''))}' "
                    f"to='{esc(attrs.get('from', ''))}'>{REPLY_PAYLOAD}</iq>"
                )
        elif top.name == "presence" and top.attrs.get("type") == "subscribe":
            sender = top.attrs.get("from", "")
            if sender in proxies:
                client.send(f"<presence type='subscribed' to='{esc(sender)}'/>")

    return on_top


async def main(argv: list[str]) -> None:
    host, port, bare, password, proxy_list, *resources = argv
    proxies = frozenset(proxy_list.split(","))
    clients = []
    for resource in resources:
        client = await login(host, int(port), f"{bare}/{resource}", password, roster=True)
        client.on_top = answerer(client, proxies)  # type: ignore[assignment]
        client.send("<presence/>")
        clients.append(client)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for client in clients:
        client.close()
    await asyncio.sleep(0.2)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
