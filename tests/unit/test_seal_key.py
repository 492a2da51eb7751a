"""The seal key the daemon gives the core: derived from the component secret by default, or
from `seal_key_file`; the same for every instance of one component, and kept across reloads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from client_proxy.shell.config import (
    ConfigError,
    hkdf_sha256,
    parse_settings,
    seal_key,
)

RAW = {
    "component": "proxy.example.org",
    "server": "127.0.0.1:5347",
    "secret": "a long random secret",
    "target": "svc@example.org",
}


def test_hkdf_is_rfc_5869s_test_case_3() -> None:
    """RFC 5869 A.3: SHA-256, IKM 22 bytes of 0x0b, no salt, no info; the first 32 bytes of
    its OKM (one expansion block)."""
    okm = bytes.fromhex(
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
    )
    assert hkdf_sha256(b"\x0b" * 22, b"") == okm[:32]


def test_instances_of_one_component_derive_one_key_from_its_secret() -> None:
    first, second = parse_settings(dict(RAW)), parse_settings(dict(RAW))
    assert (
        first.core.seal_key
        == second.core.seal_key
        == seal_key(b"a long random secret", "proxy.example.org")
    )
    assert len(first.core.seal_key) == 32
    assert first.core.seal_key != b"a long random secret"
    # Another component, or another secret: another key.
    other = parse_settings({**RAW, "component": "other.example.org"})
    assert other.core.seal_key != first.core.seal_key
    assert parse_settings({**RAW, "secret": "x" * 20}).core.seal_key != first.core.seal_key
    # The key is never printed with the settings.
    assert first.core.seal_key.hex() not in repr(first)


def test_seal_key_file_gives_the_key_its_material(tmp_path: Path) -> None:
    key_file = tmp_path / "seal"
    key_file.write_bytes(b"  0123456789abcdef0123456789abcdef\n")
    key_file.chmod(0o600)
    settings = parse_settings({**RAW, "seal_key_file": "seal"}, base=tmp_path)
    assert settings.core.seal_key == seal_key(
        b"0123456789abcdef0123456789abcdef", "proxy.example.org"
    )
    assert settings.seal_key_file == "seal"
    assert settings.warnings == ()
    # Whatever the secret: instances with other secrets but the file share the key.
    again = parse_settings({**RAW, "secret": "another", "seal_key_file": str(key_file)})
    assert again.core.seal_key == settings.core.seal_key


def test_seal_key_file_problems_are_one_line_errors(tmp_path: Path) -> None:
    short = tmp_path / "short"
    short.write_bytes(b"0123456789abcde\n")  # 15 bytes
    with pytest.raises(ConfigError, match=r"holds 15 bytes; it needs at least 16") as short_err:
        parse_settings({**RAW, "seal_key_file": str(short)})
    with pytest.raises(ConfigError, match="cannot read seal_key_file") as missing_err:
        parse_settings({**RAW, "seal_key_file": str(tmp_path / "missing")})
    with pytest.raises(ConfigError, match="seal_key_file must be a non-empty string"):
        parse_settings({**RAW, "seal_key_file": ""})
    with pytest.raises(ConfigError, match=r"seal_key_file .* names \$CREDENTIALS_DIRECTORY"):
        parse_settings({**RAW, "seal_key_file": "$CREDENTIALS_DIRECTORY/seal"}, environ={})
    for err in (short_err, missing_err):
        assert "\n" not in str(err.value)


def test_seal_key_file_under_the_credentials_directory(tmp_path: Path) -> None:
    (tmp_path / "seal").write_bytes(os.urandom(32))
    (tmp_path / "seal").chmod(0o600)
    settings = parse_settings(
        {**RAW, "seal_key_file": "${CREDENTIALS_DIRECTORY}/seal"},
        environ={"CREDENTIALS_DIRECTORY": str(tmp_path)},
    )
    assert settings.core.seal_key == seal_key(
        (tmp_path / "seal").read_bytes().strip(), "proxy.example.org"
    )


def test_a_seal_key_file_others_can_read_is_warned_about(tmp_path: Path) -> None:
    key_file = tmp_path / "seal"
    key_file.write_bytes(b"0123456789abcdef0123")
    key_file.chmod(0o644)
    settings = parse_settings({**RAW, "seal_key_file": str(key_file)})
    (warning,) = settings.warnings
    assert "seal_key_file" in warning and "readable by every user" in warning
