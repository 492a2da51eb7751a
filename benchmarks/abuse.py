"""`just abuse`: hostile loads against the real daemon and a real Prosody.

One throwaway Prosody on loopback; for each load a fresh `client-proxy run` (so that its peak
resident memory, VmHWM in /proc/PID/status, is that load's) serving `proxy.localhost` for a
target account of the load's own; the requesters and the target's resources are lean raw
clients (`benchmarks._xmpp`) in this process. For each load it prints: requests sent, answered
by result, answered by error (by condition), never answered (must be 0), the proxy's resident
memory before the load and at its peak, and how late the timeout answers reached their
requesters relative to their deadlines (sent + request_timeout, as the requester sees it).

The loads (default config unless said):

- ``headline``: one account with 10 resources sends 150 requests each of 100 KB (all at once)
  to a target resource that reads but never answers; request_timeout = 8.
- ``resources``: the target announces 1,030 resources, more than the core tracks
  (MAX_RESOURCES = 1,024), each by presence directed to the proxy; a requester then sends 200
  requests, answered by the resources.
- ``churn``: one target resource toggles its presence (available with a new priority,
  unavailable) as fast as it can for 10 s while another answers; a requester keeps 10 requests
  in flight all along.
- ``fresh``: one account logs in 20 resources, fresh names, each sending 1,100 requests of 1 KB
  at once to a target that never answers (request_timeout = 8): the per-requester limits count
  each full JID apart.

    python -m benchmarks.abuse [--loads headline,churn,fresh,resources] [--write]

``--write`` puts the table in docs/benchmarks.md, between the markers that `just bench` keeps.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import itertools
import re
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from client_proxy.testing.prosody import Prosody, prosody_available

from ._procs import ProxyProcess, cpu_seconds, machine_description, rss_kib, write_proxy_config
from ._xmpp import Client, Top, esc, login

__all__ = ["SECTION_END", "SECTION_START", "main"]

ROOT = Path(__file__).resolve().parent.parent
PROXY = "proxy.localhost"
SECRET = "abuse-secret"
PASSWORD = "abuse-password"
#: The markers around this script's section of docs/benchmarks.md (bench.py keeps it).
SECTION_START = "<!-- abuse: written by `just abuse` -->"
SECTION_END = "<!-- /abuse -->"


def vm_hwm_kib(pid: int) -> int:
    """Peak resident set size of ``pid`` in KiB (VmHWM)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


@dataclass
class Tally:
    """What one load's requesters saw."""

    name: str
    what: str
    sent: int = 0
    results: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    #: Seconds from sending to the timeout answer, per timed-out request.
    timeout_delays: list[float] = field(default_factory=list)
    #: Seconds from sending to any other answer (a refusal comes back at once: its delay is
    #: the server's routing lag, which the timeout answers carry too).
    other_delays: list[float] = field(default_factory=list)
    request_timeout: float = 30.0
    rss_before_kib: int = 0
    rss_peak_kib: int = 0
    cpu_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def answered(self) -> int:
        return self.results + sum(self.errors.values())

    @property
    def unanswered(self) -> int:
        return self.sent - self.answered

    def lateness(self) -> str:
        if not self.timeout_delays:
            return "-"
        late = [d - self.request_timeout for d in self.timeout_delays]
        return f"{statistics.median(late):.1f} / {max(late):.1f}"

    def other_delay(self) -> str:
        if not self.other_delays:
            return "-"
        return f"{statistics.median(self.other_delays):.2f} / {max(self.other_delays):.2f}"


class Requester:
    """One requester session: sends IQ gets, matches answers by id."""

    def __init__(self, client: Client, tally: Tally) -> None:
        self.client = client
        self.tally = tally
        self.pending: dict[str, float] = {}
        #: Wall-clock times per id, sent and answered (to set beside the proxy's log).
        self.sent_wall: dict[str, float] = {}
        self.answered_wall: dict[str, float] = {}
        self.ids = itertools.count()
        self.on_answer: Callable[[], None] | None = None
        client.on_top = self.on_top

    def send(self, payload: str, to: str = PROXY) -> None:
        iq_id = f"q{next(self.ids)}"
        self.pending[iq_id] = time.monotonic()
        self.sent_wall[iq_id] = time.time()
        self.tally.sent += 1
        self.client.send(f"<iq type='get' id='{iq_id}' to='{to}'>{payload}</iq>")

    def on_top(self, top: Top) -> None:
        if top.name != "iq":
            return
        iq_id = top.attrs.get("id", "")
        sent = self.pending.pop(iq_id, None)
        if sent is None:
            return
        self.answered_wall[iq_id] = time.time()
        delay = time.monotonic() - sent
        condition = None if top.attrs.get("type") == "result" else top.condition or "?"
        if condition is None:
            self.tally.results += 1
        else:
            self.tally.errors[condition] += 1
        if condition == "remote-server-timeout":
            self.tally.timeout_delays.append(delay)
        else:
            self.tally.other_delays.append(delay)
        if self.on_answer is not None:
            self.on_answer()


def target_handler(client: Client, *, answer: bool) -> Callable[[Top], None]:
    """A target resource: approves the proxy's subscription; answers IQs or reads them only."""

    def on_top(top: Top) -> None:
        attrs = top.attrs
        if top.name == "presence" and attrs.get("type") == "subscribe":
            client.send(f"<presence type='subscribed' to='{esc(attrs.get('from', ''))}'/>")
        elif answer and top.name == "iq" and attrs.get("type") in ("get", "set"):
            client.send(
                f"<iq type='result' id='{esc(attrs.get('id', ''))}' "
                f"to='{esc(attrs.get('from', ''))}'/>"
            )

    return on_top


class Bed:
    """The Prosody and what each load needs from it."""

    def __init__(self, server: Prosody, work: Path) -> None:
        self.server = server
        self.work = work
        self.port = server.c2s_port
        self.accounts = itertools.count(1)

    def account(self) -> tuple[str, str]:
        """A fresh target account and a fresh requester account."""
        n = next(self.accounts)
        self.server.register(f"svc{n}", "localhost", PASSWORD)
        self.server.register(f"user{n}", "localhost", PASSWORD)
        return f"svc{n}@localhost", f"user{n}@localhost"

    async def login(self, jid: str, **kwargs: object) -> Client:
        return await login("127.0.0.1", self.port, jid, PASSWORD, **kwargs)  # type: ignore[arg-type]

    async def target(
        self, bare: str, resource: str, *, answer: bool, directed: bool = False
    ) -> Client:
        """A resource of the target account, online. ``directed``: its presence goes to the
        proxy alone (no roster, no broadcast to the account's other resources, which with
        a thousand of them costs Prosody a million stanzas each way)."""
        # Prosody sends the subscription request only to resources that asked for the roster.
        client = await self.login(f"{bare}/{resource}", roster=not directed)
        client.on_top = target_handler(client, answer=answer)
        client.send(f"<presence to='{PROXY}'/>" if directed else "<presence/>")
        return client

    def proxy(
        self, target: str, tally: Tally, log_level: str = "info", **settings: object
    ) -> ProxyProcess:
        config = write_proxy_config(
            self.work / f"{tally.name}.toml",
            {
                "component": PROXY,
                "server": f"127.0.0.1:{self.server.component_port}",
                "secret": SECRET,
                "target": target,
                **settings,
            },
        )
        tally.request_timeout = float(settings.get("request_timeout", 30.0))  # type: ignore[arg-type]
        return ProxyProcess(config, extra_args=("--log-level", log_level))


class Memory:
    """Samples a process's VmRSS in a thread, for the figure before a load."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, rss_kib(self.pid))
            except OSError:
                return
            self._stop.wait(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


async def wait_answered(requesters: list[Requester], limit: float) -> None:
    deadline = time.monotonic() + limit
    while any(r.pending for r in requesters) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def measured(tally: Tally, proxy: ProxyProcess, load: Callable[[], Awaitable[None]]) -> Tally:
    """Run ``load`` against ``proxy``; fill in the memory and CPU figures; stop the proxy."""
    try:
        tally.rss_before_kib = rss_kib(proxy.pid)
        cpu = cpu_seconds(proxy.pid)
        memory = Memory(proxy.pid)
        await load()
        tally.cpu_seconds = cpu_seconds(proxy.pid) - cpu
        tally.rss_peak_kib = max(vm_hwm_kib(proxy.pid), memory.peak)
        memory.stop()
    finally:
        proxy.stop()
    return tally


async def close_all(clients: list[Client]) -> None:
    for client in clients:
        client.close()
    await asyncio.sleep(0.2)


# -- the loads ----------------------------------------------------------------------------------


async def headline(bed: Bed) -> Tally:
    """10 resources x 150 requests x 100 KB to a resource that reads but never answers."""
    tally = Tally("headline", "10 resources x 150 x 100 KB, target silent, request_timeout 8")
    target, user = bed.account()
    silent = await bed.target(target, "silent", answer=False)
    proxy = bed.proxy(target, tally, log_level="debug", request_timeout=8)
    await asyncio.to_thread(proxy.wait_for, "resource.online")
    requesters = [Requester(await bed.login(f"{user}/r{n}"), tally) for n in range(10)]
    payload = f"<q xmlns='urn:example:abuse'>{'x' * 100_000}</q>"

    async def load() -> None:
        for _ in range(150):
            for requester in requesters:
                requester.send(payload)
        await wait_answered(requesters, 240)

    await measured(tally, proxy, load)
    tally.notes.append(split_lateness(proxy.lines, requesters, 8.0))
    await close_all([silent, *(r.client for r in requesters)])
    return tally


_LOGGED = re.compile(r"^(\S+ \S+) DEBUG (recv|send) iq type=(\S+) id=(\S+) from=(\S+) to=(\S+)$")


def _stamp(text: str) -> float:
    return datetime.datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def split_lateness(lines: list[str], requesters: list[Requester], timeout: float) -> str:
    """Where the time of a timeout answer went, from the proxy's debug log (its clock and ours
    are the same wall clock): server lag in (sent to read by the proxy), the proxy's lateness
    (written minus its deadline, read + request_timeout), server lag out (written to
    received)."""
    read: dict[tuple[str, str], float] = {}
    written: dict[tuple[str, str], float] = {}
    for line in lines:
        m = _LOGGED.match(line)
        if m is None:
            continue
        stamp, way, kind, iq_id, sender, to = m.groups()
        if way == "recv" and kind == "get":
            read[(sender, iq_id)] = _stamp(stamp)
        elif way == "send" and kind == "error":
            written[(to, iq_id)] = _stamp(stamp)
    lag_in: list[float] = []
    proxy_late: list[float] = []
    lag_out: list[float] = []
    for r in requesters:
        for iq_id, answered in r.answered_wall.items():
            key = (r.client.jid, iq_id)
            if key in read and key in written:
                lag_in.append(read[key] - r.sent_wall[iq_id])
                proxy_late.append(written[key] - (read[key] + timeout))
                lag_out.append(answered - written[key])
    if not proxy_late:
        return "`headline`: no debug lines to split the lateness with"

    def fig(values: list[float]) -> str:
        return f"{statistics.median(values):.2f} / {max(values):.2f} s"

    return (
        f"`headline`, where a timeout answer's time went (p50 / max, from the proxy's debug log "
        f"for {len(proxy_late):,} answers): Prosody routing the request to the proxy "
        f"{fig(lag_in)}; the proxy writing the answer after its deadline {fig(proxy_late)} "
        f"(the log's clock has 1 ms steps); Prosody routing the answer to the requester "
        f"{fig(lag_out)}. Requests the target never got (queued past their timeout while "
        f"Prosody was slow to read): {proxy_count(lines, 'send.expired')}"
    )


def proxy_count(lines: list[str], counter: str) -> str:
    """A counter from the proxy's last status line (logged at stop), or '?'."""
    for line in reversed(lines):
        m = re.search(re.escape(counter) + r"=(\d+)", line)
        if m:
            return f"{int(m.group(1)):,}"
    return "0"


async def resources(bed: Bed) -> Tally:
    """The target announces 1,030 resources; 200 requests follow."""
    count = 1_030
    tally = Tally("resources", f"target announces {count} resources (MAX_RESOURCES 1,024)")
    target, user = bed.account()
    first = await bed.target(target, "r0000", answer=True)
    proxy = bed.proxy(target, tally)
    await asyncio.to_thread(proxy.wait_for, "resource.online")
    clients = [first]

    async def load() -> None:
        for start in range(1, count, 100):
            batch = range(start, min(start + 100, count))
            clients.extend(
                await asyncio.gather(
                    *(bed.target(target, f"r{n:04}", answer=True, directed=True) for n in batch)
                )
            )
        await asyncio.sleep(2)  # their presence reaches the proxy
        requester = Requester(await bed.login(f"{user}/u"), tally)
        clients.append(requester.client)
        for _ in range(200):
            requester.send("<q xmlns='urn:example:abuse'/>")
        await wait_answered([requester], 60)

    await measured(tally, proxy, load)
    online = proxy.count("resource.online")
    ignored = proxy.count("resource.ignored")
    sample = next((line for line in proxy.lines if "resource.ignored" in line), "")
    tally.notes.append(
        f"`resources`: {online} resources logged online by the proxy, {ignored} ignored "
        f"(`ignored.too_many_resources`); the log line: `{sample.split(' ', 2)[-1]}`"
    )
    await close_all(clients)
    return tally


async def churn(bed: Bed, seconds: float = 10.0) -> Tally:
    """One resource toggling its presence as fast as it can; requests keep flowing."""
    tally = Tally("churn", f"one resource's presence toggled for {seconds:.0f} s, 10 in flight")
    target, user = bed.account()
    steady = await bed.target(target, "steady", answer=True)
    proxy = bed.proxy(target, tally)
    await asyncio.to_thread(proxy.wait_for, "resource.online")
    churner = await bed.target(target, "churner", answer=True)
    requester = Requester(await bed.login(f"{user}/u"), tally)
    payload = "<q xmlns='urn:example:abuse'/>"
    toggles = 0

    async def load() -> None:
        nonlocal toggles
        stop = time.monotonic() + seconds
        requester.on_answer = lambda: requester.send(payload) if time.monotonic() < stop else None
        for _ in range(10):
            requester.send(payload)
        while time.monotonic() < stop:
            for priority in range(100):
                churner.send(f"<presence><priority>{priority}</priority></presence>")
                churner.send("<presence type='unavailable'/>")
            toggles += 200
            await asyncio.sleep(0)
            transport = churner.transport
            while transport is not None and transport.get_write_buffer_size() > 64 * 1024:
                await asyncio.sleep(0.001)
        churner.send("<presence/>")
        requester.on_answer = None
        await wait_answered([requester], 60)

    await measured(tally, proxy, load)
    seen = proxy.count("resource.offline")
    tally.notes.append(
        f"`churn`: {toggles:,} presence stanzas written in {seconds:.0f} s "
        f"({toggles / seconds:,.0f}/s offered); the proxy saw the resource go offline "
        f"{seen:,} times (one `resource.offline` and one `resource.online` info line each) and "
        f"used {tally.cpu_seconds:.1f} s of CPU; Prosody, routing the presence, was the "
        "bottleneck for the requests"
    )
    await close_all([steady, churner, requester.client])
    return tally


async def fresh(bed: Bed) -> Tally:
    """One account, 20 fresh resource names, 1,100 requests of 1 KB each, target silent."""
    sessions, each = 20, 1_100
    tally = Tally("fresh", f"1 account, {sessions} fresh resources x {each:,} x 1 KB, silent")
    target, user = bed.account()
    silent = await bed.target(target, "silent", answer=False)
    proxy = bed.proxy(target, tally, request_timeout=8)
    await asyncio.to_thread(proxy.wait_for, "resource.online")
    requesters = [
        Requester(await bed.login(f"{user}/fresh-{n}-{time.time_ns()}"), tally)
        for n in range(sessions)
    ]
    payload = f"<q xmlns='urn:example:abuse'>{'y' * 1_000}</q>"

    async def load() -> None:
        for requester in requesters:
            for _ in range(each):
                requester.send(payload)
        await wait_answered(requesters, 120)

    await measured(tally, proxy, load)
    held = len(tally.timeout_delays)
    tally.notes.append(
        f"`fresh`: {held:,} requests were held until their timeout (the rate burst and "
        f"max_per_requester are the account's, shared by its fresh resources), the rest refused "
        f"at once; "
        f"peak RSS {tally.rss_peak_kib / 1024:.0f} MiB"
    )
    await close_all([silent, *(r.client for r in requesters)])
    return tally


LOADS: dict[str, Callable[[Bed], Awaitable[Tally]]] = {
    "headline": headline,
    "churn": churn,
    "fresh": fresh,
    "resources": resources,
}

# -- the report ---------------------------------------------------------------------------------

HEADER = (
    "| load | sent | result | error (by condition) | never answered | RSS before | "
    "peak RSS (growth) | timeout answer late, p50 / max (s) | other answers' round trip, "
    "p50 / max (s) |"
)


def row(t: Tally) -> str:
    errors = ", ".join(f"{c} {n:,}" for c, n in sorted(t.errors.items())) or "-"
    growth = (t.rss_peak_kib - t.rss_before_kib) / 1024
    return (
        f"| {t.name}: {t.what} | {t.sent:,} | {t.results:,} | {errors} | {t.unanswered:,} | "
        f"{t.rss_before_kib / 1024:.0f} MiB | {t.rss_peak_kib / 1024:.0f} MiB "
        f"(+{growth:.0f}) | {t.lateness()} | {t.other_delay()} |"
    )


def section(tallies: list[Tally], command: str, took: float) -> str:
    today = datetime.date.today().isoformat()
    lines = [
        SECTION_START,
        "## Hostile loads (`just abuse`)",
        "",
        f"Measured {today} with `{command}` ({took:.0f} s), against Prosody on loopback, each "
        "load with a fresh proxy (default config unless the load says). *Late* is how long "
        "after its deadline (sent + request_timeout) a `remote-server-timeout` reached the "
        "requester; the proxy's own deadline starts when it reads the request, so that includes "
        "the time Prosody took to route the request to it (which a refusal's round trip shows). "
        "RSS is the proxy's (VmRSS before the load, VmHWM at the end).",
        "",
        HEADER,
        "|" + "---|" * 9,
        *(row(t) for t in tallies),
        "",
        *(f"- {note}" for t in tallies for note in t.notes),
        "",
        *(f"    {line}" for line in machine_description()),
        SECTION_END,
    ]
    return "\n".join(lines) + "\n"


def write_section(docs: Path, text: str) -> None:
    """Put ``text`` in place of the previous section in docs/benchmarks.md (or at its end)."""
    path = docs / "benchmarks.md"
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    pattern = re.compile(re.escape(SECTION_START) + ".*?" + re.escape(SECTION_END) + "\n?", re.S)
    if pattern.search(old):
        new = pattern.sub(lambda _: text, old)
    else:
        new = old.rstrip("\n") + "\n\n" + text
    path.write_text(new, encoding="utf-8")


async def run(names: list[str], work: Path) -> list[Tally]:
    server = Prosody(work / "prosody", components={PROXY: SECRET}, log_level="warn")
    server.start()
    try:
        bed = Bed(server, work)
        tallies = []
        for name in names:
            started = time.monotonic()
            print(f"{name}: running", flush=True)
            tally = await LOADS[name](bed)
            print(f"{name}: {time.monotonic() - started:.0f} s\n  {row(tally)}", flush=True)
            tallies.append(tally)
        return tallies
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loads", default=",".join(LOADS), help="comma separated, in order")
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    names = [n for n in args.loads.split(",") if n]
    unknown = [n for n in names if n not in LOADS]
    if unknown:
        parser.error(f"unknown loads {unknown}; known: {list(LOADS)}")
    if not prosody_available():
        print("abuse: prosody is not installed", file=sys.stderr)
        return 2
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="client-proxy-abuse-") as tmp:
        tallies = asyncio.run(run(names, Path(tmp)))
    took = time.monotonic() - started
    command = "just abuse" + (f" --loads {args.loads}" if args.loads != ",".join(LOADS) else "")
    text = section(tallies, command, took)
    print()
    print(text)
    if args.write:
        write_section(args.docs, text)
        print(f"wrote {args.docs / 'benchmarks.md'}")
    lost = sum(t.unanswered for t in tallies)
    if lost:
        print(f"abuse: {lost} request(s) never answered", file=sys.stderr)
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
