"""The bench's load generator, in a process of its own so that its CPU is measured apart.

One c2s connection as the requester. For each command line on stdin (JSON: `targets`,
`inflight`, `duration`, `out`) it keeps `inflight` IQ gets outstanding for `duration` seconds
(closed loop: each reply sends the next request), sending round robin to `targets`, then waits
for the last replies. Latencies (seconds, float64) go to the file `out`; the answer is one JSON
line: requests, errors by condition, elapsed seconds.

    python -m benchmarks._loadgen HOST PORT user@localhost/bench PASSWORD
"""

from __future__ import annotations

import array
import asyncio
import itertools
import json
import sys
import time
from collections import Counter

from ._xmpp import Client, Top, login

#: What every request carries: a namespaced query of about 120 bytes.
REQUEST_PAYLOAD = (
    "<query xmlns='urn:example:bench'><item n='1'>"
    "the quick brown fox jumps over the lazy dog, 0123456789</item></query>"
)


def _ignore(_top: Top) -> None:
    pass


class Phase:
    def __init__(
        self, client: Client, tag: str, targets: list[str], inflight: int, duration: float
    ) -> None:
        self.client = client
        self.tag = tag
        self.targets = itertools.cycle(targets)
        self.inflight = inflight
        self.duration = duration
        self.pending: dict[str, float] = {}
        self.latencies = array.array("d")
        self.errors: Counter[str] = Counter()
        self.stray = 0
        self.counter = itertools.count()
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.started = self.stop_at = self.last = 0.0

    def _request(self, now: float) -> str:
        iq_id = f"{self.tag}{next(self.counter)}"
        self.pending[iq_id] = now
        return f"<iq type='get' id='{iq_id}' to='{next(self.targets)}'>{REQUEST_PAYLOAD}</iq>"

    def start(self) -> None:
        now = self.started = time.perf_counter()
        self.stop_at = now + self.duration
        self.client.on_top = self.on_top
        self.client.send("".join(self._request(now) for _ in range(self.inflight)))

    def on_top(self, top: Top) -> None:
        if top.name != "iq":
            return
        attrs = top.attrs
        sent = self.pending.pop(attrs.get("id", ""), None)
        if sent is None:
            self.stray += 1
            return
        now = time.perf_counter()
        self.latencies.append(now - sent)
        if attrs.get("type") == "error":
            self.errors[top.condition or "?"] += 1
        if now < self.stop_at:
            self.client.send(self._request(now))
        elif not self.pending:
            self.last = now
            if not self.done.done():
                self.done.set_result(None)


async def main(argv: list[str]) -> None:
    host, port, jid, password = argv
    client = await login(host, int(port), jid, password)
    loop = asyncio.get_running_loop()
    print("ready", flush=True)
    for number in itertools.count():
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        command = json.loads(line)
        phase = Phase(
            client, f"p{number}-", command["targets"], command["inflight"], command["duration"]
        )
        phase.start()
        try:
            await asyncio.wait_for(phase.done, command["duration"] + 60)
        except TimeoutError:
            phase.last = time.perf_counter()
        client.on_top = _ignore
        with open(command["out"], "wb") as f:
            phase.latencies.tofile(f)
        result = {
            "requests": len(phase.latencies),
            "unanswered": len(phase.pending),
            "errors": dict(phase.errors),
            "stray": phase.stray,
            "elapsed": phase.last - phase.started,
        }
        print(json.dumps(result), flush=True)
    client.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
