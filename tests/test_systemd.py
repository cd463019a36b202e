"""Tests of the systemd units in ``etc/``: ``systemd-analyze verify`` and what they promise."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from lambgw.options import DEFAULT_SHUTDOWN_GRACE, LambgwOptions, S3gwOptions
from lambgw.tap import EXIT_CONFIG

ETC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "etc")
UNITS = ("lambgw.service", "s3gw.service")
#: Where the units expect twistd: in the venv the README installs into.
INSTALLED_TWISTD = "/opt/lambgw/bin/twistd"


def directives(unit: str) -> dict[str, list[str]]:
    """The directives of a unit file (continuation lines joined), by name."""
    with open(os.path.join(ETC, unit), encoding="utf-8") as f:
        text = f.read().replace("\\\n", " ")
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            name, _, value = line.partition("=")
            found.setdefault(name.strip(), []).append(value.strip())
    return found


class UnitTests(SynchronousTestCase):
    """The units run twistd in the foreground under a dedicated user, hardened."""

    def test_verify(self) -> None:
        """systemd-analyze verify finds nothing wrong with either unit, as shipped.

        It runs in a root of its own holding the units, systemd's own units, ``kill`` and a
        stand-in for the venv's twistd at the path the units name (README: ``/opt/lambgw``).
        """
        analyze = shutil.which("systemd-analyze")
        kill = shutil.which("kill") or "/bin/kill"
        system_units = next(
            (d for d in ("/usr/lib/systemd/system", "/lib/systemd/system") if os.path.isdir(d)),
            None,
        )
        if analyze is None or system_units is None or not os.path.exists(kill):
            raise SkipTest("systemd-analyze and systemd's units are not installed")
        root = tempfile.mkdtemp(prefix="lambgw-units-")
        self.addCleanup(shutil.rmtree, root, True)
        shutil.copytree(system_units, os.path.join(root, "usr/lib/systemd/system"), symlinks=True)
        os.makedirs(os.path.join(root, "bin"))
        shutil.copy(kill, os.path.join(root, "bin/kill"))
        venv_twistd = os.path.join(root, INSTALLED_TWISTD.lstrip("/"))
        os.makedirs(os.path.dirname(venv_twistd))
        with open(venv_twistd, "w", encoding="utf-8") as f:
            f.write("#!/bin/sh\n")
        os.chmod(venv_twistd, 0o700)
        units = os.path.join(root, "etc/systemd/system")
        os.makedirs(units)
        for unit in UNITS:
            shutil.copy(os.path.join(ETC, unit), units)
        done = subprocess.run(
            [analyze, "verify", f"--root={root}", *(os.path.join(units, unit) for unit in UNITS)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        for unit in UNITS:
            self.assertNotIn(unit, done.stdout + done.stderr)

    def test_logs_directory(self) -> None:
        """/var/log/lambgw is the units' to write (--access-log) despite ProtectSystem=strict."""
        for unit in UNITS:
            self.assertEqual(directives(unit)["LogsDirectory"], ["lambgw"], unit)

    def test_config_failure_not_restarted(self) -> None:
        """A start-up refused for its configuration is not restarted over and over."""
        for unit in UNITS:
            self.assertEqual(directives(unit)["RestartPreventExitStatus"], [str(EXIT_CONFIG)])

    def test_hardened(self) -> None:
        """Each unit runs as its own user, without new privileges, on a read-only system."""
        for unit in UNITS:
            found = directives(unit)
            self.assertEqual(found["User"], ["lambgw"], unit)
            self.assertEqual(found["NoNewPrivileges"], ["yes"], unit)
            self.assertEqual(found["ProtectSystem"], ["strict"], unit)
            self.assertEqual(found["StateDirectory"], ["lambgw"], unit)
            self.assertEqual(found["Restart"], ["on-failure"], unit)
            self.assertEqual(found["ExecReload"], ["/bin/kill -HUP $MAINPID"], unit)

    def test_stop_timeout_covers_grace(self) -> None:
        """Systemd waits longer than the gateway's grace for requests in flight."""
        for unit in UNITS:
            self.assertGreater(int(directives(unit)["TimeoutStopSec"][0]), DEFAULT_SHUTDOWN_GRACE)

    def test_command_line(self) -> None:
        """ExecStart runs twistd in the foreground with options the plugin knows."""
        for unit, options, plugin in (
            ("lambgw.service", LambgwOptions, "lambgw"),
            ("s3gw.service", S3gwOptions, "s3gw"),
        ):
            (command,) = directives(unit)["ExecStart"]
            argv = shlex.split(command)
            self.assertEqual(argv[:2], [INSTALLED_TWISTD, "--nodaemon"])
            flags = argv[argv.index(plugin) + 1 :]
            known = {f"--{p[0]}" for p in options.optParameters}
            self.assertEqual([f for f in flags if f.startswith("--") and f not in known], [])
            self.assertIn("--account", flags)
