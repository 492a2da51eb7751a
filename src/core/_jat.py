"""Jabber Address Translation: how a requester's address travels inside the proxy's resourcepart.

The requester `user@example.org/abc` is written as the resource of the proxy's own domain:
`proxy.example.org/user@example.org/abc`. This is mod_client_proxy's form, kept so that an
implementing client written for it (Jitsi's focus, for one) can still read who is asking.

Two rules keep the round trip exact:

- RFC 7622 §3.4 limits a resourcepart to 1023 octets of UTF-8. A longer requester address cannot
  be carried; it is refused, never truncated (a truncated address would route the reply to
  somebody else).
- The server applies the resourcepart profile (Resourceprep, RFC 3920 Appendix B / RFC 6122, or
  OpaqueString with NFC, RFC 7613 §4.2) to the translated address before the implementing client
  sees it, and the reply comes back with the normalised form. An encoding that normalisation could
  change would make the reply unmatchable, so such requesters are refused too. Addresses stamped
  by a server are already normalised part by part, which is why the check almost never fires.
"""

from __future__ import annotations

import stringprep
import unicodedata

from ._jid import MAX_PART_BYTES, bare, resource_of

__all__ = ["decode_requester", "encode_requester", "translation_problem"]


def encode_requester(proxy_domain: str, requester: str) -> str:
    """The translated address the implementing client sees as `from`: `proxy-domain/<requester>`.

    Call :func:`translation_problem` first; this function does not check.
    """
    return f"{proxy_domain}/{requester}"


def decode_requester(proxy_domain: str, translated: str) -> str | None:
    """The requester's address carried in `translated`, or None if it is not a translated address
    of `proxy_domain` (wrong domain, a localpart, or no resource)."""
    if bare(translated) != proxy_domain:
        return None
    return resource_of(translated) or None


def _resourceprep_changes(text: str) -> bool:
    """True if Resourceprep (RFC 3920 Appendix B: stringprep tables B.1 mapping, NFKC, C.1.2-C.9
    prohibition, RFC 3454 §6 bidi) would change or reject `text`. OpaqueString (RFC 7613 §4.2:
    NFC) changes nothing that NFKC leaves alone, so passing this check satisfies both profiles.
    """
    if unicodedata.normalize("NFKC", text) != text:
        return True
    has_randalcat = False
    has_l = False
    for ch in text:
        if stringprep.in_table_b1(ch):
            return True
        if (
            stringprep.in_table_c12(ch)
            or stringprep.in_table_c21_c22(ch)
            or stringprep.in_table_c3(ch)
            or stringprep.in_table_c4(ch)
            or stringprep.in_table_c5(ch)
            or stringprep.in_table_c6(ch)
            or stringprep.in_table_c7(ch)
            or stringprep.in_table_c8(ch)
            or stringprep.in_table_c9(ch)
            or stringprep.in_table_a1(ch)
        ):
            return True
        if stringprep.in_table_d1(ch):
            has_randalcat = True
        elif stringprep.in_table_d2(ch):
            has_l = True
    return has_randalcat and (
        has_l or not stringprep.in_table_d1(text[0]) or not stringprep.in_table_d1(text[-1])
    )


def translation_problem(requester: str) -> str | None:
    """Why `requester` cannot be carried in a resourcepart, or None if it can.

    The answer is a human-readable reason suitable for an error stanza's `<text/>`.
    """
    if not requester:
        return "the request has no sender address"
    ascii = requester.isascii()
    size = len(requester) if ascii else len(requester.encode("utf-8", "surrogatepass"))
    if size > MAX_PART_BYTES:
        return (
            f"your address is {size} bytes long; client-proxy carries it in a resourcepart, "
            f"which RFC 7622 §3.4 limits to {MAX_PART_BYTES} bytes"
        )
    # _jid.domain_of(requester), spelled out: this runs for every request.
    slash = requester.find("/")
    bare_jid = requester if slash < 0 else requester[:slash]
    if not bare_jid[bare_jid.find("@") + 1 :]:
        return "the sender address has no domain"
    if ascii:
        # Of ASCII, Resourceprep touches only the controls (RFC 3454 table C.2.1; the space,
        # C.1.1, is allowed in a resourcepart), which are exactly the ASCII characters that
        # str.isprintable() rejects. NFKC and every other table leave ASCII alone.
        if not requester.isprintable():
            return "the sender address contains characters a resourcepart may not carry"
        return None
    if _resourceprep_changes(requester):
        return "the sender address would be altered by resourcepart normalisation (Resourceprep)"
    return None
