"""ProxyConfig is the one source of truth for what a valid setting is (the shell's config loader
reports its ValueError as the one-line config error): every setting is checked at and around
its boundary, and every refusal names the setting."""

from __future__ import annotations

import math
from typing import Any

import pytest
from client_proxy.core import ProxyConfig
from hypothesis import given
from hypothesis import strategies as st

PROXY = "proxy.example.org"
TARGET = "svc@example.org"

#: (setting, the least valid value, whether that least value is excluded: `> 0` rather than `>= 0`)
SECONDS = [
    ("request_timeout", 0.0, True),
    ("sync_grace", 0.0, False),
    ("failure_cooldown", 0.0, False),
    ("rate_limit", 0.0, False),
]
INTEGERS = [
    ("max_outstanding", 1),
    ("max_per_requester", 1),
    ("max_outstanding_bytes", 1),
    ("max_bytes_per_requester", 1),
    ("rate_burst", 1),
    ("failure_threshold", 0),
]
FLAGS = ["retry_get", "retry_set", "outbound_iq", "messages"]


def config(**changes: Any) -> ProxyConfig:
    return ProxyConfig(**{"proxy_domain": PROXY, "target": TARGET, **changes})


def refused(name: str, **changes: Any) -> None:
    """Building the config with ``changes`` raises a ValueError that names the setting and, when
    it says what the setting must be, says it (the shell prints the message as the one-line
    config error)."""
    with pytest.raises(ValueError, match=name) as refusal:
        config(**changes)
    message = str(refusal.value)
    if " must be " in message and ", not " in message:
        wanted = message.split(" must be ", 1)[1].rsplit(", not ", 1)[0]
        assert wanted.strip(), f"says what {name} must be: {message!r}"


@pytest.mark.parametrize(("name", "least", "exclusive"), SECONDS)
@given(value=st.floats(allow_nan=True, allow_infinity=True))
def test_seconds_are_finite_and_at_least_their_bound(
    name: str, least: float, exclusive: bool, value: float
) -> None:
    valid = math.isfinite(value) and (value > least if exclusive else value >= least)
    if valid:
        assert getattr(config(**{name: value}), name) == value
    else:
        refused(name, **{name: value})


@pytest.mark.parametrize(("name", "least", "exclusive"), SECONDS)
def test_seconds_at_the_boundary(name: str, least: float, exclusive: bool) -> None:
    below = math.nextafter(least, -math.inf)
    above = math.nextafter(least, math.inf)
    refused(name, **{name: below})
    refused(name, **{name: -0.5})
    config(**{name: above})
    if exclusive:
        refused(name, **{name: least})
    else:
        config(**{name: least})
    refused(name, **{name: True})
    refused(name, **{name: "1"})


@pytest.mark.parametrize(("name", "least"), INTEGERS)
@given(value=st.integers(-3, 3))
def test_counts_are_integers_at_least_their_bound(name: str, least: int, value: int) -> None:
    if value >= least:
        assert getattr(config(**{name: value}), name) == value
    else:
        refused(name, **{name: value})


@pytest.mark.parametrize(("name", "least"), INTEGERS)
def test_counts_refuse_what_is_not_an_integer(name: str, least: int) -> None:
    for value in (True, False, float(least + 1), str(least + 1), None):
        refused(name, **{name: value})


@pytest.mark.parametrize("name", FLAGS)
def test_flags_are_booleans(name: str) -> None:
    for value in (True, False):
        assert getattr(config(**{name: value}), name) is value
    for value in (0, 1, "yes", None):
        refused(name, **{name: value})


@given(localpart=st.text("abcdefghijklmnopqrstuvwxyz0123456789.-_", min_size=1, max_size=20))
def test_the_target_may_not_live_at_the_component(localpart: str) -> None:
    """Every address at the component's domain is the component's own: a target there would be
    routed back to the proxy."""
    refused("component itself", target=f"{localpart}@{PROXY}")
    assert config(target=f"{localpart}@example.org").target == f"{localpart}@example.org"
    # A domain that merely ends like the component's is another domain.
    assert config(target=f"{localpart}@x{PROXY}").target == f"{localpart}@x{PROXY}"


@pytest.mark.parametrize("name", ["deny", "allow"])
def test_allow_and_deny_hold_trimmed_non_empty_addresses(name: str) -> None:
    assert getattr(config(**{name: ("example.org", "u@example.org/r")}), name) == (
        "example.org",
        "u@example.org/r",
    )
    for entry in ("", " example.org", "example.org ", 3):
        refused(name, **{name: (entry,)})
    refused(name, **{name: ["example.org"]})


def test_routing_and_pattern() -> None:
    refused("routing", routing="fastest")
    refused("resource_pattern", resource_pattern="(")
    refused("resource_pattern", resource_pattern="")
    assert config(resource_pattern="worker-.*").resource_pattern == "worker-.*"


labels = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)


@given(local=labels, resource=labels)
def test_the_proxy_domain_is_a_bare_domain_and_the_target_a_bare_jid(local: str, resource: str):
    """The component's JID has no localpart and no resource (XEP-0114: a component is a
    domain); the target is an account's bare JID: a localpart, and no resource."""
    refused("proxy_domain", proxy_domain=f"{local}@{PROXY}")
    refused("proxy_domain", proxy_domain=f"{PROXY}/{resource}")
    refused("proxy_domain", proxy_domain=f"{local}@{PROXY}/{resource}")
    refused("proxy_domain", proxy_domain=f"{PROXY}/")  # an empty resource is still one
    refused("proxy_domain", proxy_domain=f"/{resource}")  # and so is one with no domain
    refused("target", target=f"{TARGET}/{resource}")
    refused("target", target="example.org")
    refused("target", target=f"example.org/{resource}")
    assert config(proxy_domain=f"{local}.{PROXY}").proxy_domain == f"{local}.{PROXY}"
    assert config(target=f"{local}@example.org").target == f"{local}@example.org"


@pytest.mark.parametrize("name", ["proxy_domain", "target"])
def test_the_addresses_are_non_empty_strings(name: str) -> None:
    for value in ("", None, 3, b"svc@example.org"):
        refused(name, **{name: value})
