"""The sd_notify protocol (sd_notify(3)), spoken by hand: it is one datagram per message on the
AF_UNIX socket named by ``NOTIFY_SOCKET``, newline-separated ``KEY=value`` lines. Twenty lines
of our own rather than a dependency: the libraries for it either wrap libsystemd (a C build
for a sendto) or are unmaintained, and none adds the watchdog timer, which is the part that
has to live in our event loop anyway.

What the daemon says, and when (systemd.service(5), ``Type=notify``):

- ``READY=1`` after the first successful handshake with the server (``systemctl start`` then
  returns, and a wrong secret fails it instead: the process exits 78 before ever being ready);
- ``STATUS=...`` whenever the one-line status changes (link, subscription, resources);
- ``WATCHDOG=1`` from the event loop every half of ``WATCHDOG_USEC``: a loop stuck for longer
  than ``WatchdogSec=`` stops sending it, and systemd restarts the service;
- ``RELOADING=1`` (with ``MONOTONIC_USEC``) when SIGHUP's reload starts, ``READY=1`` when done;
- ``STOPPING=1`` when the drain starts.

Without ``NOTIFY_SOCKET`` (not under systemd) every call does nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Mapping

__all__ = ["Notifier"]

log = logging.getLogger("client_proxy")


class Notifier:
    """Sends sd_notify messages to ``NOTIFY_SOCKET``, if it is set."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self._address: str | bytes | None = None
        self._socket: socket.socket | None = None
        self._status: str | None = None
        self._failed = False
        self._watchdog: asyncio.TimerHandle | None = None
        self.watchdog_interval: float | None = None
        if address and address[0] in "/@":
            # A leading '@' names a socket in the abstract namespace (unix(7)).
            self._address = "\0" + address[1:] if address[0] == "@" else address
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.setblocking(False)
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        # WATCHDOG_PID, when set, names the process the watchdog is for (sd_watchdog_enabled).
        ours = not pid or (pid.isdigit() and int(pid) == os.getpid())
        if self._socket is not None and usec.isdigit() and int(usec) > 0 and ours:
            self.watchdog_interval = int(usec) / 2_000_000

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def send(self, *lines: str) -> None:
        """Send one message made of ``lines``. A failure is logged once, never raised: the
        proxy's job does not depend on systemd hearing it."""
        if self._socket is None or self._address is None:
            return
        try:
            self._socket.sendto("\n".join(lines).encode(), self._address)
        except OSError as exc:
            if not self._failed:
                log.warning("notify.failed: cannot write to NOTIFY_SOCKET: %s", exc)
                self._failed = True

    def ready(self) -> None:
        self.send("READY=1", *self._status_lines())

    def status(self, text: str) -> None:
        """``STATUS=text``, only when it differs from the last one sent."""
        if text != self._status:
            self._status = text
            self.send(f"STATUS={text}")

    def reloading(self) -> None:
        # MONOTONIC_USEC is what Type=notify-reload asks for; Type=notify ignores it.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def start_watchdog(self, loop: asyncio.AbstractEventLoop) -> None:
        """Send ``WATCHDOG=1`` from ``loop`` every half of ``WATCHDOG_USEC``, from now on."""
        interval = self.watchdog_interval
        if interval is None or self._watchdog is not None:
            return

        def beat() -> None:
            self.send("WATCHDOG=1")
            self._watchdog = loop.call_later(interval, beat)

        beat()

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _status_lines(self) -> tuple[str, ...]:
        return (f"STATUS={self._status}",) if self._status is not None else ()
