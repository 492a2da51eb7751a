"""The `client-proxy` command: `run` the daemon or `check` a config file."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version

from . import corelib
from .config import ConfigError, Settings, load_settings
from .daemon import run
from .logs import setup_logging

__all__ = ["main"]

_LOG_LEVELS = ("debug", "info", "warning", "error")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="client-proxy",
        description="Serve an XMPP component address from the online resources of one client "
        "account (an external XEP-0114 component with Jabber Address Translation).",
        epilog="environment: CLIENT_PROXY_CORE=auto (default: the core compiled by mypyc if it "
        "was built from the installed source, else the pure one), compiled (that, or exit 2), "
        "python. `check` says which `run` will use.",
    )
    parser.add_argument("--version", action="version", version=f"client-proxy {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="run the proxy in the foreground, logging to stderr")
    run.add_argument("--config", required=True, metavar="PATH", help="the TOML config file")
    run.add_argument(
        "--log-level",
        default="info",
        choices=_LOG_LEVELS,
        help="info: one line per event (default); debug: every stanza in and out",
    )
    check = commands.add_parser("check", help="check a config file: exit 0, or 2 with the problem")
    check.add_argument("--config", required=True, metavar="PATH", help="the TOML config file")
    return parser


def _version() -> str:
    try:
        return version("client-proxy")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _load(path: str) -> Settings:
    try:
        return load_settings(path)
    except ConfigError as exc:
        print(f"client-proxy: {path}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `client-proxy` command; returns the exit code."""
    args = _parser().parse_args(argv)
    if args.command == "run":
        # A SIGHUP while starting (a terminal closing) must not kill the process; once the loop
        # runs, SIGHUP reloads the config.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if corelib.problem is not None:
        print(f"client-proxy: {corelib.problem}", file=sys.stderr)
        return 2
    settings = _load(args.config)
    if args.command == "check":
        print(
            f"{args.config}: OK: {settings.component} proxies IQs to {settings.target} "
            f"via {settings.host}:{settings.port} (event loop: {settings.event_loop})"
        )
        print(f"{args.config}: core: {corelib.why}")
        if settings.event_loop_note:
            print(f"{args.config}: note: {settings.event_loop_note}")
        for warning in settings.warnings:
            print(f"{args.config}: warning: {warning}")
        return 0
    setup_logging(args.log_level, settings.log_format)
    log = logging.getLogger("client_proxy")
    if settings.event_loop_note:
        log.info("event_loop: %s", settings.event_loop_note)
    for warning in settings.warnings:
        log.warning("config.warning: %s", warning)
    try:
        with asyncio.Runner(loop_factory=_loop_factory(settings.event_loop)) as runner:
            return runner.run(run(settings, args.config))
    except KeyboardInterrupt:  # a signal before the handlers were installed
        return 130
    except Exception:
        # Through the log's format (JSON, journald's priority), not as a bare traceback.
        log.exception("crashed: client-proxy %s stopped on an unexpected error", _version())
        return 1


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if name == "uvloop":
        import uvloop  # noqa: PLC0415  # not on every platform; the config made sure it is here

        return uvloop.new_event_loop  # type: ignore[no-any-return]
    return None


if __name__ == "__main__":
    sys.exit(main())
