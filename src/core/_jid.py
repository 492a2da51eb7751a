"""JID splitting by RFC 7622 §3.1, total over any string the network can send.

The core never normalises addresses: the server has already applied the PRECIS/stringprep
profiles to every address it stamps (RFC 6120 §8.1.2.1), and the shell normalises the
configured ones. Here we only cut strings at the separators, which is what routing needs.
"""

from __future__ import annotations

__all__ = ["MAX_PART_BYTES", "bare", "domain_of", "of_account", "resource_of"]

#: RFC 7622 §3.2-3.4: each of localpart, domainpart and resourcepart is at most 1023 octets.
MAX_PART_BYTES = 1023


def bare(jid: str) -> str:
    """The bare JID (`local@domain` or `domain`): all before the first `/` (RFC 7622 §3.1)."""
    slash = jid.find("/")
    return jid if slash < 0 else jid[:slash]


def resource_of(jid: str) -> str | None:
    """The resourcepart, or None for a bare JID. It may itself contain `/` and `@` (§3.4)."""
    slash = jid.find("/")
    return None if slash < 0 else jid[slash + 1 :]


def domain_of(jid: str) -> str:
    """The domainpart: the bare JID after its first `@`, if any (§3.1 steps 1-2)."""
    b = bare(jid)
    at = b.find("@")
    return b if at < 0 else b[at + 1 :]


def of_account(jid: str, account: str) -> bool:
    """True if ``jid`` is the bare JID ``account`` or one of its full JIDs; the same as
    ``bare(jid) == account`` without building the bare JID (this runs for every stanza)."""
    return jid.startswith(account) and (len(jid) == len(account) or jid[len(account)] == "/")
