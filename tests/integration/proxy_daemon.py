"""client-proxy as a real subprocess: a TOML config written for the test, `client-proxy run` in the
foreground, its stderr collected line by line so tests can wait for the stable event codes
(`connection.up`, `subscription.approved`, `resource.online`, ...)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from client_proxy.testing.daemon import cli_command, toml_config

#: The core the daemons run (CLIENT_PROXY_CORE for them): tests/conftest.py says which.
_DAEMON_CORE = os.environ.get("CLIENT_PROXY_DAEMON_CORE", "auto")

__all__ = ["Daemon", "cli_command", "toml_config"]


class Daemon:
    """One `client-proxy run` process. Its stderr lines land in `lines` as they come."""

    def __init__(
        self,
        config_path: Path,
        *,
        log_level: str = "debug",
        env: dict[str, str] | None = None,
    ) -> None:
        self.config_path = config_path
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self.process = subprocess.Popen(
            [*cli_command(), "run", "--config", str(config_path), "--log-level", log_level],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "CLIENT_PROXY_CORE": _DAEMON_CORE, **(env or {})},
            start_new_session=True,
        )
        self.stdout_lines: list[str] = []
        self._threads = [
            threading.Thread(
                target=self._pump, args=(self.process.stderr, self.lines), daemon=True
            ),
            threading.Thread(
                target=self._pump, args=(self.process.stdout, self.stdout_lines), daemon=True
            ),
        ]
        for thread in self._threads:
            thread.start()

    def _pump(self, stream: Any, into: list[str]) -> None:
        for raw in iter(stream.readline, b""):
            with self._lock:
                into.append(raw.decode("utf-8", errors="replace").rstrip("\n"))
        stream.close()

    @property
    def pid(self) -> int:
        return self.process.pid

    def snapshot(self) -> list[str]:
        with self._lock:
            return list(self.lines)

    def matching(self, code: str, since: int = 0, containing: str | None = None) -> list[str]:
        """Log lines (from index `since`) that contain the event code `code` (and `containing`,
        if given: a resource name, say)."""
        return [
            line
            for line in self.snapshot()[since:]
            if code in line and (containing is None or containing in line)
        ]

    def mark(self) -> int:
        """The current end of the log, to wait only for events after this point."""
        with self._lock:
            return len(self.lines)

    async def wait_log(
        self,
        code: str,
        *,
        containing: str | None = None,
        count: int = 1,
        since: int = 0,
        timeout: float = 15.0,
    ) -> list[str]:
        """Wait until `count` lines after `since` contain `code` (and `containing`); TimeoutError
        (with the log tail) if not within `timeout`, RuntimeError if the process exits first."""
        what = code if containing is None else f"{code} ... {containing}"
        deadline = time.monotonic() + timeout
        while True:
            found = self.matching(code, since, containing)
            if len(found) >= count:
                return found
            if self.process.poll() is not None:
                await asyncio.sleep(0.2)  # let the pump threads drain the pipe
                found = self.matching(code, since, containing)
                if len(found) >= count:
                    return found
                raise RuntimeError(
                    f"client-proxy exited {self.process.returncode} before logging {what!r} "
                    f"x{count}\n{self.tail()}"
                )
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"client-proxy did not log {what!r} x{count} within {timeout} s\n{self.tail()}"
                )
            await asyncio.sleep(0.05)

    def signal(self, signum: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signum)

    async def wait_exit(self, timeout: float = 15.0) -> int:
        """Wait for the process to exit by itself; TimeoutError if it does not."""
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"client-proxy still running after {timeout} s\n{self.tail()}")
            await asyncio.sleep(0.05)
        for thread in self._threads:
            thread.join(2)
        return self.process.returncode

    def stop(self, timeout: float = 10.0) -> int:
        """Teardown: SIGTERM, wait, SIGKILL if need be. Returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        for thread in self._threads:
            thread.join(2)
        return self.process.returncode

    def tail(self, lines: int = 80) -> str:
        text = self.snapshot()[-lines:]
        return f"--- client-proxy stderr (last {len(text)} lines) ---\n" + "\n".join(text)
