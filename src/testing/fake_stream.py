"""A component stream without a socket, for tests of the daemon's read and write paths: a
transport that keeps what is written, and the way an event loop hands bytes to a buffered
protocol (slixmpp's component, as the shell runs it)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

__all__ = ["FakeTransport", "feed"]

_COMPONENT_NS = "jabber:component:accept"


class FakeTransport:
    """Keeps what the daemon writes (bytes, in order); accepts flow-control calls."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def text(self) -> str:
        """Everything written, as text."""
        return b"".join(self.writes).decode()

    def stanzas(self, ns: str = _COMPONENT_NS) -> list[ET.Element]:
        """What was written after the stream header and the handshake, parsed."""
        text = b"".join(
            w for w in self.writes if not w.startswith((b"<?xml", b"<handshake"))
        ).decode()
        return list(ET.fromstring(f"<s xmlns='{ns}'>{text}</s>"))


def feed(protocol: Any, data: str | bytes, piece: int | None = None) -> None:
    """``data`` as the event loop hands it to a buffered ``protocol``: ``piece`` bytes at a time
    (all at once if None), and never more than the buffer it offers holds."""
    raw = data.encode() if isinstance(data, str) else data
    step = piece or len(raw) or 1
    for start in range(0, len(raw), step):
        whole = raw[start : start + step]
        offset = 0
        while offset < len(whole):
            buffer = protocol.get_buffer(-1)
            chunk = whole[offset : offset + len(buffer)]
            buffer[: len(chunk)] = chunk
            protocol.buffer_updated(len(chunk))
            offset += len(chunk)
