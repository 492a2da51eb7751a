"""The compiled core (client_proxy.compiled_core: src/core compiled by mypyc, which the daemon
runs, see client_proxy.shell.corelib) is the same program as client_proxy.core: from the same
config, seed and events it reaches equal states through equal outputs and deadlines.

The two copies have distinct classes with the same names, so each value is carried over by
name (:func:`_carried`) and compared by its type's name and its fields (:func:`_plain`). The
events come from the strategies that the determinism properties use: plausible programs with
arbitrary events mixed in.

Skipped where the compiled core is not built or is stale (under `just mutate`'s mutants), except
under CI, whose bootstrap builds it.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import math
from types import ModuleType
from typing import Any

from client_proxy.core import Event, ProxyConfig, initial_state
from client_proxy.testing import strategies as cps
from client_proxy.testing.strategies import run_events
from hypothesis import given
from hypothesis import strategies as st
from immutables import Map

_PURE = "client_proxy.core"
_COMPILED = "client_proxy.compiled_core"


def _twin(cls: type) -> type:
    """The compiled core's class of the same name as the pure core's ``cls``."""
    module = importlib.import_module(cls.__module__.replace(_PURE, _COMPILED, 1))
    twin: type = getattr(module, cls.__qualname__)
    return twin


def _carried(value: Any) -> Any:
    """``value``, made of the pure core's types, rebuilt with the compiled core's."""
    cls = type(value)
    from_core = cls.__module__.startswith(_PURE + ".")
    if from_core and isinstance(value, enum.Enum):
        return _twin(cls)[value.name]
    if from_core and dataclasses.is_dataclass(value):
        fields = {f.name: _carried(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return _twin(cls)(**fields)
    if from_core and isinstance(value, tuple):  # a NamedTuple
        return _twin(cls)(*map(_carried, value))
    if isinstance(value, tuple):
        return tuple(map(_carried, value))
    if isinstance(value, frozenset):
        return frozenset(map(_carried, value))
    if isinstance(value, Map):
        return Map({_carried(k): _carried(v) for k, v in value.items()})
    return value


def _plain(value: Any) -> Any:
    """``value`` from either core as plain data: its type's name and its fields, all the way."""
    cls = type(value)
    if cls.__name__ == "NotKept":  # the payload a request no longer holds: a class of each copy's
        return "<payload not kept>"  # own, made by type(), which the compiled copy puts elsewhere
    if cls.__module__.startswith((_PURE + ".", _COMPILED + ".")):
        if isinstance(value, enum.Enum):
            return (cls.__name__, value.name)
        if dataclasses.is_dataclass(value):
            return (
                cls.__name__,
                tuple(_plain(getattr(value, f.name)) for f in dataclasses.fields(value)),
            )
        if isinstance(value, tuple):
            return (cls.__name__, tuple(map(_plain, value)))
    if isinstance(value, tuple | list):
        return tuple(map(_plain, value))
    if isinstance(value, frozenset):
        return frozenset(map(_plain, value))
    if isinstance(value, Map):
        return ("Map", {_plain(k): _plain(v) for k, v in value.items()})
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return value


def _run_compiled(
    compiled: ModuleType, config: ProxyConfig, seed: int, events: list[Event]
) -> tuple[Any, list[Any]]:
    state = compiled.initial_state(_carried(config), seed)
    trace = []
    for event in events:
        t = compiled.step(state, _carried(event))
        state = t.state
        trace.append((t.outputs, t.deadline))
    return state, trace


@st.composite
def programs(draw: st.DrawFn) -> tuple[ProxyConfig, int, list[Event]]:
    config = draw(cps.proxy_configs())
    seed = draw(st.integers(0, 2**64 - 1))
    events = draw(cps.event_programs(config, max_size=80))
    extra = draw(st.lists(cps.any_events(config.proxy_domain, config.target), max_size=8))
    for event in extra:
        events.insert(draw(st.integers(0, len(events))), event)
    return config, seed, events


def test_carried_values_are_the_compiled_cores_own_and_compare_by_their_fields(
    compiled_core: ModuleType,
) -> None:
    compiled = compiled_core
    config = ProxyConfig(proxy_domain=cps.EXAMPLE_PROXY, target=cps.EXAMPLE_TARGET)
    carried = _carried(config)
    assert type(carried) is compiled.ProxyConfig
    state = compiled.initial_state(carried, 1)
    assert type(state) is compiled.ProxyState
    assert _plain(state) == _plain(initial_state(config, 1))
    # Another seed is another generator and another instance name: told apart.
    assert _plain(compiled.initial_state(carried, 2)) != _plain(initial_state(config, 1))


@given(program=programs())
def test_the_compiled_core_makes_the_same_transitions(compiled_core, program):
    config, seed, events = program
    pure_state, pure_trace = run_events(initial_state(config, seed), events)
    state, trace = _run_compiled(compiled_core, config, seed, events)
    for step_no, (mine, theirs) in enumerate(zip(trace, pure_trace, strict=True)):
        assert _plain(mine) == _plain(theirs), f"step {step_no}: {events[step_no]!r}"
    assert _plain(state) == _plain(pure_state)
