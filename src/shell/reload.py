"""SIGHUP: read the config file again and apply it while running.

What changes how (the core decides for its part, :class:`~client_proxy.core.ConfigChanged`):

- policy (routing, resource_pattern, allow, deny, rate limits, failure threshold and cooldown,
  limits, retries, request_timeout, outbound_iq, messages, sync_grace) goes to the core, which
  applies it at once without losing or answering twice anything outstanding;
- the shell's own settings (drain_timeout, reconnect_max_delay, log_format) apply from now on;
- `component`, `server` or `secret`: the proxy ends its stream and connects again under the new
  ones, at once; the core keeps what is outstanding and holds the answers that fall due in
  between, as across any reconnect;
- `target` cannot change while running (what is outstanding was sent to it): refused;
- `event_loop`, `seed` and `metrics_listen` are read at start only: noted, kept for the restart.

A file that does not load or validate is refused with its one-line reason (``config.rejected``)
and the running config stays; a good one logs ``config.reloaded`` with the keys that changed.
Nothing here stops the process.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from client_proxy.core import ConfigChanged
from slixmpp.jid import JID

from .config import ConfigError, Settings, load_settings
from .logs import set_format

if TYPE_CHECKING:
    from .daemon import Daemon

__all__ = ["RECONNECT_KEYS", "RESTART_KEYS", "changed_keys", "reload_config"]

log = logging.getLogger("client_proxy")

#: Keys whose change makes the proxy connect again.
RECONNECT_KEYS = frozenset({"component", "server", "secret"})
#: Keys read once at start.
RESTART_KEYS = frozenset({"event_loop", "seed", "metrics_listen"})
#: The TOML name of a ProxyConfig field, where it differs.
_TOML_NAMES = {"proxy_domain": "component"}


def _flat(settings: Settings) -> dict[str, Any]:
    """Every setting under its TOML name (the secret as itself: compared, never logged)."""
    values: dict[str, Any] = {
        _TOML_NAMES.get(f.name, f.name): getattr(settings.core, f.name)
        for f in dataclasses.fields(settings.core)
    }
    values.update(
        server=(settings.host, settings.port),
        secret=settings.secret,
        drain_timeout=settings.drain_timeout,
        reconnect_max_delay=settings.reconnect_max_delay,
        seed=settings.seed,
        event_loop=settings.event_loop,
        metrics_listen=settings.metrics_listen,
        log_format=settings.log_format,
    )
    return values


def changed_keys(old: Settings, new: Settings) -> list[str]:
    """The keys whose values differ, sorted."""
    before, after = _flat(old), _flat(new)
    return sorted(k for k in after if before.get(k) != after[k])


def reload_config(daemon: Daemon, path: str) -> None:
    """Apply the config file at ``path`` to the running ``daemon`` (see the module docstring)."""
    if daemon.stopping:
        log.info("config.ignored: SIGHUP during the stop; not reloading")
        return
    daemon.notifier.reloading()
    try:
        _reload(daemon, path)
    finally:
        daemon.notifier.ready()


def _reload(daemon: Daemon, path: str) -> None:
    try:
        new = load_settings(path)
    except ConfigError as exc:
        log.error(
            "config.rejected: %s: %s; keeping the current configuration",
            path,
            exc,
            extra={"fields": {"path": path, "reason": str(exc)}},
        )
        return
    old = daemon.settings
    if new.target != old.target:
        reason = (
            f"target cannot change from {old.target} to {new.target} while running: restart "
            "client-proxy for that"
        )
        log.error(
            "config.rejected: %s: %s; keeping the current configuration",
            path,
            reason,
            extra={"fields": {"path": path, "reason": reason}},
        )
        return
    changed = changed_keys(old, new)
    if not changed:
        log.info("config.reloaded: %s: nothing changed", path, extra={"fields": {"changed": []}})
        return
    for warning in new.warnings:
        log.warning("config.warning: %s", warning)
    later = [k for k in changed if k in RESTART_KEYS]
    # What only a restart can change stays as it runs, so that what `settings` says is true.
    new = dataclasses.replace(
        new, event_loop=old.event_loop, seed=old.seed, metrics_listen=old.metrics_listen
    )
    daemon.settings = new
    daemon.apply(ConfigChanged(daemon.loop.time(), new.core))
    if "log_format" in changed:
        set_format(new.log_format)
    log.info(
        "config.reloaded: %s: changed %s",
        path,
        ", ".join(changed),
        extra={"fields": {"path": path, "changed": changed}},
    )
    if later:
        log.warning("config.pending: %s take effect at the next restart", ", ".join(later))
    if RECONNECT_KEYS.intersection(changed):
        _reconnect_under(daemon, new)


def _reconnect_under(daemon: Daemon, settings: Settings) -> None:
    """Point the component connection at the new domain, server and secret, and connect again
    now (slixmpp's ComponentXMPP keeps them in these attributes, read at each connect)."""
    xmpp = daemon.xmpp
    xmpp.boundjid = JID(settings.component)
    xmpp.requested_jid = JID(settings.component)
    xmpp.stream_header = (
        f'<stream:stream xmlns="jabber:component:accept" xmlns:stream="{xmpp.stream_ns}" '
        f'to="{settings.component}">'
    )
    xmpp.secret = settings.secret
    xmpp.server_host = xmpp.default_domain = settings.host
    xmpp.server_port = settings.port
    log.info(
        "connection.reconnecting: as %s via %s:%d (the reload changed them)",
        settings.component,
        settings.host,
        settings.port,
    )
    daemon.reconnect_under_new_settings()
