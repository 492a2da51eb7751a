"""Which copy of the core the daemon runs: client_proxy.compiled_core, the core compiled by mypyc
(hatch_build.py builds it), when it was compiled from the very source of the installed
client_proxy.core; else client_proxy.core itself.

The two are one program: the compiled copy is made from src/core's modules unchanged, and a
property test (tests/property/test_compiled_core.py) holds it to the same transitions, state
and outputs for every run the whole-system strategies generate. Compiled, a request costs the
core about a third less CPU. What differs is how each takes a value of the wrong type: the
compiled core checks the types its functions declare, so an int for a stanza's id raises
TypeError where the pure core would go on, and a bool passed as a number of seconds becomes one.
The shell gives it parsed strings only, and settings that client_proxy.core's ProxyConfig has
checked first (:func:`proxy_config`), so a config file's mistakes get the same one-line
message whichever core runs.

``CLIENT_PROXY_CORE`` chooses: ``auto`` (the default: compiled if it is there and current),
``compiled`` (that or fail: CI's integration tests), ``python`` (client_proxy.core).

Every module of the shell takes the core's names from here (``from .corelib import step``), so
that one process never mixes the two copies' types.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import client_proxy.core as pure

from .stamp import COMPILED, STAMP, source_digest

__all__ = ["CHOICES", "CoreUnavailable", "choose", "core", "problem", "proxy_config", "why"]

#: The values of CLIENT_PROXY_CORE.
CHOICES = ("auto", "compiled", "python")


class CoreUnavailable(RuntimeError):
    """CLIENT_PROXY_CORE asks for what cannot be had (one line, for the operator)."""


def _compiled() -> tuple[ModuleType | None, str]:
    """The compiled core if it is importable and current, and a few words saying why or why not."""
    try:
        compiled = importlib.import_module(f"client_proxy.{COMPILED}")
    except ImportError as exc:
        return None, f"the compiled core is not built ({exc})"
    try:
        stamp = Path(compiled.__file__ or "").with_name(STAMP).read_text().strip()
    except OSError:
        return None, "the compiled core has no record of its source"
    if stamp != source_digest(Path(pure.__file__).parent):
        return None, "the compiled core was built from other source than client_proxy.core's"
    return compiled, "client_proxy.compiled_core (compiled by mypyc)"


def choose(setting: str | None) -> tuple[ModuleType, str]:
    """The core for CLIENT_PROXY_CORE=``setting`` (None: ``auto``) and why; raises
    CoreUnavailable for an unknown setting, or `compiled` when it cannot be had."""
    setting = (setting or "auto").strip().lower()
    if setting not in CHOICES:
        raise CoreUnavailable(
            f"CLIENT_PROXY_CORE={setting!r}: expected one of {', '.join(CHOICES)}"
        )
    if setting == "python":
        return pure, "client_proxy.core (CLIENT_PROXY_CORE=python)"
    compiled, reason = _compiled()
    if compiled is not None:
        return compiled, reason
    if setting == "compiled":
        raise CoreUnavailable(f"CLIENT_PROXY_CORE=compiled: {reason}")
    return pure, f"client_proxy.core: {reason}"


#: The core the shell runs, and why that one. ``problem``: what CLIENT_PROXY_CORE asked for and
#: could not have (the CLI refuses to start with it; the pure core stands in meanwhile).
problem: str | None = None
try:
    core, why = choose(os.environ.get("CLIENT_PROXY_CORE"))
except CoreUnavailable as exc:
    core, why, problem = pure, "client_proxy.core", str(exc)


def proxy_config(**fields: Any) -> Any:
    """The running core's ProxyConfig of ``fields``, checked by client_proxy.core's first: the
    pure one names every wrong value in a ValueError (a `true` where seconds belong, a float
    where a count does), where the compiled one would turn a bool into a number or raise a
    TypeError naming no setting."""
    checked = pure.ProxyConfig(**fields)
    if core is pure:
        return checked
    return core.ProxyConfig(
        **{f.name: getattr(checked, f.name) for f in dataclasses.fields(checked)}
    )


def __getattr__(name: str) -> Any:
    return getattr(core, name)
