"""The TOML configuration: read, checked, and turned into the core's :class:`ProxyConfig`.

Every problem becomes a :class:`ConfigError` whose message is one line naming the key and what is
wrong with it; the CLI prints it and exits 2.
"""

from __future__ import annotations

import dataclasses
import hmac
import importlib.util
import ipaddress
import math
import os
import shlex
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slixmpp.jid import JID, InvalidJID

from .corelib import ProxyConfig, proxy_config

__all__ = [
    "DEFAULTS",
    "EVENT_LOOPS",
    "LOG_FORMATS",
    "SECRET_ENV",
    "ConfigError",
    "Settings",
    "load_settings",
    "parse_settings",
]

#: Read when neither `secret` nor `secret_file` is in the file.
SECRET_ENV = "CLIENT_PROXY_SECRET"

#: The TOML keys that are the core's settings, under the name of ProxyConfig's field where it
#: differs (everything else in ProxyConfig keeps its name).
_CORE_NAMES = {"component": "proxy_domain"}
#: ProxyConfig's fields that are no TOML key: the daemon derives them (:func:`seal_key`).
DERIVED = frozenset({"seal_key"})
_CORE_DEFAULTS: dict[str, Any] = {
    f.name: f.default
    for f in dataclasses.fields(ProxyConfig)
    if f.default is not dataclasses.MISSING and f.name not in DERIVED
}
#: The label that makes the seal key from its material (HKDF's `info`, with the component's
#: domain after it): fixed, so that every instance serving one component derives the same key.
SEAL_LABEL = b"client-proxy seal key v1\0"
#: The least `seal_key_file` may hold: 128 bits.
SEAL_KEY_MIN_BYTES = 16
#: Settings of the daemon itself (the core never sees them), with their defaults.
SHELL_DEFAULTS: dict[str, Any] = {
    "drain_timeout": 5.0,
    "reconnect_max_delay": 30.0,
    "seed": None,
    "seal_key_file": None,
    "event_loop": "uvloop",
    "metrics_listen": None,
    "log_format": "text",
}
#: Every optional key with its default, as the README's config reference lists them: the core's
#: come from ProxyConfig, the one source of truth (lists where TOML has lists).
DEFAULTS: dict[str, Any] = {
    **{k: list(v) if isinstance(v, tuple) else v for k, v in _CORE_DEFAULTS.items()},
    **SHELL_DEFAULTS,
}
#: The values of `event_loop`: uvloop (a dependency wherever it installs: CPython, not on
#: Windows), or the standard library's own loop. Left out, `event_loop` is uvloop if it is
#: installed and asyncio otherwise (see :attr:`Settings.event_loop_note`).
EVENT_LOOPS = ("asyncio", "uvloop")
#: The values of `log_format`: one line of text per event, or one JSON object per line.
LOG_FORMATS = ("text", "json")
#: What systemd's LoadCredential= sets for the service: `secret_file` may start with it.
CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"
_REQUIRED = ("component", "server", "target")
_SECRETS = ("secret", "secret_file")
_KNOWN = frozenset((*_REQUIRED, *_SECRETS, *DEFAULTS))


class ConfigError(Exception):
    """A configuration problem, with a one-line message for the operator."""


@dataclass(frozen=True)
class Settings:
    """Everything the daemon needs: the core's config plus what only the shell uses."""

    core: ProxyConfig
    host: str
    port: int
    secret: str = field(repr=False)
    drain_timeout: float
    reconnect_max_delay: float
    seed: int | None
    #: The event loop `client-proxy run` runs on, as parse_settings resolves it: uvloop, unless
    #: the config asks for asyncio or uvloop is not installed. Settings made by hand: asyncio.
    event_loop: str = "asyncio"
    #: Set when `event_loop` was left to its default and that could not be had: why the proxy
    #: runs on another loop (one line, for the log).
    event_loop_note: str | None = None
    #: Where `GET /metrics` and `GET /healthz` are served (host, port); None: nowhere.
    metrics_listen: tuple[str, int] | None = None
    #: "text" or "json" (:data:`LOG_FORMATS`).
    log_format: str = "text"
    #: Where the seal key's material was read from (None: the component secret).
    seal_key_file: str | None = None
    #: Things that work but that an operator should hear about (one line each): `check` prints
    #: them, `run` logs them at warning.
    warnings: tuple[str, ...] = ()

    @property
    def component(self) -> str:
        return self.core.proxy_domain

    @property
    def target(self) -> str:
        return self.core.target


def load_settings(path: str | os.PathLike[str], environ: dict[str, str] | None = None) -> Settings:
    """Read and check the TOML file at ``path``; raise :class:`ConfigError` on any problem."""
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text") from None
    return parse_settings(raw, base=Path(path).parent, environ=environ)


def parse_settings(
    raw: dict[str, Any], base: Path | None = None, environ: dict[str, str] | None = None
) -> Settings:
    """Check a parsed TOML table. ``base`` resolves a relative `secret_file`."""
    env = os.environ if environ is None else environ
    unknown = sorted(set(raw) - _KNOWN)
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} (known keys: {', '.join(sorted(_KNOWN))})")
    for key in _REQUIRED:
        if key not in raw:
            raise ConfigError(f"missing key {key!r}")
    component = _domain(_string(raw, "component"))
    target = _bare_jid(_string(raw, "target"))
    host, port = _server(_string(raw, "server"))
    warnings: list[str] = []
    secret = _secret(raw, base, env, warnings)

    values = {**DEFAULTS, **{k: v for k, v in raw.items() if k in DEFAULTS}}
    drain_timeout = _seconds(values, "drain_timeout")
    reconnect_max_delay = _seconds(values, "reconnect_max_delay", positive=True)
    seed = values["seed"]
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise ConfigError(f"seed must be an integer, not {seed!r}")
    event_loop = values["event_loop"]
    event_loop_note = None
    if event_loop not in EVENT_LOOPS:
        raise ConfigError(f"event_loop must be one of {', '.join(EVENT_LOOPS)}, not {event_loop!r}")
    if event_loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        if "event_loop" in raw:
            raise ConfigError(
                "event_loop = 'uvloop' needs the uvloop package, which is not installed "
                "(pip install uvloop; it does not exist for Windows or PyPy)"
            )
        # The default, where uvloop does not install: asyncio's own loop does the same job.
        event_loop = "asyncio"
        event_loop_note = (
            "uvloop is not installed: running on asyncio's own event loop "
            "(set event_loop = 'asyncio' to say so)"
        )

    metrics_listen = None
    if values["metrics_listen"] is not None:
        metrics_listen = _server(_string(values, "metrics_listen"), "metrics_listen")
        if not _loopback(metrics_listen[0]):
            warnings.append(
                f"metrics_listen {values['metrics_listen']!r} is not a loopback address: "
                "anyone who can reach it reads the metrics and the health"
            )
    log_format = values["log_format"]
    if log_format not in LOG_FORMATS:
        raise ConfigError(f"log_format must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")

    seal_key_file = None
    material = secret.encode("utf-8")
    if values["seal_key_file"] is not None:
        seal_key_file = _string(values, "seal_key_file")
        material = _seal_material(seal_key_file, base, env, warnings)

    # The core's settings are checked by ProxyConfig itself; the shell only turns TOML into its
    # types (lists into tuples, JIDs normalised as the server would).
    core_values = {k: values[k] for k in _CORE_DEFAULTS}
    core_values["deny"] = _jid_list(values, "deny")
    core_values["allow"] = _jid_list(values, "allow")
    core_values["seal_key"] = seal_key(material, component)
    try:
        core = proxy_config(proxy_domain=component, target=target, **core_values)
    except ValueError as exc:
        message = str(exc)
        for key, name in _CORE_NAMES.items():
            message = message.replace(name, key)
        raise ConfigError(message) from None
    return Settings(
        core,
        host,
        port,
        secret,
        drain_timeout,
        reconnect_max_delay,
        seed,
        event_loop,
        event_loop_note,
        metrics_listen=metrics_listen,
        log_format=log_format,
        seal_key_file=seal_key_file,
        warnings=tuple(warnings),
    )


def seal_key(material: bytes, component: str) -> bytes:
    """The 32-byte key that seals forwarded ids (``client_proxy.core._seal``): HKDF-SHA256 of
    ``material`` (the component secret, or what `seal_key_file` holds), with no salt and
    :data:`SEAL_LABEL` plus the component's domain as `info`. Every instance that shares the
    material and the domain derives the same key, and the secret itself never signs anything."""
    return hkdf_sha256(material, SEAL_LABEL + component.encode("utf-8"))


def hkdf_sha256(material: bytes, info: bytes) -> bytes:
    """HKDF-SHA256 (RFC 5869) without salt, 32 bytes: extract, then the one expansion block 32
    bytes need. Two HMACs from the standard library; `cryptography` would be a compiled
    dependency for them. (A unit test checks it against RFC 5869's test case 3.)"""
    prk = hmac.digest(b"\0" * 32, material, "sha256")  # §2.2: no salt is HashLen zeros
    return hmac.digest(prk, info + b"\x01", "sha256")  # §2.3: T(1)


def _seal_material(
    text: str, base: Path | None, env: dict[str, str] | os._Environ[str], warnings: list[str]
) -> bytes:
    """What `seal_key_file` holds, its surrounding whitespace stripped: at least 16 bytes."""
    path = _credential_path(text, env, "seal_key_file")
    if base is not None and not path.is_absolute():
        path = base / path
    try:
        material = path.read_bytes().strip()
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"cannot read seal_key_file {str(path)!r}: {exc.strerror}") from None
    if len(material) < SEAL_KEY_MIN_BYTES:
        raise ConfigError(
            f"seal_key_file {str(path)!r} holds {len(material)} bytes; it needs at least "
            f"{SEAL_KEY_MIN_BYTES} (for example: head -c 32 /dev/urandom | base64 > FILE)"
        )
    if mode & stat.S_IROTH:
        warnings.append(
            f"seal_key_file {str(path)!r} is readable by every user of this machine "
            f"(chmod o-r {shlex.quote(str(path))})"
        )
    return material


def _string(raw: dict[str, Any], key: str) -> str:
    value = raw[key]
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key} must be a non-empty string, not {value!r}")
    return value.strip()


def _jid(text: str, key: str) -> Any:
    # slixmpp applies the JID profiles (nodeprep, nameprep, resourceprep), the same
    # normalisation the server applies to the addresses it stamps, so the core can compare
    # strings exactly.
    try:
        return JID(text)
    except InvalidJID as exc:
        raise ConfigError(f"{key} {text!r} is not a valid JID: {exc}") from None


def _jid_list(values: dict[str, Any], key: str) -> tuple[str, ...]:
    entries = values[key]
    if not isinstance(entries, list):
        raise ConfigError(f"{key} must be a list of JIDs or domains, not {entries!r}")
    normalised = []
    for entry in entries:
        if not isinstance(entry, str) or not entry.strip():
            raise ConfigError(f"{key} entries must be JIDs or domains, not {entry!r}")
        normalised.append(str(_jid(entry.strip(), f"{key} entry")))
    return tuple(normalised)


def _domain(text: str) -> str:
    jid = _jid(text, "component")
    if jid.user or jid.resource:
        raise ConfigError(
            f"component {text!r} must be the component's domain alone (like proxy.example.org)"
        )
    return str(jid.domain)


def _bare_jid(text: str) -> str:
    jid = _jid(text, "target")
    if not jid.user or jid.resource:
        raise ConfigError(f"target {text!r} must be a bare JID like svc@example.org")
    return str(jid.bare)


def _server(text: str, key: str = "server") -> tuple[str, int]:
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text:
        raise ConfigError(f"{key} {text!r} must be host:port (like 127.0.0.1:5347)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"{key} port {port_text!r} is not a number") from None
    if not 1 <= port <= 65535:
        raise ConfigError(f"{key} port {port} is out of range (1-65535)")
    return host, port


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _secret(
    raw: dict[str, Any],
    base: Path | None,
    env: dict[str, str] | os._Environ[str],
    warnings: list[str],
) -> str:
    if "secret" in raw and "secret_file" in raw:
        raise ConfigError("set only one of secret and secret_file")
    if "secret" in raw:
        return _string(raw, "secret")
    if "secret_file" in raw:
        path = _credential_path(_string(raw, "secret_file"), env, "secret_file")
        if base is not None and not path.is_absolute():
            path = base / path
        try:
            secret = path.read_text(encoding="utf-8").strip()
            mode = path.stat().st_mode
        except OSError as exc:
            raise ConfigError(f"cannot read secret_file {str(path)!r}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"secret_file {str(path)!r} is not UTF-8 text") from None
        if not secret:
            raise ConfigError(f"secret_file {str(path)!r} is empty")
        if mode & stat.S_IROTH:
            warnings.append(
                f"secret_file {str(path)!r} is readable by every user of this machine "
                f"(chmod o-r {shlex.quote(str(path))})"
            )
        return secret
    secret = env.get(SECRET_ENV, "").strip()
    if not secret:
        raise ConfigError(f"missing key 'secret' (or 'secret_file', or ${SECRET_ENV})")
    return secret


def _credential_path(text: str, env: dict[str, str] | os._Environ[str], key: str) -> Path:
    """`secret_file` (or `seal_key_file`, as ``key`` says), with a leading
    ``$CREDENTIALS_DIRECTORY`` (or ``${...}``) replaced by the folder where systemd put the
    service's credentials (``LoadCredential=``): the unit names the credential, the config file
    names the same path whatever folder systemd picks."""
    for prefix in (f"${{{CREDENTIALS_ENV}}}", f"${CREDENTIALS_ENV}"):
        if text.startswith(prefix):
            folder = env.get(CREDENTIALS_ENV, "")
            if not folder:
                raise ConfigError(
                    f"{key} {text!r} names ${CREDENTIALS_ENV}, which is not set "
                    "(systemd sets it for a unit with LoadCredential=)"
                )
            return Path(folder) / text[len(prefix) :].lstrip("/")
    return Path(text)


def _seconds(values: dict[str, Any], key: str, positive: bool = False) -> float:
    value = values[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{key} must be a number of seconds, not {value!r}")
    if value < 0 or (positive and value == 0):
        raise ConfigError(f"{key} must be {'> 0' if positive else '>= 0'}, not {value!r}")
    return float(value)
