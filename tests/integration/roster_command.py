"""mod_roster_command for the test Prosodys: where prosodyctl finds it.

docs/deploy.md and the README tell a Prosody operator to approve the proxy's subscription with
``prosodyctl mod_roster_command subscribe COMPONENT ACCOUNT``. The module is a Prosody community
module that Debian 12 does not ship (neither `prosody` nor `prosody-modules` 0.0~hg20230223 has
it; Jitsi's own `jitsi-meet-prosody` package does). Where a real one is installed the tests use
it; elsewhere, a stand-in of ours (``prosody_plugins/mod_roster_command``, the `subscribe`
command for a component only) so that the command line, prosodyctl's module loading and the
stored roster the server then reads are still the real ones.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["INSTALLED", "STAND_IN", "roster_command_plugins"]

#: The folder holding the stand-in (one folder per module, as Prosody's own layout).
STAND_IN = Path(__file__).resolve().parent / "prosody_plugins"
#: Where a real mod_roster_command may be installed: Jitsi's package, and Prosody's own modules
#: folder (where Debian's prosody-modules puts those it ships).
INSTALLED = (Path("/usr/share/jitsi-meet/prosody-plugins"), Path("/usr/lib/prosody/modules"))


def roster_command_plugins() -> tuple[Path, ...]:
    """The `plugin_paths` that give prosodyctl a mod_roster_command: a real one if installed."""
    for folder in INSTALLED:
        for path in ("mod_roster_command.lua", "mod_roster_command/mod_roster_command.lua"):
            if (folder / path).is_file():
                return (folder,)
    return (STAND_IN,)
