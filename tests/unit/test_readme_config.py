"""The README's config reference is the operator's contract: every optional key it lists has
the default it states, in the core (``ProxyConfig``, the one source of truth for the core's
settings) and in the shell's own settings; and the keys it lists are exactly the keys the
config loader knows."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path
from typing import Any

from client_proxy.core import ProxyConfig
from client_proxy.shell import config

README = Path(__file__).resolve().parents[2] / "README.md"

#: A row of the config reference: | `key` | default | meaning |
_ROW = re.compile(r"^\| `([a-z_]+)`(?: / `[a-z_]+`)? \| ([^|]+) \|", re.MULTILINE)


def _reference() -> dict[str, str]:
    """The config reference table's keys and the default column's text, as written."""
    text = README.read_text(encoding="utf-8")
    start = text.index("| key | default | meaning |")
    end = text.index("\n\n", start)
    return {key: default.strip() for key, default in _ROW.findall(text[start:end])}


def _toml_value(default: str) -> Any:
    """The default column as a value: a TOML literal in backticks (`30`, `"random"`, `[]`), or
    "none" (the key is unset)."""
    if default == "none":
        return None
    literal = re.match(r"`([^`]*)`", default)
    assert literal is not None, f"a default that is neither a TOML literal nor none: {default}"
    return tomllib.loads(f"v = {literal.group(1)}")["v"]


def test_every_default_the_readme_states_is_the_one_the_code_has() -> None:
    reference = _reference()
    stated = {
        key: _toml_value(default)
        for key, default in reference.items()
        if default not in ("required", "random") and not default.startswith("one required")
    }
    assert stated, "the README lists the config keys"
    for key, value in stated.items():
        assert key in config.DEFAULTS, f"the README lists {key}, which has no default"
        assert config.DEFAULTS[key] == value, (key, config.DEFAULTS[key], value)
        # `true` is not `1`: a flag is stated as a flag.
        assert isinstance(config.DEFAULTS[key], bool) == isinstance(value, bool), key


def test_the_cores_defaults_are_its_fields_defaults() -> None:
    """What an embedder gets from ``ProxyConfig(domain, target)`` is what the README states for
    an operator who leaves the key out (the TOML lists are the core's tuples)."""
    built = ProxyConfig("proxy.example.org", "svc@example.org")
    reference = _reference()
    for f in dataclasses.fields(ProxyConfig):
        if f.default is dataclasses.MISSING or f.name in config.DERIVED:
            continue
        key = f.name
        assert key in reference, f"ProxyConfig.{key} is not in the README's config reference"
        value = getattr(built, key)
        stated = _toml_value(reference[key])
        assert (list(value) if isinstance(value, tuple) else value) == stated, key


def test_the_reference_lists_every_key_the_loader_knows() -> None:
    listed = set(_reference())
    known = {*config.DEFAULTS, "component", "server", "target", "secret"}
    assert listed == known, (listed - known, known - listed)
