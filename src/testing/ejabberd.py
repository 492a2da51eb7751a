"""A throwaway ejabberd for tests: generated config, free loopback ports, its own folder, a private
Erlang node started in the foreground and stopped by signalling the Erlang VM. It has the same
interface as :class:`client_proxy.testing.prosody.Prosody` (ports, ``register``, ``start``,
``stop``, ``restart``, ``log_tail``), so a test can run against either server.

Standard library only::

    from client_proxy.testing.ejabberd import Ejabberd

    with Ejabberd(workdir, components={"proxy.localhost": "secret"}) as server:
        server.register("svc", "localhost", "password")
        print(server.c2s_port, server.component_port)

It installs nothing: the Debian package `ejabberd` (23.01) must already be there (`./just`'s
bootstrap installs it). Plaintext only (no certificates, s2s off), loopback only.

How the node is kept private (measured with ejabberd 23.01 on Debian 12): `ejabberdctl` runs
with its own ``--config``, ``--ctl-config``, ``--config-dir``, ``--logs``, ``--spool`` and
``--node``, and ``HOME`` set to the work folder. The ctl config sets ``EXEC_CMD=as_current_user``
(as root the script would otherwise switch to the `ejabberd` user, which cannot write here),
``ERL_DIST_PORT`` to a free port (the node listens there and no epmd is started or asked), and
``ERL_OPTIONS`` with a per-instance cookie and ``-kernel inet_dist_use_interface {127,0,0,1}``.
Accounts are made through ejabberd's HTTP API on a loopback port (the `register` command, as
``ejabberdctl register`` runs it, but without an Erlang VM per call). As a user other than root,
Debian's `ejabberdctl` refuses to run at all (it allows root and `ejabberd` only, before it
reads any config), so a copy of it without that check is used instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

from client_proxy.testing.prosody import ThrowawayServer, free_port, log_tail, port_open, quoted

__all__ = ["Ejabberd", "EjabberdError", "ejabberd_available", "ejabberdctl_path"]

#: Where Debian puts it; /usr/sbin is not on every user's PATH.
_DEBIAN_EJABBERDCTL = "/usr/sbin/ejabberdctl"


class EjabberdError(RuntimeError):
    """ejabberd would not start, stop or register an account; the message ends with its log
    tail."""


def ejabberdctl_path() -> str | None:
    """The `ejabberdctl` script: from PATH, else Debian's /usr/sbin; None if neither."""
    found = shutil.which("ejabberdctl")
    if found is not None:
        return found
    if os.access(_DEBIAN_EJABBERDCTL, os.X_OK):
        return _DEBIAN_EJABBERDCTL
    return None


def ejabberd_available() -> bool:
    """True if `ejabberdctl` and the Erlang runtime it starts (`erl`) are installed."""
    return ejabberdctl_path() is not None and shutil.which("erl") is not None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Ejabberd(ThrowawayServer):
    """One ejabberd node: a virtual host and any number of external components (XEP-0114).

    The config, the ports, the node name and the cookie are fixed when the object is made, and
    the spool (Mnesia: accounts, rosters, subscriptions) survives `stop()`, so `restart()` brings
    back the same server on the same ports.
    """

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        *,
        host: str = "localhost",
        components: dict[str, str] | None = None,
        log_level: str = "info",
        extra_config: str = "",
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.host = host
        self.components = dict(components or {})
        #: YAML appended to the generated ejabberd.yml: top-level options of a test's own
        #: (``domain_balancing``, say), one per line, not indented.
        self.extra_config = extra_config
        ports: set[int] = set()
        while len(ports) < 4:
            ports.add(free_port())
        self.c2s_port, self.component_port, self.dist_port, self.api_port = sorted(ports)
        self.node = f"clientproxy-{secrets.token_hex(4)}@localhost"
        self.cookie = secrets.token_hex(16)
        self.spool_dir = self.workdir / "spool"
        #: Where the server keeps its data (the spool), named as on :class:`Prosody`.
        self.data_dir = self.spool_dir
        self.logs_dir = self.workdir / "logs"
        self.config_path = self.workdir / "ejabberd.yml"
        self.ctl_config_path = self.workdir / "ejabberdctl.cfg"
        self.log_path = self.logs_dir / "ejabberd.log"
        self.error_log_path = self.logs_dir / "error.log"
        self.console_path = self.workdir / "ejabberd.console"
        self.pid_path = self.workdir / "ejabberd.pid"
        self.log_level = log_level
        self.process: subprocess.Popen[bytes] | None = None
        self.vm_pid: int | None = None
        self._console: IO[bytes] | None = None
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.spool_dir.mkdir(exist_ok=True)
        self.logs_dir.mkdir(exist_ok=True)
        self.config_path.write_text(self.config_text(), encoding="utf-8")
        self.ctl_config_path.write_text(self.ctl_config_text(), encoding="utf-8")
        # --config-dir is the work folder, so that Debian's /etc/ejabberd (its inetrc, a vm.args)
        # plays no part: the name lookup rules the node uses are these.
        (self.workdir / "inetrc").write_text(
            '{lookup,["file","native"]}.\n{host,{127,0,0,1}, ["localhost"]}.\n', encoding="utf-8"
        )
        self.ctl = self._ctl_script()

    # -- configuration ---------------------------------------------------------------------------

    def config_text(self) -> str:
        """The generated ejabberd.yml."""
        lines = [
            "# Generated for client-proxy's tests: plaintext, loopback only, no s2s.",
            f"hosts: [{quoted(self.host)}]",
            f"loglevel: {self.log_level}",
            "log_rotate_count: 0",
            "certfiles: []",
            "auth_method: internal",
            # Stored in the clear: PLAIN and SCRAM both work over the plaintext loopback stream.
            "auth_password_format: plain",
            "s2s_access: none",
            "listen:",
            f"  - port: {self.c2s_port}",
            '    ip: "127.0.0.1"',
            "    module: ejabberd_c2s",
            "    starttls: false",
            "    access: c2s",
            f"  - port: {self.component_port}",
            '    ip: "127.0.0.1"',
            "    module: ejabberd_service",
            "    hosts:",
        ]
        for domain, secret in self.components.items():
            lines += [f"      {quoted(domain)}:", f"        password: {quoted(secret)}"]
        if not self.components:
            lines[-1] = "    hosts: {}"
        lines += [
            f"  - port: {self.api_port}",
            '    ip: "127.0.0.1"',
            "    module: ejabberd_http",
            "    request_handlers:",
            '      "/api": mod_http_api',
            "acl:",
            "  loopback:",
            "    ip: [127.0.0.0/8]",
            "  local:",
            '    user_regexp: ""',
            "access_rules:",
            "  c2s:",
            "    allow: all",
            "  local:",
            "    allow: local",
            "api_permissions:",
            '  "console commands":',
            "    from: [ejabberd_ctl]",
            "    who: all",
            '    what: "*"',
            '  "loopback api":',
            "    from: [mod_http_api]",
            "    who:",
            "      access:",
            "        allow:",
            "          - acl: loopback",
            '    what: "*"',
            # The modules a plain server needs for what the tests do, like the Prosody: rosters
            # and presence subscriptions, disco, ping. No stream management: an abrupt
            # disconnect must make the session go at once, as on the Prosody.
            "modules:",
            "  mod_roster: {}",
            "  mod_disco: {}",
            "  mod_ping: {}",
            # For the change_password command (register() on an existing account).
            "  mod_admin_extra: {}",
            "",
        ]
        if self.extra_config:
            lines += [self.extra_config.rstrip("\n"), ""]
        return "\n".join(lines)

    def ctl_config_text(self) -> str:
        """The generated ejabberdctl.cfg (a shell fragment the ejabberdctl script sources)."""
        options = (
            f"-setcookie {self.cookie} -kernel inet_dist_use_interface {{127,0,0,1}} "
            "-env ERL_CRASH_DUMP_BYTES 0"
        )
        return "\n".join(
            [
                "# Generated for client-proxy's tests: a private node, no epmd, loopback only.",
                "EXEC_CMD=as_current_user",
                f"ERL_DIST_PORT={self.dist_port}",
                f'ERL_OPTIONS="{options}"',
                f'EJABBERD_PID_PATH="{self.pid_path}"',
                f'CONTRIB_MODULES_PATH="{self.workdir / "contrib"}"',
                f'CONTRIB_MODULES_CONF_DIR="{self.workdir / "contrib"}"',
                "",
            ]
        )

    def _ctl_script(self) -> str:
        """The ejabberdctl to run: Debian's as root, else a copy that lets this user run it."""
        found = ejabberdctl_path()
        if found is None:
            raise EjabberdError("ejabberdctl not found (scripts/bootstrap installs ejabberd)")
        if os.geteuid() == 0:
            return found
        text = Path(found).read_text(encoding="utf-8")
        copy = self.workdir / "ejabberdctl"
        copy.write_text(text.replace("\nINSTALLUSER=ejabberd\n", "\nINSTALLUSER=\n"), "utf-8")
        copy.chmod(0o755)
        return str(copy)

    def _command(self, *args: str) -> list[str]:
        return [
            self.ctl,
            "--config",
            str(self.config_path),
            "--ctl-config",
            str(self.ctl_config_path),
            "--config-dir",
            str(self.workdir),
            "--logs",
            str(self.logs_dir),
            "--spool",
            str(self.spool_dir),
            "--node",
            self.node,
            *args,
        ]

    def _environ(self) -> dict[str, str]:
        return {**os.environ, "HOME": str(self.workdir)}

    # -- accounts ----------------------------------------------------------------------------------

    def register(self, user: str, host: str | None = None, password: str = "password") -> str:
        """Create the account `user@host` (the server must be running), or set its password if
        it exists (as ``prosodyctl register`` does); returns its bare JID.

        Through ejabberd's HTTP API on loopback: the same `register` command as
        ``ejabberdctl register``, without starting an Erlang VM per account (that costs 0.3 to
        1 s each, most of a minute over the integration tests' accounts)."""
        host = host or self.host
        status, text = self.api("register", user=user, host=host, password=password)
        if status == 409 and "already registered" in text:
            status, text = self.api("change_password", user=user, host=host, newpass=password)
        if status != 200:
            raise EjabberdError(f"register {user}@{host}: HTTP {status}: {text}")
        return f"{user}@{host}"

    def api(self, command: str, **arguments: str) -> tuple[int, str]:
        """Call one command of ejabberd's HTTP API (mod_http_api, open to loopback only);
        returns the HTTP status and the body."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.api_port}/api/{command}",
            data=json.dumps(arguments).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return int(response.status), response.read().decode(errors="replace")
        except urllib.error.HTTPError as error:
            return int(error.code), error.read().decode(errors="replace")

    def ctl_command(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
        """Run one ``ejabberdctl`` command against the running node (an Erlang VM per call)."""
        return subprocess.run(
            self._command(*args),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            env=self._environ(),
            cwd=self.workdir,
            check=False,
        )

    # -- lifecycle ---------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 30.0) -> None:
        """Start the node (``ejabberdctl foreground-quiet``) and return once both ports accept
        connections and the Erlang VM has written its pid file."""
        if self.running:
            return
        with contextlib.suppress(FileNotFoundError):
            self.pid_path.unlink()
        console = self.console_path.open("ab")
        self._console = console
        self.process = subprocess.Popen(
            self._command("foreground-quiet"),
            stdin=subprocess.DEVNULL,
            stdout=console,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env=self._environ(),
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                status = self.process.returncode
                self.stop()
                raise EjabberdError(f"ejabberd exited {status} while starting\n{self.log_tail()}")
            if self.vm_pid is None:
                self.vm_pid = self._read_pid()
            if self.vm_pid is not None and all(
                port_open(port) for port in (self.c2s_port, self.component_port, self.api_port)
            ):
                return
            time.sleep(0.05)
        self.stop()
        raise EjabberdError(f"ejabberd did not listen within {timeout} s\n{self.log_tail()}")

    def _read_pid(self) -> int | None:
        try:
            text = self.pid_path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return None
        return int(text) if text.isdigit() else None

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM to the Erlang VM (not to the ejabberdctl script, which would leave the VM
        running), wait for the VM and the script to exit, SIGKILL both after `timeout`. Returns
        the script's exit status (None if it was not running)."""
        process, self.process = self.process, None
        vm_pid, self.vm_pid = self.vm_pid, None
        if vm_pid is None:
            vm_pid = self._read_pid()
        status: int | None = None
        if process is not None:
            if process.poll() is None and vm_pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(vm_pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while (process.poll() is None or (vm_pid is not None and _alive(vm_pid))) and (
                time.monotonic() < deadline
            ):
                time.sleep(0.05)
            if process.poll() is None or (vm_pid is not None and _alive(vm_pid)):
                # Its own session (start_new_session): the script and the VM, nothing else.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                if vm_pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(vm_pid, signal.SIGKILL)
                process.wait(timeout)
            status = process.returncode
        self._close_console()
        return status

    def restart(self, timeout: float = 30.0) -> None:
        """Stop and start again: same config, same ports, same node, same data."""
        super().restart(timeout)

    def log_tail(self, lines: int = 60) -> str:
        """The last lines of ejabberd's logs and console output, for failure reports."""
        return log_tail((self.log_path, self.error_log_path, self.console_path), lines)
