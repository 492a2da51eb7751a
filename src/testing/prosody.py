"""A throwaway Prosody for tests and demos: generated config, free loopback ports, its own data
directory, started in the foreground and stopped with SIGTERM. client-proxy's integration tests,
its demo and its benchmarks use it; so can the tests of an implementing client.

Standard library only::

    from client_proxy.testing.prosody import Prosody

    with Prosody(workdir, components={"proxy.localhost": "secret"}) as server:
        server.register("svc", "localhost", "password")
        print(server.c2s_port, server.component_port)

It installs nothing: the Debian package `prosody` (0.12) must already be there (`./just`'s
bootstrap installs it). Plaintext only (no certificates, s2s disabled), loopback only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self

__all__ = ["Prosody", "ProsodyError", "free_port", "prosody_available"]


class ProsodyError(RuntimeError):
    """Prosody would not start, stop or register an account; the message ends with its log tail."""


def prosody_available() -> bool:
    """True if both `prosody` and `prosodyctl` are on PATH."""
    return shutil.which("prosody") is not None and shutil.which("prosodyctl") is not None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def quoted(value: str) -> str:
    """A double-quoted string literal for `value`, as Lua and YAML both read it (backslash,
    double quote and newline escaped)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def port_open(port: int) -> bool:
    """True if something accepts TCP connections on `port` of 127.0.0.1."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def log_tail(paths: tuple[Path, ...], lines: int = 60) -> str:
    """The last `lines` lines of each of `paths` that exists, for failure reports."""
    parts = []
    for path in paths:
        if path.exists():
            text = path.read_text(encoding="utf-8", errors="replace").splitlines()
            parts.append(f"--- {path} (last {lines} lines) ---")
            parts.extend(text[-lines:])
    return "\n".join(parts)


class ThrowawayServer:
    """What the throwaway servers of the tests share: started by ``start``, stopped by ``stop``
    (which closes the console file, ``_console``), restarted with the same config, ports and
    data, and usable as a context manager."""

    _console: IO[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        raise NotImplementedError

    def stop(self, timeout: float = 10.0) -> int | None:
        raise NotImplementedError

    def restart(self, timeout: float = 20.0) -> None:
        """Stop and start again: same config, same ports, same data."""
        self.stop()
        self.start(timeout)

    def _close_console(self) -> None:
        if self._console is not None:
            with contextlib.suppress(OSError):
                self._console.close()
            self._console = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class Prosody(ThrowawayServer):
    """One Prosody server: a VirtualHost and any number of external components (XEP-0114).

    `start()` writes nothing new: the config and the ports are fixed when the object is made, and
    the data directory survives `stop()`, so `restart()` brings back the same server (accounts,
    rosters and subscriptions included) on the same ports.
    """

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        *,
        host: str = "localhost",
        components: dict[str, str] | None = None,
        log_level: str = "debug",
        plugin_paths: tuple[str | os.PathLike[str], ...] = (),
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.host = host
        self.components = dict(components or {})
        #: Folders Prosody (and prosodyctl) search for modules before its own.
        self.plugin_paths = tuple(Path(p).resolve() for p in plugin_paths)
        self.c2s_port = free_port()
        self.component_port = free_port()
        while self.component_port == self.c2s_port:
            self.component_port = free_port()
        self.data_dir = self.workdir / "data"
        self.certs_dir = self.workdir / "certs"
        self.config_path = self.workdir / "prosody.cfg.lua"
        self.log_path = self.workdir / "prosody.log"
        self.console_path = self.workdir / "prosody.console"
        self.pid_path = self.workdir / "prosody.pid"
        self.log_level = log_level
        self.process: subprocess.Popen[bytes] | None = None
        self._console: IO[bytes] | None = None
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(exist_ok=True)
        self.certs_dir.mkdir(exist_ok=True)
        self.config_path.write_text(self.config_text(), encoding="utf-8")

    # -- configuration ---------------------------------------------------------------------------

    def config_text(self) -> str:
        """The generated prosody.cfg.lua."""
        paths = "; ".join(quoted(str(p)) for p in self.plugin_paths)
        lines = [
            "-- Generated for client-proxy's tests: plaintext, loopback only, no s2s.",
            "run_as_root = true",
            f"data_path = {quoted(str(self.data_dir))}",
            f"pidfile = {quoted(str(self.pid_path))}",
            f"certificates = {quoted(str(self.certs_dir))}",
            f"plugin_paths = {{ {paths} }}",
            'modules_enabled = { "roster"; "saslauth"; "disco"; "ping"; "posix"; }',
            'modules_disabled = { "s2s"; }',
            'authentication = "internal_hashed"',
            "allow_unencrypted_plain_auth = true",
            "c2s_require_encryption = false",
            f"c2s_ports = {{ {self.c2s_port} }}",
            'c2s_interfaces = { "127.0.0.1" }',
            f"component_ports = {{ {self.component_port} }}",
            'component_interfaces = { "127.0.0.1" }',
            "s2s_ports = { }",
            f"log = {{ {self.log_level} = {quoted(str(self.log_path))} }}",
            "",
            f"VirtualHost {quoted(self.host)}",
            "",
        ]
        for domain, secret in self.components.items():
            lines += [f"Component {quoted(domain)}", f"    component_secret = {quoted(secret)}", ""]
        return "\n".join(lines)

    # -- accounts ----------------------------------------------------------------------------------

    def register(self, user: str, host: str | None = None, password: str = "password") -> str:
        """Create the account `user@host` (works whether or not the server is running); returns
        its bare JID."""
        host = host or self.host
        self.prosodyctl("register", user, host, password, shown=f"register {user} {host}")
        return f"{user}@{host}"

    def prosodyctl(self, *args: str, shown: str | None = None) -> str:
        """Run ``prosodyctl --config <this server's config> ARGS`` (as an operator would, with
        this server's config: its hosts, its data directory, its plugin paths) and return what it
        printed; raise ProsodyError, with that output, if it exits non-zero. ``shown`` replaces
        the arguments in the error (to keep a password out of it). prosodyctl works on the
        stored data, whether or not the server is running."""
        result = subprocess.run(
            ["prosodyctl", "--config", str(self.config_path), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
            check=False,
        )
        output = result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")
        if result.returncode != 0:
            raise ProsodyError(
                f"prosodyctl {shown or ' '.join(args)} exited {result.returncode}: {output}"
            )
        return output

    # -- lifecycle ---------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 20.0) -> None:
        """Start `prosody -F` and return once both ports accept connections."""
        if self.running:
            return
        console = self.console_path.open("ab")
        self._console = console
        self.process = subprocess.Popen(
            ["prosody", "--config", str(self.config_path), "-F"],
            stdin=subprocess.DEVNULL,
            stdout=console,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ProsodyError(
                    f"prosody exited {self.process.returncode} while starting\n{self.log_tail()}"
                )
            if port_open(self.c2s_port) and port_open(self.component_port):
                return
            time.sleep(0.05)
        self.stop()
        raise ProsodyError(f"prosody did not listen within {timeout} s\n{self.log_tail()}")

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait up to `timeout`, then SIGKILL. Returns the exit status (None if it was not
        running)."""
        process, self.process = self.process, None
        status: int | None = None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout)
            status = process.returncode
        self._close_console()
        return status

    def log_tail(self, lines: int = 60) -> str:
        """The last lines of Prosody's log and console output, for failure reports."""
        return log_tail((self.log_path, self.console_path), lines)
