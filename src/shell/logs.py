"""Log lines for people and for machines: `log_format = "text"` or `"json"`, and journald's
priority prefix.

Every line the proxy logs starts with a stable code (`connection.up: connected as ...`); the
formatters split it off, so a JSON line carries it as its own key and a text line stays what
it always was. Under journald (``JOURNAL_STREAM`` names our stderr, systemd.exec(5)) each text
line starts with ``<N>``, the syslog priority of its level (sd-daemon(3)), so that
``journalctl -p err`` finds the errors; journald stamps the time itself, so the line leaves it
out. slixmpp's own records, and tracebacks, go through the same handler and formatter.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

__all__ = ["JsonFormatter", "TextFormatter", "setup_logging", "under_journald"]

#: sd-daemon(3)'s prefixes: <3> err, <4> warning, <6> info, <7> debug.
_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}
#: `code: message`, the shape of every line client-proxy logs (`stop.flush: ...`, `status: ...`).
_CODED = re.compile(r"([a-z][a-z0-9_]*(?:\.[a-z0-9_-]+)*): (.*)", re.DOTALL)


def _priority(levelno: int) -> int:
    for level, priority in sorted(_PRIORITY.items(), reverse=True):
        if levelno >= level:
            return priority
    return 7


def split_code(record: logging.LogRecord) -> tuple[str, str]:
    """The record's code and the rest of its message. Lines from other libraries (slixmpp)
    have no code of ours: their logger's name stands for it."""
    message = record.getMessage()
    if record.name == "client_proxy" or record.name.startswith("client_proxy."):
        found = _CODED.fullmatch(message)
        if found is not None:
            return found.group(1), found.group(2)
    return record.name, message


class TextFormatter(logging.Formatter):
    """``2026-01-02 03:04:05,678 INFO connection.up: ...``; under journald ``<6>INFO ...``
    (every line of a traceback with the same prefix, so none of it loses its priority)."""

    def __init__(self, journald: bool = False) -> None:
        super().__init__(
            "%(levelname)s %(message)s" if journald else "%(asctime)s %(levelname)s %(message)s"
        )
        self.journald = journald

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if not self.journald:
            return text
        prefix = f"<{_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in text.split("\n"))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (RFC 3339, UTC), ``level``, ``code``, ``message``,
    then the event's own fields (``extra={"fields": {...}}`` at the call) as keys of their own,
    and ``exception`` with the traceback when there is one. Keys the line already has win over
    a field of the same name."""

    def format(self, record: logging.LogRecord) -> str:
        code, message = split_code(record)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line: dict[str, Any] = {
            "time": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "code": code,
            "message": message,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            for key, value in fields.items():
                line.setdefault(str(key), value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def under_journald(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``stream`` is connected to journald: ``JOURNAL_STREAM`` is ``DEVICE:INODE`` of
    the stream systemd connected, and it must be this one (a child process that inherited the
    variable but writes elsewhere is not under journald)."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not device.isdigit() or not inode.isdigit():
        return False
    try:
        info = os.fstat(stream.fileno())
    except (OSError, ValueError):
        return False
    return info.st_dev == int(device) and info.st_ino == int(inode)


def setup_logging(level: str, log_format: str = "text", stream: TextIO | None = None) -> None:
    """One handler on the root logger, writing to stderr in ``log_format``; slixmpp's records
    reach it too."""
    out = stream if stream is not None else sys.stderr
    handler = logging.StreamHandler(out)
    formatter: logging.Formatter = (
        JsonFormatter() if log_format == "json" else TextFormatter(under_journald(out))
    )
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if level == "debug" else logging.INFO)
    logging.getLogger("client_proxy").setLevel(level.upper())
    # slixmpp logs every stanza at debug and connection chatter at info; its warnings matter.
    logging.getLogger("slixmpp").setLevel(logging.INFO if level == "debug" else logging.WARNING)
    # Tracebacks that asyncio reports (an exception in a callback) take the same way: they are
    # logged by the "asyncio" logger, which propagates to the root.


def set_format(log_format: str) -> None:
    """Switch the root handler's format (a reload that changed `log_format`)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            stream = handler.stream
            handler.setFormatter(
                JsonFormatter() if log_format == "json" else TextFormatter(under_journald(stream))
            )
