"""`just soak --kill` tells the instances apart by the tag in each forward's sealed id: it must
read the tag where the core seals it, whatever the original id and the resource (a soak that
read the wrong field took every instance for one, and failed)."""

from __future__ import annotations

from client_proxy.core._seal import REQUEST, Sealed, seal
from client_proxy.testing import strategies as cps
from hypothesis import given
from hypothesis import strategies as st

from benchmarks.soak import _instance_of


@given(
    st.integers(0, 2**32 - 1).map(lambda n: f"{n:08x}"),
    st.integers(0, 2**64),
    st.integers(0, 2**63 - 1),
    cps.resourceparts(64),
    st.one_of(st.sampled_from(["", "1", "a.b.c", "."]), st.text()),
)
def test_the_soak_reads_the_instance_a_forward_was_sealed_by(
    instance, number, deadline, resource, original
):
    ident = seal(
        b"key", REQUEST, Sealed(instance, number, deadline, resource, "", original), "u@x/y"
    )
    assert _instance_of(ident) == instance


def test_an_id_that_is_not_sealed_has_no_instance() -> None:
    assert _instance_of("plain") == ""
    assert _instance_of("") == ""
