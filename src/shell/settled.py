"""Instances that stopped cleanly, told to the next process through systemd's state directory.

A process that stops (SIGTERM) answers every request still outstanding when its drain ends, with
`service-unavailable` (wait). The target may still send the reply to such a request; the next
process (``systemctl restart``, or a standby on the same host) would deliver it as well, since
the sealed id says where it goes: two answers. So at :class:`~client_proxy.core.Stopped` the
daemon writes its instance name, and until when it matters (its last request's deadline), to
``$STATE_DIRECTORY/stopped-instances``; the next process reads it at start and drops replies to
those instances' forwards (``dropped.reply_after_stop``). A process killed outright writes
nothing, so its replies are delivered.

One line per instance: ``<instance> <until, wall-clock ms>``. Lines past their time are dropped
when the file is read or written; anything unreadable is ignored (a warning, never a crash: the
worst case is the double answer this file exists to avoid). Without ``STATE_DIRECTORY`` (the
daemon not run by the shipped units) nothing is written or read.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path

__all__ = ["FILE_NAME", "load", "record", "settled_path"]

log = logging.getLogger("client_proxy")

FILE_NAME = "stopped-instances"
_LINE = re.compile(r"([0-9a-f]{8}) ([0-9]{1,20})")


def settled_path(environ: Mapping[str, str]) -> Path | None:
    """Where the file is: in ``$STATE_DIRECTORY`` (systemd's ``StateDirectory=``; the first, if
    it names several), or None."""
    folder = environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(folder) / FILE_NAME if folder else None


def _read(path: Path, now_ms: int) -> dict[str, int]:
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        log.warning(
            "settled.unreadable: %s: %s; replies to earlier instances go through", path, exc
        )
        return {}
    entries: dict[str, int] = {}
    for line in text.splitlines():
        match = _LINE.fullmatch(line.strip())
        if match is not None and int(match[2]) > now_ms:
            entries[match[1]] = max(int(match[2]), entries.get(match[1], 0))
    return entries


def load(path: Path, now_ms: int) -> frozenset[str]:
    """The instances in ``path`` whose time has not passed at ``now_ms``."""
    return frozenset(_read(path, now_ms))


def record(path: Path, instance: str, until_ms: int, now_ms: int) -> None:
    """Add ``instance`` until ``until_ms`` to ``path`` (written whole, then renamed into place),
    forgetting the entries whose time has passed."""
    entries = _read(path, now_ms)
    entries[instance] = max(until_ms, entries.get(instance, 0))
    text = "".join(f"{name} {until}\n" for name, until in sorted(entries.items()))
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        partial.write_text(text, encoding="ascii")
        os.replace(partial, path)
    except OSError as exc:
        log.warning(
            "settled.unwritable: %s: %s; the next process may answer a request this one "
            "answered at its stop a second time",
            path,
            exc,
        )
        return
    log.info(
        "settled.recorded: %s: replies to what instance %s forwarded are answered; the next "
        "process drops them",
        path,
        instance,
    )
