"""Tests of the systemd units in ``etc/``: ``systemd-analyze verify`` and what they promise."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from lambgw.tap import DEFAULT_SHUTDOWN_GRACE, LambgwOptions, S3gwOptions

ETC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "etc")
UNITS = ("lambgw.service", "s3gw.service")
#: Where the units expect twistd; the test points them at this Python's.
INSTALLED_TWISTD = "/usr/local/bin/twistd"


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


def twistd() -> str:
    """The twistd of this Python."""
    beside = os.path.join(os.path.dirname(sys.executable), "twistd")
    return beside if os.path.exists(beside) else shutil.which("twistd") or INSTALLED_TWISTD


class UnitTests(SynchronousTestCase):
    """The units run twistd in the foreground under a dedicated user, hardened."""

    def test_verify(self) -> None:
        """systemd-analyze verify finds nothing wrong with either unit."""
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            raise SkipTest("systemd-analyze is not installed")
        directory = tempfile.mkdtemp(prefix="lambgw-units-")
        self.addCleanup(shutil.rmtree, directory, True)
        for unit in UNITS:
            with open(os.path.join(ETC, unit), encoding="utf-8") as f:
                text = f.read().replace(INSTALLED_TWISTD, twistd())
            with open(os.path.join(directory, unit), "w", encoding="utf-8") as f:
                f.write(text)
        done = subprocess.run(
            [analyze, "verify", *(os.path.join(directory, unit) for unit in UNITS)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        for unit in UNITS:
            self.assertNotIn(unit, done.stdout + done.stderr)

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
