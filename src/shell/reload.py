"""SIGHUP: read the config file again and apply it while running.

What changes how (the core decides for its part, :class:`~client_proxy.core.ConfigChanged`):

- policy (routing, resource_pattern, allow, deny, rate limits, failure threshold and cooldown,
  limits, retries, request_timeout, outbound_iq, messages, sync_grace) goes to the core, which
  applies it at once without losing or answering twice anything outstanding;
- the shell's own settings (drain_timeout, reconnect_max_delay, log_format) apply from now on;
- `component`, `server` or `secret`: the proxy ends its stream and connects again under the new
  ones, at once; the core keeps what is outstanding and holds the answers that fall due in
  between, as across any reconnect;
- `metrics_listen`: the HTTP listener moves to the new address (or closes, or opens), keeping
  its counts; an address that cannot be bound refuses the whole file, as below, and the
  listener stays where it was. It is bound before anything else changes, so that a refused
  file changes nothing;
- `target` cannot change while running (what is outstanding was sent to it): refused;
- `event_loop`, `seed` and `seal_key_file` are read at start only: noted
  (``config.pending``), kept for the restart. So is the seal key itself: a new `secret` is
  used for the connection at once, and for the key only after a restart (every instance of the
  component must seal with the same key).

A file that does not load or validate is refused with its one-line reason (``config.rejected``)
and the running config stays; a good one logs ``config.reloaded`` with the keys that changed.
Nothing here stops the process. Each SIGHUP gives one reload, one after the other, in order:
binding a new listener waits for the event loop, and a SIGHUP that comes meanwhile waits its
turn rather than reading the file under a half-applied one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from slixmpp.jid import JID

from .config import DERIVED, ConfigError, Settings, load_settings
from .corelib import ConfigChanged
from .logs import set_format

if TYPE_CHECKING:
    from .daemon import Daemon

__all__ = ["RECONNECT_KEYS", "RESTART_KEYS", "Reloads", "changed_keys", "reload_config"]

log = logging.getLogger("client_proxy")

#: Keys whose change makes the proxy connect again.
RECONNECT_KEYS = frozenset({"component", "server", "secret"})
#: Keys read once at start.
RESTART_KEYS = frozenset({"event_loop", "seed", "seal_key_file"})
#: The TOML name of a ProxyConfig field, where it differs.
_TOML_NAMES = {"proxy_domain": "component"}


def _flat(settings: Settings) -> dict[str, Any]:
    """Every setting under its TOML name (the secret as itself: compared, never logged)."""
    values: dict[str, Any] = {
        _TOML_NAMES.get(f.name, f.name): getattr(settings.core, f.name)
        for f in dataclasses.fields(settings.core)
        if f.name not in DERIVED
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
        seal_key_file=settings.seal_key_file,
    )
    return values


def changed_keys(old: Settings, new: Settings) -> list[str]:
    """The keys whose values differ, sorted."""
    before, after = _flat(old), _flat(new)
    return sorted(k for k in after if before.get(k) != after[k])


class Reloads:
    """The SIGHUP handler: one :func:`reload_config` per signal, one at a time, in order."""

    def __init__(self, daemon: Daemon, path: str) -> None:
        self._daemon = daemon
        self._path = path
        self._waiting = 0
        self._task: asyncio.Task[None] | None = None

    def signal(self) -> None:
        self._waiting += 1
        if self._task is None:
            self._task = self._daemon.loop.create_task(self._run())

    async def _run(self) -> None:
        try:
            while self._waiting:
                self._waiting -= 1
                try:
                    await reload_config(self._daemon, self._path)
                except Exception:  # a bug of ours must not end the reloads that follow
                    log.exception("config.failed: reloading %s", self._path)
        finally:
            self._task = None


async def reload_config(daemon: Daemon, path: str) -> None:
    """Apply the config file at ``path`` to the running ``daemon`` (see the module docstring)."""
    if daemon.stopping:
        log.info("config.ignored: SIGHUP during the stop; not reloading")
        return
    daemon.notifier.reloading()
    try:
        await _reload(daemon, path)
    finally:
        daemon.notifier.ready()


def _reject(path: str, reason: str) -> None:
    log.error(
        "config.rejected: %s: %s; keeping the current configuration",
        path,
        reason,
        extra={"fields": {"path": path, "reason": reason}},
    )


async def _reload(daemon: Daemon, path: str) -> None:
    try:
        new = load_settings(path)
    except ConfigError as exc:
        _reject(path, str(exc))
        return
    old = daemon.settings
    if new.target != old.target:
        _reject(
            path,
            f"target cannot change from {old.target} to {new.target} while running: restart "
            "client-proxy for that",
        )
        return
    changed = changed_keys(old, new)
    if not changed:
        log.info("config.reloaded: %s: nothing changed", path, extra={"fields": {"changed": []}})
        return
    if "metrics_listen" in changed:
        try:
            await daemon.set_metrics_listen(new.metrics_listen)
        except OSError as exc:
            host, port = new.metrics_listen or ("", 0)
            _reject(path, f"metrics_listen {host}:{port}: cannot listen: {exc.strerror or exc}")
            return
        if daemon.stopping:
            # The stop began while the listener was being bound: the rest is ignored, as a
            # SIGHUP during the stop is.
            return
    for warning in new.warnings:
        log.warning("config.warning: %s", warning)
    later = [k for k in changed if k in RESTART_KEYS]
    # What only a restart can change stays as it runs, so that what `settings` says is true.
    # The seal key too: every instance must keep sealing with the key the others have (a new
    # secret's key comes with the restart).
    new = dataclasses.replace(
        new,
        event_loop=old.event_loop,
        seed=old.seed,
        seal_key_file=old.seal_key_file,
        core=dataclasses.replace(new.core, seal_key=old.core.seal_key),
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
