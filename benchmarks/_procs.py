"""Processes for the bench and the soak: CPU, wake-ups and RSS from /proc, `client-proxy run` as
a child (this checkout's, or another revision's exported beside it), helper processes spoken to
by lines on stdin/stdout, and a description of the machine."""

from __future__ import annotations

import ast
import contextlib
import io
import os
import platform
import signal
import subprocess
import sys
import tarfile
import threading
import time
from importlib import metadata
from pathlib import Path

from client_proxy.testing.daemon import cli_command, toml_config

__all__ = [
    "CLK_TCK",
    "Helper",
    "ProxyProcess",
    "Revision",
    "cpu_seconds",
    "machine_description",
    "rss_kib",
    "wakeups",
    "write_proxy_config",
]

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by process ``pid`` (all its threads)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        stat = f.read()
    # The command name (field 2) may hold spaces; the fields after it are space separated.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def wakeups(pid: int) -> int:
    """How many times process ``pid`` has gone to sleep and been woken (voluntary context
    switches of its main thread: for an event loop, one per wait for the network or a timer)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    return 0


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (VmRSS)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def write_proxy_config(path: Path, settings: dict[str, object]) -> Path:
    path.write_text(toml_config(settings), encoding="utf-8")
    return path


class Revision:
    """client-proxy as of another git revision of this repository, to run beside this checkout's.

    Its `src/` is exported (git archive) under ``dest``, with the installed layout of an editable
    install (``dest/.editable/client_proxy/core`` -> ``dest/src/core``, ...): run with that folder
    first on PYTHONPATH, `client_proxy.*` is that revision's code, with this environment's
    packages (slixmpp, uvloop, ...).
    """

    def __init__(self, rev: str, dest: Path, repo: Path) -> None:
        def git(*args: str) -> bytes:
            return subprocess.run(
                ["git", "-C", str(repo), *args], capture_output=True, check=True
            ).stdout

        self.rev = rev
        self.commit = git("rev-parse", "--verify", f"{rev}^{{commit}}").decode().strip()
        self.subject = git("log", "-1", "--format=%s", self.commit).decode().strip()
        archive = git("archive", "--format=tar", self.commit, "src")
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            if hasattr(tarfile, "data_filter"):  # Python 3.11.4 and later
                tar.extractall(dest, filter="data")
            else:
                tar.extractall(dest)  # our own repository's archive
        if not (dest / "src" / "shell" / "cli.py").exists():
            raise RuntimeError(f"{rev} has no src/shell/cli.py: not a revision the bench can run")
        package = dest / ".editable" / "client_proxy"
        package.mkdir(parents=True, exist_ok=True)
        for part in (dest / "src").iterdir():
            if part.is_dir():
                (package / part.name).symlink_to(Path("..", "..", "src", part.name))
        self.path = dest / ".editable"
        #: The revision's default `event_loop`, if its config says.
        self.default_event_loop = self._default_event_loop(dest / "src" / "shell" / "config.py")

    def _default_event_loop(self, config: Path) -> str | None:
        """The revision's default `event_loop` (from its config.DEFAULTS), if it says."""
        try:
            tree = ast.parse(config.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.AnnAssign | ast.Assign) and node.value is not None:
                    names = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
                    if any(isinstance(n, ast.Name) and n.id == "DEFAULTS" for n in names):
                        value = ast.literal_eval(node.value).get("event_loop")
                        return value if isinstance(value, str) else None
        except (OSError, SyntaxError, ValueError, AttributeError):
            pass
        return None

    @property
    def command(self) -> list[str]:
        """How to run that revision's `client-proxy` (with :attr:`env`)."""
        return [
            sys.executable,
            "-c",
            "import sys; from client_proxy.shell.cli import main; sys.exit(main())",
        ]

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(self.path)}


class ProxyProcess:
    """`client-proxy run --config PATH` as a child; its stderr lines are kept in `lines`.

    ``revision``: run that revision's code instead of this checkout's.
    """

    def __init__(
        self,
        config: Path,
        *,
        extra_args: tuple[str, ...] = (),
        echo: bool = False,
        revision: Revision | None = None,
        env: dict[str, str] | None = None,
    ):
        command = revision.command if revision is not None else cli_command()
        base = revision.env if revision is not None else dict(os.environ)
        self.process = subprocess.Popen(
            [*command, "run", "--config", str(config), *extra_args],
            env={**base, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.pid = self.process.pid
        self.lines: list[str] = []
        self._echo = echo
        self._cond = threading.Condition()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stderr is not None
        for raw in iter(self.process.stderr.readline, b""):
            line = raw.decode(errors="replace").rstrip()
            if self._echo:
                print(f"    [client-proxy {self.pid}] {line}", flush=True)
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def count(self, code: str) -> int:
        with self._cond:
            return sum(code in line for line in self.lines)

    def wait_for(self, code: str, count: int = 1, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while sum(code in line for line in self.lines) < count:
                left = deadline - time.monotonic()
                if left <= 0 or self.process.poll() is not None:
                    tail = "\n".join(self.lines[-20:])
                    raise RuntimeError(f"client-proxy did not log {code!r} x{count}:\n{tail}")
                self._cond.wait(min(left, 0.2))

    def stop(self, timeout: float = 20.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode


class Helper:
    """A Python helper (`python -m MODULE ARGS`) driven by one line in, one line out."""

    def __init__(self, module: str, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.pid = self.process.pid

    def read(self, timeout: float = 60.0) -> str:
        assert self.process.stdout is not None
        result: list[str] = []
        reader = threading.Thread(
            target=lambda: result.append(self.process.stdout.readline()),  # type: ignore[union-attr]
            daemon=True,
        )
        reader.start()
        reader.join(timeout)
        if not result or not result[0]:
            raise RuntimeError(f"{self.process.args[2]} said nothing within {timeout} s")
        return result[0].rstrip("\n")

    def ask(self, line: str, timeout: float = 120.0) -> str:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return self.read(timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                assert self.process.stdin is not None
                self.process.stdin.close()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _first_line(command: list[str]) -> str:
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
        return out.stdout.strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "unknown"


def machine_description() -> list[str]:
    """Lines describing this machine and the software measured."""
    cpu = "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError), open("/proc/meminfo", encoding="ascii") as f:
        mem = f"{int(f.readline().split()[1]) / 1024 / 1024:.1f} GiB"
    prosody = _first_line(["dpkg-query", "-W", "-f", "${Version}\n", "prosody"])
    loaded = os.getloadavg()
    return [
        f"CPU: {cpu}, {os.cpu_count()} logical cores; memory {mem}",
        f"OS: {platform.system()} {platform.release()} ({platform.machine()})",
        f"Python {platform.python_version()}, slixmpp {metadata.version('slixmpp')}, "
        f"Prosody {prosody}",
        f"load average at the start: {loaded[0]:.2f} {loaded[1]:.2f} {loaded[2]:.2f} "
        "(the machine is shared: compare ratios within one run)",
    ]
