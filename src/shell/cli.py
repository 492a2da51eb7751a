"""The `client-proxy` command: `run` the daemon or `check` a config file."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Sequence

from .config import ConfigError, Settings, load_settings
from .daemon import run

__all__ = ["main"]

_LOG_LEVELS = ("debug", "info", "warning", "error")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="client-proxy",
        description="Serve an XMPP component address from the online resources of one client "
        "account (an external XEP-0114 component with Jabber Address Translation).",
    )
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


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if level == "debug" else logging.INFO)
    logging.getLogger("client_proxy").setLevel(level.upper())
    # slixmpp logs every stanza at debug and connection chatter at info; its warnings matter.
    logging.getLogger("slixmpp").setLevel(logging.INFO if level == "debug" else logging.WARNING)


def _load(path: str) -> Settings:
    try:
        return load_settings(path)
    except ConfigError as exc:
        print(f"client-proxy: {path}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `client-proxy` command; returns the exit code."""
    args = _parser().parse_args(argv)
    settings = _load(args.config)
    if args.command == "check":
        print(
            f"{args.config}: OK: {settings.component} proxies IQs to {settings.target} "
            f"via {settings.host}:{settings.port} (event loop: {settings.event_loop})"
        )
        if settings.event_loop_note:
            print(f"{args.config}: note: {settings.event_loop_note}")
        return 0
    _setup_logging(args.log_level)
    if settings.event_loop_note:
        logging.getLogger("client_proxy").info("event_loop: %s", settings.event_loop_note)
    try:
        with asyncio.Runner(loop_factory=_loop_factory(settings.event_loop)) as runner:
            return runner.run(run(settings))
    except KeyboardInterrupt:  # a signal before the handlers were installed
        return 130


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if name == "uvloop":
        import uvloop  # noqa: PLC0415  # not on every platform; the config made sure it is here

        return uvloop.new_event_loop  # type: ignore[no-any-return]
    return None


if __name__ == "__main__":
    sys.exit(main())
