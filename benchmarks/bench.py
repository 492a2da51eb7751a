"""`just bench`: what the extra hop through client-proxy costs, against a real Prosody.

It starts a throwaway Prosody on loopback, the target account with two resources answering IQs
(`benchmarks._target`, its own process), the proxies (`client-proxy run`, each its own process
serving a component domain of its own: `proxy/default` with the default config, which runs on
uvloop where uvloop is installed, and `proxy/asyncio` with `event_loop = "asyncio"`) and a load
generator (`benchmarks._loadgen`, its own process). Then, for 1, 10 and 100 requests in flight,
it sends the same workload (an IQ get with a ~120 byte payload, answered with a small result)
directly to the target's resources and through each proxy, interleaved in one run (direct,
proxy/default, proxy/asyncio, direct, ...). For each path and level: requests per second,
round-trip latency p50/p99/max as the load generator sees it, CPU seconds per 1,000 requests of
each process (utime + stime from /proc/PID/stat, read before and after each phase), and how many
times per request the path's proxy was woken (voluntary context switches, /proc/PID/status).

The cap: a proxied request costs Prosody more than a direct one (it routes the request and the
reply twice), so when Prosody is the bottleneck, proxied throughput cannot exceed
direct throughput x (Prosody CPU per direct request / Prosody CPU per proxied request). The
share of the cap reached works out as Prosody's CPU use per second proxied / direct.
Targets, ratios from this run:

- proxied throughput at 100 in flight >= 0.95 x the cap x direct throughput;
- the proxy's CPU per request <= 0.4 x Prosody's CPU per proxied request;
- p50 latency added at 1 in flight <= 0.3 ms;
- with `--proxies default,metrics`: the proxy's CPU per request with `metrics_listen` set
  (proxy/metrics) <= 1.05 x without (proxy/default), in the same interleaved rounds.

Before and after: `--baseline REV` also runs the proxy as of git revision REV (its `src/`
exported beside this checkout, on each event loop: `base/asyncio`, `base/uvloop`) in the same
run, and keeps what it compares in docs/benchmarks-before-after.json. Runs without --baseline
copy that section into benchmarks.md as it was measured (with its command and date).

Profiling: `--profile FILE` runs py-spy on one proxy (`--profile-path`, default proxy/default)
during one more phase at `--profile-inflight` requests in flight (default 100; at 1 every request
costs the proxy two wake-ups of its own); `--profile-native` adds the C frames (event loop,
parser, system calls).

It prints the table, writes it to docs/benchmarks.md and (with matplotlib, `pip install -e
'.[bench]'`) a latency-vs-throughput plot to docs/benchmarks.png.
"""

from __future__ import annotations

import argparse
import array
import datetime
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from client_proxy.testing.prosody import Prosody, free_port, prosody_available

from . import abuse
from ._procs import (
    Helper,
    ProxyProcess,
    Revision,
    cpu_seconds,
    machine_description,
    wakeups,
    write_proxy_config,
)

SECRET = "bench-secret"
PASSWORD = "bench-password"
TARGET = "svc@localhost"
RESOURCES = ("r1", "r2")
REQUESTER = "user@localhost/bench"
LEVELS = (1, 10, 100)
PROCESSES = ("prosody", "proxy", "target", "loadgen")
ROOT = Path(__file__).resolve().parent.parent
#: What --baseline keeps for later runs (beside benchmarks.md).
BEFORE_AFTER = "benchmarks-before-after.json"

CAP_SHARE = 0.95
PROXY_CPU_SHARE = 0.4
ADDED_P50_MS = 0.3
#: Metrics on (`metrics_listen`) may cost the proxy at most this much more CPU per request.
METRICS_CPU_RATIO = 1.05


@dataclass(frozen=True)
class Proxy:
    """One proxy process: its path in the tables, its component domain, its `event_loop` (None:
    left to the default) and whether it runs the --baseline revision's code."""

    path: str
    domain: str
    event_loop: str | None
    baseline: bool = False
    #: Serve /metrics and /healthz (`metrics_listen`), to measure what counting costs.
    metrics: bool = False
    #: CLIENT_PROXY_CORE for it (None: left to the default, the compiled core where built).
    core: str | None = None

    @property
    def loop(self) -> str:
        """The event loop it runs on."""
        if self.event_loop is not None:
            return self.event_loop
        if self.baseline:
            return "the revision's default"
        return "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"

    @property
    def config(self) -> str:
        if self.metrics:
            return "default, with metrics_listen"
        if self.core is not None:
            return f"default, CLIENT_PROXY_CORE={self.core}"
        return "default" if self.event_loop is None else f'event_loop = "{self.event_loop}"'


#: The proxies --proxies can name (this checkout's code), and --baseline-proxies (REV's).
PROXIES = {
    "default": Proxy("proxy/default", "proxy.localhost", None),
    "asyncio": Proxy("proxy/asyncio", "proxy-aio.localhost", "asyncio"),
    "uvloop": Proxy("proxy/uvloop", "proxy-uv.localhost", "uvloop"),
    # The default config with metrics on: compare its proxy CPU with proxy/default's.
    "metrics": Proxy("proxy/metrics", "proxy-metrics.localhost", None, metrics=True),
    # The default config on the pure core: what the compiled core saves.
    "python": Proxy("proxy/python", "proxy-py.localhost", None, core="python"),
}
BASELINE_PROXIES = {
    "default": Proxy("base/default", "base.localhost", None, baseline=True),
    "asyncio": Proxy("base/asyncio", "base-aio.localhost", "asyncio", baseline=True),
    "uvloop": Proxy("base/uvloop", "base-uv.localhost", "uvloop", baseline=True),
}


@dataclass
class Cell:
    """One path at one level, summed over the rounds."""

    path: str
    inflight: int
    requests: int = 0
    elapsed: float = 0.0
    latencies: array.array[float] = field(default_factory=lambda: array.array("d"))
    cpu: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    unanswered: int = 0
    #: Times the path's proxy was woken.
    wakeups: int = 0

    @property
    def rate(self) -> float:
        return self.requests / self.elapsed if self.elapsed else 0.0

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    def cpu_per_1k(self, process: str) -> float:
        return self.cpu[process] / self.requests * 1000 if self.requests else float("nan")

    @property
    def wakeups_per_request(self) -> float:
        return self.wakeups / self.requests if self.requests else float("nan")


@dataclass
class Results:
    levels: tuple[int, ...]
    paths: list[str]
    proxies: dict[str, Proxy]
    cells: dict[tuple[str, int], Cell]
    command: str
    machine: list[str]
    settings: str
    profile: str | None = None
    baseline: Revision | None = None

    @property
    def proxied(self) -> list[str]:
        return [p for p in self.paths if p != "direct"]

    def cell(self, path: str, inflight: int) -> Cell:
        return self.cells[(path, inflight)]


# -- running -----------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> Results:
    machine = machine_description()
    chosen = [PROXIES[name] for name in args.proxies]
    if args.baseline:
        chosen += [BASELINE_PROXIES[name] for name in args.baseline_proxies]
    proxies = {proxy.path: proxy for proxy in chosen}
    paths = ["direct", *proxies]
    if args.profile and args.profile_path not in proxies:
        raise SystemExit(f"bench: --profile-path {args.profile_path} is not one of {list(proxies)}")
    with tempfile.TemporaryDirectory(prefix="client-proxy-bench-") as tmp:
        work = Path(tmp)
        revision = None
        if args.baseline:
            revision = Revision(args.baseline, work / "baseline", ROOT)
            print(f"baseline: {revision.rev} = {revision.commit[:12]} {revision.subject}")
        server = Prosody(
            work / "prosody",
            components={proxy.domain: SECRET for proxy in proxies.values()},
            log_level="warn",
        )
        for account in (TARGET, REQUESTER.partition("/")[0]):
            server.register(account.split("@")[0], "localhost", PASSWORD)
        helpers: list[Helper] = []
        processes: dict[str, ProxyProcess] = {}
        server.start()
        try:
            assert server.process is not None
            address = ("127.0.0.1", str(server.c2s_port))
            approve = ",".join(proxy.domain for proxy in proxies.values())
            target = Helper("benchmarks._target", *address, TARGET, PASSWORD, approve, *RESOURCES)
            helpers.append(target)
            if target.read() != "ready":
                raise RuntimeError("the target did not come online")
            for path, proxy in proxies.items():
                config = write_proxy_config(
                    work / f"{path.replace('/', '-')}.toml",
                    {
                        "component": proxy.domain,
                        "server": f"127.0.0.1:{server.component_port}",
                        "secret": SECRET,
                        "target": TARGET,
                        "seed": 1,
                        "event_loop": proxy.event_loop,  # None: left out
                        # One requester stands for many users here: no per-requester limit.
                        "rate_limit": 0,
                        "metrics_listen": f"127.0.0.1:{free_port()}" if proxy.metrics else None,
                    },
                )
                processes[path] = ProxyProcess(
                    config,
                    extra_args=("--log-level", "info"),
                    revision=revision if proxy.baseline else None,
                    env=None if proxy.core is None else {"CLIENT_PROXY_CORE": proxy.core},
                )
            for process in processes.values():
                process.wait_for("resource.online", count=len(RESOURCES))
            loadgen = Helper("benchmarks._loadgen", *address, REQUESTER, PASSWORD)
            helpers.append(loadgen)
            if loadgen.read() != "ready":
                raise RuntimeError("the load generator did not log in")
            pids = {
                "prosody": server.process.pid,
                "target": target.pid,
                "loadgen": loadgen.pid,
                **{path: process.pid for path, process in processes.items()},
            }
            targets = {"direct": [f"{TARGET}/{r}" for r in RESOURCES]}
            targets.update({path: [proxy.domain] for path, proxy in proxies.items()})
            out = work / "latencies.bin"

            def counters() -> dict[str, float]:
                now = {name: cpu_seconds(pid) for name, pid in pids.items()}
                now.update({f"{path}:wakeups": wakeups(pids[path]) for path in processes})
                return now

            def phase(
                path: str, inflight: int, duration: float
            ) -> tuple[dict[str, Any], Counter[str], int]:
                before = counters()
                command = {
                    "targets": targets[path],
                    "inflight": inflight,
                    "duration": duration,
                    "out": str(out),
                }
                result = json.loads(loadgen.ask(json.dumps(command), timeout=duration + 90))
                after = counters()
                used = Counter(
                    {name: after[name] - before[name] for name in PROCESSES if name in pids}
                )
                # The proxy column: the proxy this path goes through (direct: all of them,
                # which should be next to nothing).
                mine = [path] if path in processes else list(processes)
                used["proxy"] = sum(after[p] - before[p] for p in mine)
                woken = sum(int(after[f"{p}:wakeups"] - before[f"{p}:wakeups"]) for p in mine)
                return result, used, woken

            print(f"warming up ({args.warmup:g} s per path) ...", flush=True)
            for path in paths:
                phase(path, 10, args.warmup)

            cells = {(p, n): Cell(p, n) for n in args.levels for p in paths}
            for inflight in args.levels:
                for rnd in range(args.rounds):
                    for path in paths:
                        result, used, woken = phase(path, inflight, args.duration)
                        cell = cells[(path, inflight)]
                        cell.requests += result["requests"]
                        cell.elapsed += result["elapsed"]
                        cell.unanswered += result["unanswered"]
                        cell.errors.update(result["errors"])
                        cell.cpu.update(used)
                        cell.wakeups += woken
                        latencies = array.array("d")
                        latencies.frombytes(out.read_bytes())
                        cell.latencies.extend(latencies)
                        rate = result["requests"] / result["elapsed"] if result["elapsed"] else 0
                        print(
                            f"  round {rnd + 1}/{args.rounds} {path:>13} x{inflight:<3}: "
                            f"{result['requests']:>7,} requests, {rate:>8,.0f} req/s",
                            flush=True,
                        )

            profile = None
            if args.profile:
                path = args.profile_path
                profile = _profile(
                    processes[path].pid,
                    Path(args.profile),
                    args.profile_duration,
                    lambda: phase(path, args.profile_inflight, args.profile_duration),
                    f"{path} at {args.profile_inflight} in flight",
                    rate=args.profile_rate,
                    native=args.profile_native,
                )
        finally:
            for helper in helpers:
                helper.stop()
            for process in processes.values():
                process.stop()
            server.stop()
    settings = (
        f"{args.rounds} round(s) of {args.duration:g} s per path and level, interleaved "
        f"({', '.join(paths)}, {paths[0]}, ...)"
    )
    return Results(
        args.levels, paths, proxies, cells, _command(), machine, settings, profile, revision
    )


def _profile(
    pid: int,
    path: Path,
    duration: float,
    phase: Callable[[], object],
    what: str,
    *,
    rate: int = 100,
    native: bool = False,
) -> str:
    """py-spy on a proxy during one more proxied phase (not in the table)."""
    fmt = (
        "raw" if path.suffix == ".txt" else "speedscope" if path.suffix == ".json" else "flamegraph"
    )
    beside = Path(sys.executable).with_name("py-spy")
    spy = subprocess.Popen(
        [
            str(beside) if beside.exists() else "py-spy",
            "record",
            "-p",
            str(pid),
            "-d",
            str(int(duration)),
            "-f",
            fmt,
            "-o",
            str(path),
            "-r",
            str(rate),
            *(["--native"] if native else []),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    time.sleep(0.5)
    phase()
    spy.wait(duration + 30)
    native_note = ", with C frames" if native else ""
    return f"py-spy profile of {what} ({fmt}, {rate} Hz{native_note}) written to {path}"


def _command() -> str:
    args = shlex.join(sys.argv[1:])
    return f"just bench {args}".strip()


# -- reporting ---------------------------------------------------------------------------------


def targets(results: Results, path: str) -> list[tuple[str, float, str, bool]]:
    """(what, measured, target, met) for each target, for one proxied path."""
    top = max(results.levels)
    direct, proxied = results.cell("direct", top), results.cell(path, top)
    cap = direct.cpu_per_1k("prosody") / proxied.cpu_per_1k("prosody")
    throughput = proxied.rate / direct.rate / cap
    proxy_cpu = proxied.cpu_per_1k("proxy") / proxied.cpu_per_1k("prosody")
    lowest = min(results.levels)
    p50 = results.cell(path, lowest).percentile(0.5)
    added = p50 - results.cell("direct", lowest).percentile(0.5)
    return [
        (
            f"cap = Prosody CPU per direct / per proxied request, at {top} in flight",
            cap,
            "",
            True,
        ),
        (
            f"throughput at {top} in flight, proxied/direct, as a share of the cap",
            throughput,
            f">= {CAP_SHARE}",
            throughput >= CAP_SHARE,
        ),
        (
            f"proxy CPU / Prosody CPU per proxied request, at {top} in flight",
            proxy_cpu,
            f"<= {PROXY_CPU_SHARE}",
            proxy_cpu <= PROXY_CPU_SHARE,
        ),
        (
            f"p50 latency added at {lowest} in flight, ms",
            added,
            f"<= {ADDED_P50_MS}" if lowest == 1 else "",
            added <= ADDED_P50_MS,
        ),
    ]


def table_rows(results: Results) -> list[list[str]]:
    rows = []
    for inflight in results.levels:
        for path in results.paths:
            cell = results.cell(path, inflight)
            problems = sum(cell.errors.values()) + cell.unanswered
            rows.append(
                [
                    path,
                    str(inflight),
                    f"{cell.requests:,}",
                    f"{cell.rate:,.0f}",
                    f"{cell.percentile(0.5):.3f}",
                    f"{cell.percentile(0.99):.3f}",
                    f"{cell.percentile(1.0):.2f}",
                    *(f"{cell.cpu_per_1k(p):.3f}" for p in PROCESSES),
                    "" if path == "direct" else f"{cell.wakeups_per_request:.2f}",
                    str(problems),
                ]
            )
    return rows


HEADER = [
    "path",
    "in flight",
    "requests",
    "req/s",
    "p50 ms",
    "p99 ms",
    "max ms",
    "Prosody",
    "proxy",
    "target",
    "load gen",
    "proxy wake-ups",
    "errors",
]


def text_table(results: Results) -> str:
    rows = [HEADER, *table_rows(results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def metrics_cost(results: Results) -> list[tuple[int, float]]:
    """With proxy/metrics and proxy/default in the run: at each level, proxy/metrics' proxy CPU
    per request over proxy/default's (measured in the same interleaved rounds)."""
    if not {"proxy/metrics", "proxy/default"} <= set(results.paths):
        return []
    return [
        (
            n,
            results.cell("proxy/metrics", n).cpu_per_1k("proxy")
            / results.cell("proxy/default", n).cpu_per_1k("proxy"),
        )
        for n in results.levels
    ]


def target_lines(results: Results) -> list[str]:
    lines = []
    for path in results.proxied:
        for what, value, goal, met in targets(results, path):
            verdict = "" if not goal else f"  (target {goal}: {'met' if met else 'NOT met'})"
            lines.append(f"{path}: {what}: {value:.3f}{verdict}")
    for inflight, ratio in metrics_cost(results):
        met = "met" if ratio <= METRICS_CPU_RATIO else "NOT met"
        lines.append(
            f"metrics on: proxy CPU per request, proxy/metrics / proxy/default, at {inflight} in "
            f"flight: {ratio:.3f}  (target <= {METRICS_CPU_RATIO}: {met})"
        )
    return lines


# -- before and after --------------------------------------------------------------------------


def _this_checkout() -> dict[str, Any]:
    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False
        )
        return done.stdout.strip()

    changed = bool(git("status", "--porcelain", "--", "src"))
    return {
        "commit": git("rev-parse", "HEAD"),
        "subject": git("log", "-1", "--format=%s"),
        "uncommitted": changed,
    }


def before_after(results: Results) -> dict[str, Any]:
    """What --baseline compares, from this run: one row per proxy, before then after."""
    assert results.baseline is not None
    lowest, top = min(results.levels), max(results.levels)
    direct = results.cell("direct", lowest)
    rows = []
    then = results.baseline.default_event_loop
    for path in sorted(results.proxied, key=lambda p: (not p.startswith("base/"), p)):
        proxy = results.proxies[path]
        config = proxy.config
        if proxy.baseline and proxy.event_loop is not None and proxy.event_loop == then:
            config += " (the default then)"
        low, high = results.cell(path, lowest), results.cell(path, top)
        per_request = low.cpu_per_1k("proxy") * 1000
        checks = {what: value for what, value, _, _ in targets(results, path)}
        share = next(v for w, v in checks.items() if w.startswith("throughput"))
        rows.append(
            {
                "path": path,
                "code": "before" if proxy.baseline else "after",
                "config": config,
                "loop": proxy.loop,
                "added_p50_ms": low.percentile(0.5) - direct.percentile(0.5),
                "proxy_us_per_request_low": per_request,
                "wakeups_per_request_low": low.wakeups_per_request,
                "proxy_us_per_wakeup_low": per_request / low.wakeups_per_request,
                "proxy_us_per_request_top": high.cpu_per_1k("proxy") * 1000,
                "cap_share_top": share,
            }
        )
    return {
        "measured": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": results.command,
        "settings": results.settings,
        "machine": results.machine,
        "levels": [lowest, top],
        "direct_p50_ms_low": direct.percentile(0.5),
        "before": {
            "rev": results.baseline.rev,
            "commit": results.baseline.commit,
            "subject": results.baseline.subject,
        },
        "after": _this_checkout(),
        "rows": rows,
    }


def before_after_lines(data: dict[str, Any], fresh: bool) -> list[str]:
    lowest, top = data["levels"]
    before, after = data["before"], data["after"]
    after_name = f"`{after['commit'][:7]}`" + (
        " with uncommitted changes" if after["uncommitted"] else ""
    )
    where = (
        "in the run above"
        if fresh
        else f"by an earlier run (kept in docs/{BEFORE_AFTER}; the table above may be newer)"
    )
    header = [
        "code",
        "config",
        "event loop",
        f"p50 added at {lowest} in flight, ms",
        f"proxy CPU per request at {lowest}, µs",
        f"proxy wake-ups per request at {lowest}",
        f"proxy CPU per wake-up at {lowest}, µs",
        f"proxy CPU per request at {top}, µs",
        f"throughput at {top}, share of the cap",
    ]
    rows = [
        [
            f"before (`{before['commit'][:7]}`)" if row["code"] == "before" else "after",
            row["config"],
            row["loop"],
            f"{row['added_p50_ms']:.3f}",
            f"{row['proxy_us_per_request_low']:.0f}",
            f"{row['wakeups_per_request_low']:.2f}",
            f"{row['proxy_us_per_wakeup_low']:.0f}",
            f"{row['proxy_us_per_request_top']:.0f}",
            f"{row['cap_share_top']:.3f}",
        ]
        for row in data["rows"]
    ]
    text = (
        f"Measured {where} on {data['measured']}: `{data['command']}` ({data['settings']}). "
        f"Before: `{before['commit'][:7]}` ({before['subject']}), run from a git export beside "
        f"the checkout; after: {after_name} ({after['subject']}). Both against the same "
        "Prosody, interleaved, so the figures compare like with like; `p50 added` is over "
        f"direct in the same run ({data['direct_p50_ms_low']:.3f} ms at {lowest} in flight). "
        "The CPU per wake-up is the proxy's CPU per request over the times it was woken per "
        "request."
    )
    return [
        "## Before and after",
        "",
        textwrap.fill(text, 95, break_long_words=False, break_on_hyphens=False),
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i < 3 else "---:" for i in range(len(header))) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
    ]


def kept_sections(page: str) -> str:
    """The sections of docs/benchmarks.md that other scripts write (`just abuse`), to keep."""
    start, end = abuse.SECTION_START, abuse.SECTION_END
    kept = re.findall(re.escape(start) + ".*?" + re.escape(end), page, re.S)
    return "".join(f"\n{section}\n" for section in kept)


def _core_of(proxy: Proxy) -> str:
    """Which core a proxy of this checkout runs (client_proxy.shell.corelib decides, in it)."""
    from client_proxy.shell.corelib import CoreUnavailable, choose  # noqa: PLC0415

    try:
        core, _ = choose(proxy.core or os.environ.get("CLIENT_PROXY_CORE"))
    except CoreUnavailable:
        return "no core: CLIENT_PROXY_CORE is wrong"
    return "the compiled core" if core.__name__.endswith(".compiled_core") else "the pure core"


def markdown(
    results: Results, plot: str | None, compared: tuple[dict[str, Any], bool] | None
) -> str:
    rows = [HEADER, *table_rows(results)]

    def described(path: str, proxy: Proxy) -> str:
        plain = proxy.event_loop is None and proxy.core is None
        config = "the default config" if plain else f"`{proxy.config}`"
        if proxy.baseline:
            assert results.baseline is not None
            return f"`{path}` ({config}, revision `{results.baseline.commit[:7]}`)"
        return f"`{path}` ({config}, on {proxy.loop}, {_core_of(proxy)})"

    paths = ", ".join(described(path, proxy) for path, proxy in results.proxies.items())
    paragraphs = [
        "Written by `just bench` (`benchmarks/bench.py`); rerun it to refresh this page. What it "
        "measures: the same workload (an IQ get with a ~120 byte payload, answered with a small "
        "result) sent by one requester directly to the target's two resources (`direct`) and "
        "through client-proxy, against a real Prosody on loopback, at 1, 10 and 100 requests in "
        "flight, interleaved in one run. There is one proxy process per configuration, each "
        f"serving a component domain of its own: {paths}. Latency is the round trip the "
        "requester sees. The CPU columns are CPU seconds per 1,000 requests of each process "
        "(utime + stime from /proc; the target and the load generator each run in a process of "
        "their own; `proxy` is the path's own proxy). `proxy wake-ups` counts the times per "
        "request the path's proxy was woken (voluntary context switches): at 1 in flight it is "
        "woken for the request and again for the reply, and what it costs is paid per wake-up. "
        "`errors` counts error replies and requests left unanswered (expected 0).",
        "The machine is shared with other work, so absolute figures move from run to run; the "
        "ratios below compare paths measured in the same run. The throughput share of the cap "
        "works out as Prosody's CPU use per second proxied / direct: 1.0 means the proxy never "
        "left Prosody waiting. To see where the proxy spends its time, `just bench --profile "
        "proxy.svg` adds a py-spy flame graph of one proxied phase at 100 in flight "
        "(`--profile-inflight 1` for the cost of a wake-up, `--profile-native` for the C "
        "frames); `just bench --baseline REV` measures revision REV's proxy in the same run.",
    ]
    out = ["# Benchmarks", ""]
    for paragraph in paragraphs:
        out += [textwrap.fill(paragraph, 95, break_long_words=False, break_on_hyphens=False), ""]
    out += [
        "Machine:",
        "",
        *(f"- {line}" for line in results.machine),
        "",
        f"Command: `{results.command}` ({results.settings}).",
        "",
        "| " + " | ".join(rows[0]) + " |",
        "|" + "|".join("---" if i < 1 else "---:" for i in range(len(HEADER))) + "|",
        *("| " + " | ".join(row) + " |" for row in rows[1:]),
        "",
        "Against the targets (ratios from this run):",
        "",
        *(f"- {line}" for line in target_lines(results)),
        "",
    ]
    if plot:
        out += [f"![latency against throughput]({plot})", ""]
    if compared is not None:
        out += before_after_lines(*compared)
    return "\n".join(out)


def draw(results: Results, path: Path) -> bool:
    """Latency (p50 and p99) against throughput for each path; False without matplotlib."""
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")
    for path_name, color in zip(results.paths, colors, strict=False):
        cells = [results.cell(path_name, n) for n in results.levels]
        rates = [c.rate for c in cells]
        for q, style, label in ((0.5, "-o", "p50"), (0.99, "--s", "p99")):
            ax.plot(
                rates,
                [c.percentile(q) for c in cells],
                style,
                color=color,
                label=f"{path_name} {label}",
            )
        for c in cells:
            ax.annotate(
                f"{c.inflight}",
                (c.rate, c.percentile(0.5)),
                textcoords="offset points",
                xytext=(4, -12),
                fontsize=8,
                color=color,
            )
    ax.set_xlabel("throughput (requests/s)")
    ax.set_ylabel("round-trip latency (ms)")
    ax.set_yscale("log")
    ax.set_title("client-proxy on Prosody: latency against throughput (labels: in flight)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _names(choices: dict[str, Proxy]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        names = [x for x in text.split(",") if x]
        unknown = [x for x in names if x not in choices]
        if unknown:
            raise argparse.ArgumentTypeError(
                f"{unknown[0]!r} is not one of {', '.join(choices)} (comma separated)"
            )
        return names

    return parse


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--duration", type=float, default=2.5, help="seconds per phase (default 2.5)"
    )
    parser.add_argument(
        "--rounds", type=int, default=4, help="rounds of all the paths per level (default 4)"
    )
    parser.add_argument(
        "--levels",
        type=lambda text: tuple(int(x) for x in text.split(",") if x),
        default=LEVELS,
        help="requests in flight to measure, comma separated (default 1,10,100)",
    )
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds per path (default 2)")
    parser.add_argument(
        "--proxies",
        type=_names(PROXIES),
        default=["default", "asyncio"],
        help="this checkout's proxies, one process each: default (the default config: uvloop "
        "where installed; the compiled core where built), asyncio, uvloop, metrics (the default "
        "config with metrics_listen set: `--proxies default,metrics` reports what metrics cost), "
        "python (the default config on the pure core, CLIENT_PROXY_CORE=python) "
        "(default: default,asyncio)",
    )
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also run the proxy as of git revision REV (exported beside this checkout), and "
        f"keep the before/after comparison in docs/{BEFORE_AFTER} for later runs",
    )
    parser.add_argument(
        "--baseline-proxies",
        type=_names(BASELINE_PROXIES),
        default=["asyncio", "uvloop"],
        help="REV's proxies: default, asyncio, uvloop (default: asyncio,uvloop)",
    )
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="also run py-spy on one proxy during one extra proxied phase "
        "(FILE.svg flamegraph, FILE.json speedscope, FILE.txt collapsed stacks)",
    )
    parser.add_argument(
        "--profile-path",
        default="proxy/default",
        help="the proxied path profiled (default proxy/default)",
    )
    parser.add_argument(
        "--profile-inflight",
        type=int,
        default=100,
        help="requests in flight during the profiled phase (default 100; 1 shows what a "
        "wake-up costs)",
    )
    parser.add_argument(
        "--profile-duration",
        type=float,
        default=10.0,
        help="seconds of the profiled phase (default 10)",
    )
    parser.add_argument(
        "--profile-rate",
        type=int,
        default=1000,
        help="py-spy samples per second (default 1000: at 1 in flight the proxy is busy a "
        "small part of the time, and py-spy leaves out the samples where it waits)",
    )
    parser.add_argument(
        "--profile-native",
        action="store_true",
        help="profile the C frames too (py-spy --native: the event loop, the parser, the "
        "system calls)",
    )
    parser.add_argument(
        "--docs",
        default=str(ROOT / "docs"),
        help="where benchmarks.md and benchmarks.png go (default: docs/)",
    )
    parser.add_argument("--no-docs", action="store_true", help="print only; write nothing")
    args = parser.parse_args()
    if not args.proxies and not args.baseline:
        parser.error("--proxies names no proxy")
    if not prosody_available():
        print("bench: prosody is not installed; run it through ./just bench", file=sys.stderr)
        return 1

    started = time.monotonic()
    results = run(args)
    print()
    print(text_table(results))
    print("(CPU columns: CPU seconds per 1,000 requests; proxy wake-ups: per request)")
    for cell in results.cells.values():
        if cell.errors or cell.unanswered:
            conditions = ", ".join(f"{c} {n:,}" for c, n in cell.errors.most_common())
            print(
                f"{cell.path} x{cell.inflight}: errors: {conditions or 'none'}; "
                f"unanswered: {cell.unanswered}"
            )
    print()
    for line in target_lines(results):
        print(line)
    docs = Path(args.docs)
    compared: tuple[dict[str, Any], bool] | None = None
    if results.baseline is not None:
        compared = (before_after(results), True)
    elif (docs / BEFORE_AFTER).exists():
        compared = (json.loads((docs / BEFORE_AFTER).read_text(encoding="utf-8")), False)
    if compared is not None and compared[1]:
        print()
        print("\n".join(before_after_lines(*compared)))
    if results.profile:
        print(results.profile)
    if not args.no_docs:
        docs.mkdir(parents=True, exist_ok=True)
        plot = "benchmarks.png" if draw(results, docs / "benchmarks.png") else None
        if plot is None:
            print("matplotlib is missing: no plot (pip install -e '.[bench]')")
        page = docs / "benchmarks.md"
        kept = kept_sections(page.read_text(encoding="utf-8") if page.exists() else "")
        page.write_text(markdown(results, plot, compared) + kept, encoding="utf-8")
        written = [docs / "benchmarks.md", *([docs / plot] if plot else [])]
        if compared is not None and compared[1]:
            data = json.dumps(compared[0], indent=1, ensure_ascii=False)
            (docs / BEFORE_AFTER).write_text(data + "\n", encoding="utf-8")
            written.append(docs / BEFORE_AFTER)
        print(f"wrote {', '.join(str(p) for p in written)}")
    print(f"bench took {time.monotonic() - started:.0f} s")
    failed = sum(sum(c.errors.values()) + c.unanswered for c in results.cells.values())
    if failed:
        print(f"bench: {failed:,} requests failed: these figures do not measure proxying")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
