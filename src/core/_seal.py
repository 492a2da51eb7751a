"""Sealed ids: the id the proxy puts on each IQ it sends on someone else's behalf, which carries,
authenticated, everything needed to deliver the answer to it.

A request forwarded to the target, and an IQ the target starts towards a user (a *call*), go out
with an id of the proxy's own instead of the one their sender chose. It reads::

    <len(original)>.<original><instance>.<number>.<deadline>.<len(resource)>.<resource><wrote_to>.<mac>

- ``original``: the id the sender chose, given back with the answer; first, after its length
  (hex), so that the answer's request is found with one slice;
- ``instance``: 8 hex digits chosen when the process starts (:attr:`ProxyState.instance`), and
  ``number``, a count that process never repeats (hex): together, an id unique per forward, so a
  late answer can never be taken for the answer to a newer request with the same original id;
- ``deadline``: the wall-clock deadline, in milliseconds since the Unix epoch (hex), after which
  nobody is owed the answer;
- ``resource``: the target resource the request went to, or that started the call: the answer to
  a request must come from it, the answer to a call goes back to it;
- ``wrote_to``: the address the requester wrote to, empty when it is the proxy's domain itself
  (nearly always): the answer comes from exactly that address;
- ``mac``: HMAC-SHA256 (RFC 2104) under :attr:`ProxyConfig.seal_key`, cut to 96 bits (RFC 2104
  §5 allows truncation to no less than half the output and 80 bits) and written in base64 (16
  characters), over the direction, everything before it, and the address the answer must come
  from (the requester of a request, the user of a call), which is not repeated in the id: the
  answer names it already.

Any instance holding the key can check an answer and deliver it, whether or not it sent the
request: this is what lets a restarted process, or a standby, answer what a dead one forwarded.
The cost is 44 to 50 bytes plus the resource's name (and ``wrote_to``) on each forward and each
answer (see :func:`sealed_size`; the lengths' and the number's hex digits make the difference).

The text of an id travels in an XML attribute, so any character would do; only ``.`` separates,
and the fields that can contain it come with their lengths (``original``, ``resource``) or
last (``wrote_to``, before the MAC, which has no ``.``).
"""

from __future__ import annotations

import hashlib
import hmac
import math
from binascii import b2a_base64
from functools import lru_cache
from typing import NamedTuple

__all__ = [
    "CALL",
    "REQUEST",
    "Sealed",
    "mac",
    "open_id",
    "original_of",
    "seal",
    "sealed_size",
    "wall_ms",
]

#: The direction an id was sealed for, part of what the MAC covers: a request's id cannot be
#: passed off as a call's.
REQUEST = "r"
CALL = "c"

#: Wall-clock milliseconds are clamped to this (about 292 million years): a clock of inf or NaN
#: must still make an id (the core is total).
_MAX_MS = (1 << 63) - 1

#: ``instance``'s width (:attr:`ProxyState.instance`: 32 bits in hex).
_INSTANCE_CHARS = 8
_MAC_BYTES = 12
_MAC_CHARS = 16  # base64 of 12 bytes, no padding


class Sealed(NamedTuple):
    """What a sealed id carries (see the module's docstring)."""

    instance: str
    number: int
    deadline: int
    resource: str
    wrote_to: str
    original: str


def wall_ms(seconds: float) -> int:
    """Wall-clock ``seconds`` as the whole milliseconds a sealed id carries, clamped to
    ``[0, 2**63)`` (infinite and NaN clocks included)."""
    if math.isnan(seconds):
        return 0
    ms = seconds * 1000.0
    if ms >= _MAX_MS:
        return _MAX_MS
    return int(ms) if ms > 0 else 0


@lru_cache(maxsize=8)
def _pads(key: bytes) -> tuple[hashlib._Hash, hashlib._Hash]:
    """SHA-256 with ``key``'s inner and outer pads already hashed (RFC 2104 §2): HMAC is then
    two copies and two short updates, 0.5 µs against hmac.digest's 1.2 (its own key schedule on
    every call). A test checks it against :func:`hmac.digest`."""
    if len(key) > 64:  # the block size
        key = hashlib.sha256(key).digest()
    key = key.ljust(64, b"\0")
    return (
        hashlib.sha256(bytes([b ^ 0x36 for b in key])),
        hashlib.sha256(bytes([b ^ 0x5C for b in key])),
    )


def mac(key: bytes, message: bytes) -> bytes:
    """HMAC-SHA256 of ``message`` under ``key`` (the same bytes as :func:`hmac.digest`)."""
    inner, outer = _pads(key)
    i = inner.copy()
    i.update(message)
    o = outer.copy()
    o.update(i.digest())
    return o.digest()


def _mac(key: bytes, direction: str, head: str, answerer: str) -> str:
    # mac(), spelled out: this runs for every forward.
    inner, outer = _pads(key)
    i = inner.copy()
    i.update(f"{direction}\0{head}\0{answerer}".encode("utf-8", "surrogatepass"))
    o = outer.copy()
    o.update(i.digest())
    return b2a_base64(o.digest()[:_MAC_BYTES], newline=False).decode("ascii")


def seal(
    key: bytes, direction: str, fields: tuple[str, int, int, str, str, str], answerer: str
) -> str:
    """The id that carries ``fields`` (a :class:`Sealed`, or the same as a plain tuple), sealed
    under ``key`` for ``direction`` (:data:`REQUEST` or
    :data:`CALL`) and for answers from ``answerer`` (the requester's full JID for a request, the
    user's for a call)."""
    instance, number, deadline, resource, wrote_to, original = fields
    head = (
        f"{len(original):x}.{original}{instance}.{number:x}.{deadline:x}.{len(resource):x}."
        f"{resource}{wrote_to}"
    )
    return f"{head}.{_mac(key, direction, head, answerer)}"


def open_id(key: bytes, direction: str, ident: str, answerer: str) -> Sealed | None:
    """The fields sealed in ``ident`` if it was sealed under ``key`` for ``direction`` and
    ``answerer``; None for anything else (not a sealed id, tampered with, another key, another
    direction, an answer from someone else)."""
    head, dot, mac = ident.rpartition(".")
    if not dot or len(mac) != _MAC_CHARS or not mac.isascii():
        return None
    if not hmac.compare_digest(mac, _mac(key, direction, head, answerer)):
        return None
    # An id this code sealed has the fields as seal() wrote them; the checks are for a key
    # someone else knows (an embedder that set none), with which anything can be sealed.
    original = original_of(head)
    if original is None:
        return None
    rest = head[head.find(".") + 1 + len(original) :]
    parts = rest[_INSTANCE_CHARS + 1 :].split(".", 3)
    if len(parts) != 4 or rest[_INSTANCE_CHARS : _INSTANCE_CHARS + 1] != ".":
        return None
    number, deadline, resource_len, tail = parts
    try:
        split = int(resource_len, 16)
        fields = Sealed(
            rest[:_INSTANCE_CHARS],
            int(number, 16),
            int(deadline, 16),
            tail[:split],
            tail[split:],
            original,
        )
    except ValueError:
        return None
    return fields if 0 <= split <= len(tail) else None


def original_of(ident: str) -> str | None:
    """The original id in ``ident`` if it starts as a sealed id does, unchecked (None if not):
    enough to find the request it may answer, whose own sealed id it must then equal exactly."""
    dot = ident.find(".")
    try:
        size = int(ident[:dot], 16) if dot > 0 else -1
    except ValueError:
        return None
    end = dot + 1 + size
    return ident[dot + 1 : end] if size >= 0 and end <= len(ident) else None


def sealed_size(fields: Sealed) -> int:
    """How many bytes longer the sealed id is than the original (UTF-8)."""
    return len(seal(b"", REQUEST, fields, "").encode("utf-8", "surrogatepass")) - len(
        fields.original.encode("utf-8", "surrogatepass")
    )
