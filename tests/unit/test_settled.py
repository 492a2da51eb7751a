"""The instances that stopped cleanly, told to the next process through $STATE_DIRECTORY
(``client_proxy.shell.settled``)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from client_proxy.shell.settled import FILE_NAME, load, record, settled_path


def test_the_file_is_in_systemds_state_directory() -> None:
    assert settled_path({}) is None
    assert settled_path({"STATE_DIRECTORY": ""}) is None
    assert settled_path({"STATE_DIRECTORY": "/var/lib/client-proxy"}) == Path(
        "/var/lib/client-proxy", FILE_NAME
    )
    # StateDirectory= with several folders: the first.
    assert settled_path({"STATE_DIRECTORY": "/a:/b"}) == Path("/a", FILE_NAME)


def test_recorded_instances_are_loaded_until_their_time(tmp_path: Path) -> None:
    path = tmp_path / FILE_NAME
    assert load(path, 1000) == frozenset()  # no file yet
    record(path, "0badcafe", until_ms=5000, now_ms=1000)
    record(path, "5e771ed0", until_ms=9000, now_ms=2000)
    assert load(path, 4999) == {"0badcafe", "5e771ed0"}
    assert load(path, 5000) == {"5e771ed0"}
    assert load(path, 9000) == frozenset()
    # Writing forgets what has passed, and keeps the later time of one instance.
    record(path, "5e771ed0", until_ms=7000, now_ms=6000)
    assert path.read_text(encoding="ascii") == "5e771ed0 9000\n"
    assert not list(tmp_path.glob(".*"))  # the partial file was renamed into place


def test_garbage_in_the_file_is_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / FILE_NAME
    path.write_text("nonsense\n0badcafe 5000\nABCDEF12 9999\n 5e771ed0 8000 \n\n", "ascii")
    assert load(path, 1000) == {"0badcafe", "5e771ed0"}
    path.write_bytes(b"\xff\xfe")
    with caplog.at_level(logging.WARNING, logger="client_proxy"):
        assert load(path, 1000) == frozenset()
    assert "settled.unreadable" in caplog.text


def test_a_folder_that_cannot_be_written_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "missing" / FILE_NAME
    with caplog.at_level(logging.WARNING, logger="client_proxy"):
        record(path, "0badcafe", until_ms=5000, now_ms=1000)
    assert "settled.unwritable" in caplog.text
    assert load(path, 1000) == frozenset()
