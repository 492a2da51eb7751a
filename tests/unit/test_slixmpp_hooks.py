"""The slixmpp internals the shell relies on, checked against the installed slixmpp so that an
upgrade that moves them fails here, loudly, rather than in production (pyproject.toml declares
the range the shell was measured on).

The shell reads the stream itself and hands stanzas to the daemon (`on_element`); slixmpp's
own stanza handling stays only as a safety net. If slixmpp stopped calling the hook (say, a
release renamed `data_received` or the parser's attributes), requests would still flow
through the safety net, slower and by another path: these tests see the difference.
"""

from __future__ import annotations

import asyncio
import re
import tomllib
from importlib.metadata import version
from pathlib import Path
from typing import Any

from client_proxy.core._seal import original_of
from client_proxy.shell import daemon as daemon_module
from slixmpp import ComponentXMPP
from test_daemon_read import PROXY, USER, connected, feed, request

ROOT = Path(__file__).resolve().parents[2]


def test_the_installed_slixmpp_is_in_the_declared_range() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    (spec,) = [d for d in pyproject["project"]["dependencies"] if d.startswith("slixmpp")]
    low, high = re.fullmatch(r"slixmpp>=([\d.]+),<([\d.]+)", spec).groups()  # type: ignore[union-attr]

    def key(text: str) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", text)[:3])

    assert key(low) <= key(version("slixmpp")) < key(high), (spec, version("slixmpp"))


def test_the_builtin_handlers_the_shell_removes_exist() -> None:
    """The handlers and event callbacks the shell switches off are there to switch off: if a
    release renamed one, the shell would leave the new one on (answering probes behind the
    core's back) without a word."""
    plain = ComponentXMPP(PROXY, "secret", "127.0.0.1", 9)
    names = {handler.name for handler in plain._XMLStream__handlers}
    for name in daemon_module._BUILTIN_HANDLERS:
        assert name in names, (name, sorted(names))
    for method in ("_handle_probe", "_handle_subscribe", "_handle_unavailable"):
        assert hasattr(plain, method), method


def test_stanzas_reach_the_daemon_through_its_own_read_path() -> None:
    async def main() -> None:
        daemon, xmpp, transport = await connected()
        fast: list[Any] = []
        slow: list[Any] = []
        on_element = xmpp.on_element
        xmpp.on_element = lambda xml: (fast.append(xml), on_element(xml))
        original = daemon._on_stanza
        daemon._on_stanza = lambda stanza: (slow.append(stanza), original(stanza))
        feed(xmpp, request("r1"))
        await asyncio.sleep(0)
        assert len(fast) == 1, "slixmpp no longer calls the shell's read path"
        assert slow == []
        assert [original_of(s.get("id") or "") for s in transport.stanzas()] == ["r1"]
        assert USER  # the request came from the user the helper names

    asyncio.run(main())


def test_the_end_of_stream_is_reported_when_slixmpp_writes_it() -> None:
    """After a stop (or a reload's reconnect) slixmpp's disconnect() writes the stream footer
    through send_raw: the shell hears of it there, and the core learns the stream is ending."""

    async def main() -> None:
        _, xmpp, transport = await connected()
        ended: list[bool] = []
        xmpp.on_end_of_stream = lambda: ended.append(True)
        xmpp.disconnect(wait=0.1)
        for _ in range(50):
            if ended:
                break
            await asyncio.sleep(0.01)
        assert ended == [True]
        assert transport.writes[-1] == xmpp.stream_footer.encode()

    asyncio.run(main())
