"""`just bench`: what the extra hop through client-proxy costs, against a real Prosody.

It starts a throwaway Prosody on loopback, the target account with two resources answering IQs
(`benchmarks._target`, its own process), the proxy (`client-proxy run`, its own process: one per
event loop measured, each serving a component domain of its own) and a load generator
(`benchmarks._loadgen`, its own process). Then, for 1, 10 and 100 requests in flight, it sends
the same workload (an IQ get with a ~120 byte payload, answered with a small result) directly
to the target's resources and through each proxy, interleaved in one run (direct, proxy/asyncio,
proxy/uvloop, direct, ...). For each path and level: requests per second, round-trip latency
p50/p99/max as the load generator sees it, and CPU seconds per 1,000 requests of each process
(utime + stime from /proc/PID/stat, read before and after each phase).

The cap: a proxied request costs Prosody more than a direct one (it routes the request and the
reply twice), so when Prosody is the bottleneck, proxied throughput cannot exceed
direct throughput x (Prosody CPU per direct request / Prosody CPU per proxied request). The
share of the cap reached works out as Prosody's CPU use per second proxied / direct.
Targets (issue 6), ratios from this run:

- proxied throughput at 100 in flight >= 0.95 x the cap x direct throughput;
- the proxy's CPU per request <= 0.4 x Prosody's CPU per proxied request;
- p50 latency added at 1 in flight <= 0.4 ms.

It prints the table, writes it to docs/benchmarks.md and (with matplotlib, `pip install -e
'.[bench]'`) a latency-vs-throughput plot to docs/benchmarks.png.
"""

from __future__ import annotations

import argparse
import array
import importlib.util
import json
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from client_proxy.testing.prosody import Prosody, prosody_available

from ._procs import Helper, ProxyProcess, cpu_seconds, machine_description, write_proxy_config

#: The component domain of the proxy running on each event loop.
DOMAINS = {"asyncio": "proxy.localhost", "uvloop": "proxy-uv.localhost"}
SECRET = "bench-secret"
PASSWORD = "bench-password"
TARGET = "svc@localhost"
RESOURCES = ("r1", "r2")
REQUESTER = "user@localhost/bench"
LEVELS = (1, 10, 100)
PROCESSES = ("prosody", "proxy", "target", "loadgen")
ROOT = Path(__file__).resolve().parent.parent

# The targets of issue 6.
CAP_SHARE = 0.95
PROXY_CPU_SHARE = 0.4
ADDED_P50_MS = 0.4


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


@dataclass
class Results:
    levels: tuple[int, ...]
    paths: list[str]
    cells: dict[tuple[str, int], Cell]
    command: str
    machine: list[str]
    settings: str
    profile: str | None = None

    @property
    def proxied(self) -> list[str]:
        return [p for p in self.paths if p != "direct"]

    def cell(self, path: str, inflight: int) -> Cell:
        return self.cells[(path, inflight)]


# -- running -----------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> Results:
    machine = machine_description()
    loops: list[str] = args.loops
    paths = ["direct", *(f"proxy/{loop}" for loop in loops)]
    with tempfile.TemporaryDirectory(prefix="client-proxy-bench-") as tmp:
        work = Path(tmp)
        domains = {loop: DOMAINS[loop] for loop in loops}
        server = Prosody(
            work / "prosody",
            components=dict.fromkeys(domains.values(), SECRET),
            log_level="warn",
        )
        for account in (TARGET, REQUESTER.partition("/")[0]):
            server.register(account.split("@")[0], "localhost", PASSWORD)
        helpers: list[Helper] = []
        proxies: dict[str, ProxyProcess] = {}
        server.start()
        try:
            assert server.process is not None
            address = ("127.0.0.1", str(server.c2s_port))
            approve = ",".join(domains.values())
            target = Helper("benchmarks._target", *address, TARGET, PASSWORD, approve, *RESOURCES)
            helpers.append(target)
            if target.read() != "ready":
                raise RuntimeError("the target did not come online")
            for loop, domain in domains.items():
                config = write_proxy_config(
                    work / f"{loop}.toml",
                    {
                        "component": domain,
                        "server": f"127.0.0.1:{server.component_port}",
                        "secret": SECRET,
                        "target": TARGET,
                        "seed": 1,
                        "event_loop": loop,
                        # One requester stands for many users here: no per-requester limit.
                        "rate_limit": 0,
                    },
                )
                proxies[loop] = ProxyProcess(config, extra_args=("--log-level", "info"))
            for proxy in proxies.values():
                proxy.wait_for("resource.online", count=len(RESOURCES))
            loadgen = Helper("benchmarks._loadgen", *address, REQUESTER, PASSWORD)
            helpers.append(loadgen)
            if loadgen.read() != "ready":
                raise RuntimeError("the load generator did not log in")
            pids = {
                "prosody": [server.process.pid],
                "proxy": [proxy.pid for proxy in proxies.values()],
                "target": [target.pid],
                "loadgen": [loadgen.pid],
            }
            targets = {"direct": [f"{TARGET}/{r}" for r in RESOURCES]}
            targets.update({f"proxy/{loop}": [domain] for loop, domain in domains.items()})
            out = work / "latencies.bin"

            def cpu() -> dict[str, float]:
                return {
                    name: sum(cpu_seconds(pid) for pid in group) for name, group in pids.items()
                }

            def phase(path: str, inflight: int, duration: float) -> tuple[dict, dict]:  # type: ignore[type-arg]
                before = cpu()
                command = {
                    "targets": targets[path],
                    "inflight": inflight,
                    "duration": duration,
                    "out": str(out),
                }
                result = json.loads(loadgen.ask(json.dumps(command), timeout=duration + 90))
                after = cpu()
                return result, {name: after[name] - before[name] for name in pids}

            print(f"warming up ({args.warmup:g} s per path) ...", flush=True)
            for path in paths:
                phase(path, 10, args.warmup)

            cells = {(p, n): Cell(p, n) for n in args.levels for p in paths}
            for inflight in args.levels:
                for rnd in range(args.rounds):
                    for path in paths:
                        result, used = phase(path, inflight, args.duration)
                        cell = cells[(path, inflight)]
                        cell.requests += result["requests"]
                        cell.elapsed += result["elapsed"]
                        cell.unanswered += result["unanswered"]
                        cell.errors.update(result["errors"])
                        cell.cpu.update(used)
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
                loop = loops[0]
                profile = _profile(
                    proxies[loop].pid,
                    Path(args.profile),
                    args.duration,
                    lambda: phase(f"proxy/{loop}", args.profile_inflight, args.duration),
                    f"proxy/{loop} at {args.profile_inflight} in flight",
                )
        finally:
            for helper in helpers:
                helper.stop()
            for proxy in proxies.values():
                proxy.stop()
            server.stop()
    settings = (
        f"{args.rounds} round(s) of {args.duration:g} s per path and level, interleaved "
        f"({', '.join(paths)}, {paths[0]}, ...)"
    )
    return Results(args.levels, paths, cells, _command(), machine, settings, profile)


def _profile(pid: int, path: Path, duration: float, phase: Callable[[], object], what: str) -> str:
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
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    time.sleep(0.5)
    phase()
    spy.wait(duration + 30)
    return f"py-spy profile of {what} ({fmt}) written to {path}"


def _command() -> str:
    args = shlex.join(sys.argv[1:])
    return f"just bench {args}".strip()


# -- reporting ---------------------------------------------------------------------------------


def targets(results: Results, path: str) -> list[tuple[str, float, str, bool]]:
    """(what, measured, target, met) for each target of issue 6, for one proxied path."""
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
    "errors",
]


def text_table(results: Results) -> str:
    rows = [HEADER, *table_rows(results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def target_lines(results: Results) -> list[str]:
    lines = []
    for path in results.proxied:
        for what, value, goal, met in targets(results, path):
            verdict = "" if not goal else f"  (target {goal}: {'met' if met else 'NOT met'})"
            lines.append(f"{path}: {what}: {value:.3f}{verdict}")
    return lines


def markdown(results: Results, plot: str | None) -> str:
    rows = [HEADER, *table_rows(results)]
    out = [
        "# Benchmarks",
        "",
        "Written by `just bench` (`benchmarks/bench.py`); rerun it to refresh this page. What it",
        "measures: the same workload (an IQ get with a ~120 byte payload, answered with a small",
        "result) sent by one requester directly to the target's two resources (`direct`) and",
        "through client-proxy, against a real Prosody on loopback, at 1, 10 and 100 requests in",
        "flight, interleaved in one run. There is one proxy process per event loop, each serving",
        "a component domain of its own: `proxy/asyncio` runs with the default `event_loop`,",
        '`proxy/uvloop` with `event_loop = "uvloop"`. Latency is the round trip the requester',
        "sees. The CPU columns are CPU seconds per 1,000 requests of each process (utime + stime",
        "from /proc; the target and the load generator each run in a process of their own;",
        "`proxy` is the proxy processes together, the idle one using next to nothing). `errors`",
        "counts error replies and requests left unanswered (expected 0).",
        "",
        "The machine is shared with other work, so absolute figures move from run to run; the",
        "ratios below compare paths measured in the same run. The throughput share of the cap",
        "works out as Prosody's CPU use per second proxied / direct: 1.0 means the proxy never",
        "left Prosody waiting. To see where the proxy spends its time, `just bench --profile",
        "proxy.svg` adds a py-spy flame graph of one proxied phase at 100 in flight.",
        "",
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
        "Against the targets of issue 6 (ratios from this run):",
        "",
        *(f"- {line}" for line in target_lines(results)),
        "",
    ]
    if plot:
        out += [f"![latency against throughput]({plot})", ""]
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
    colors = ("tab:blue", "tab:orange", "tab:green", "tab:red")
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
    have_uvloop = importlib.util.find_spec("uvloop") is not None
    parser.add_argument(
        "--loops",
        type=lambda text: [x for x in text.split(",") if x],
        default=["asyncio", "uvloop"] if have_uvloop else ["asyncio"],
        help="the proxies' event loops, one proxy each (default: asyncio,uvloop, or asyncio "
        "alone without uvloop)",
    )
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="also run py-spy on the first proxy during one extra proxied phase "
        "(FILE.svg flamegraph, FILE.json speedscope, FILE.txt collapsed stacks)",
    )
    parser.add_argument(
        "--profile-inflight",
        type=int,
        default=100,
        help="requests in flight during the profiled phase (default 100)",
    )
    parser.add_argument(
        "--docs",
        default=str(ROOT / "docs"),
        help="where benchmarks.md and benchmarks.png go (default: docs/)",
    )
    parser.add_argument("--no-docs", action="store_true", help="print only; write nothing")
    args = parser.parse_args()
    unknown = [loop for loop in args.loops if loop not in DOMAINS]
    if unknown or not args.loops:
        parser.error(f"--loops takes a comma-separated list of {', '.join(DOMAINS)}")
    if not prosody_available():
        print("bench: prosody is not installed; run it through ./just bench", file=sys.stderr)
        return 1

    started = time.monotonic()
    results = run(args)
    print()
    print(text_table(results))
    print("(CPU columns: CPU seconds per 1,000 requests)")
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
    if results.profile:
        print(results.profile)
    if not args.no_docs:
        docs = Path(args.docs)
        docs.mkdir(parents=True, exist_ok=True)
        plot = "benchmarks.png" if draw(results, docs / "benchmarks.png") else None
        if plot is None:
            print("matplotlib is missing: no plot (pip install -e '.[bench]')")
        (docs / "benchmarks.md").write_text(markdown(results, plot), encoding="utf-8")
        print(f"wrote {docs / 'benchmarks.md'}" + (f" and {docs / plot}" if plot else ""))
    print(f"bench took {time.monotonic() - started:.0f} s")
    failed = sum(sum(c.errors.values()) + c.unanswered for c in results.cells.values())
    if failed:
        print(f"bench: {failed:,} requests failed: these figures do not measure proxying")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
