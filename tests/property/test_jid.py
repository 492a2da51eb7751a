"""Cutting addresses into parts (RFC 7622 §3.1), which every routing decision relies on: total
over any string the network can send, valid JID or not, and exactly the RFC's steps: the
resourcepart is everything after the first `/` (it may itself hold `/` and `@`), the bare JID
everything before it, and the domainpart the bare JID after its first `@`, if any. The oracle
here is those steps written out with ``str.partition``, independently of the core's index
arithmetic."""

from __future__ import annotations

from client_proxy.core._jid import bare, domain_of, of_account, resource_of
from hypothesis import example, given
from hypothesis import strategies as st

# Any text, the separators and the characters around them drawn often.
texts = st.text(st.one_of(st.sampled_from("@/.ab"), st.characters(exclude_categories=())))
accounts = st.text(st.one_of(st.sampled_from("@.ab"), st.characters(blacklist_characters="/")))


def rfc_parts(jid: str) -> tuple[str, str, str | None]:
    """RFC 7622 §3.1: (bare JID, domainpart, resourcepart or None)."""
    bare_jid, slash, resource = jid.partition("/")
    local, at, domain = bare_jid.partition("@")
    return bare_jid, (domain if at else local), (resource if slash else None)


@given(texts)
@example("")
@example("/")
@example("/r")  # no bare JID at all: the resource is still what follows the `/`
@example("@")
@example("@example.org")  # an empty localpart: the domain is what follows the `@`
@example("u@/r")
@example("u@example.org/r/s@t")
@example("example.org/")
def test_the_parts_are_rfc_7622s(jid: str) -> None:
    expected_bare, expected_domain, expected_resource = rfc_parts(jid)
    assert bare(jid) == expected_bare
    assert domain_of(jid) == expected_domain
    assert resource_of(jid) == expected_resource


@given(texts, accounts)
@example("svc@example.org", "svc@example.org")
@example("svc@example.org/a", "svc@example.org")
@example("svc@example.org.evil/a", "svc@example.org")
@example("svc@example.orga", "svc@example.org")
@example("", "")
def test_of_account_is_the_bare_jid_compared(jid: str, account: str) -> None:
    """``of_account(jid, account)``: the bare JID ``account`` or one of its full JIDs."""
    assert of_account(jid, account) == (rfc_parts(jid)[0] == account)
