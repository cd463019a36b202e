"""Tests of ``.ci/run``: its summary of trial's output and the command it takes from the README."""

from __future__ import annotations

import os
import re
import subprocess

from twisted.trial.unittest import SynchronousTestCase

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CI_RUN = os.path.join(REPO, ".ci", "run")


class SummaryTests(SynchronousTestCase):
    """``.ci/run --summarize LOG`` turns trial's last line into ``N passed, M failed``."""

    def summarize(self, summary: str) -> tuple[str, int]:
        """Summarize a fake trial output ending in ``summary``; the line printed and exit code."""
        log = self.mktemp()
        with open(log, "w") as f:
            f.write(
                f"tests.test_x\n  Tests\n    test_a ... [OK]\n\nRan 3 tests in 1.0s\n\n{summary}\n"
            )
        done = subprocess.run(
            ["bash", CI_RUN, "--summarize", log], capture_output=True, text=True, check=False
        )
        return done.stdout.splitlines()[0], done.returncode

    def test_passed(self) -> None:
        """A passing run reports its successes and exits 0."""
        self.assertEqual(self.summarize("PASSED (successes=12)"), ("12 passed, 0 failed", 0))

    def test_passed_with_skips(self) -> None:
        """Skips are reported apart and do not fail the run."""
        self.assertEqual(
            self.summarize("PASSED (skips=2, successes=48)"), ("48 passed, 0 failed, 2 skipped", 0)
        )

    def test_failures_and_errors_fail(self) -> None:
        """Failures and errors both count as failed, and the run exits non-zero."""
        line, code = self.summarize("FAILED (failures=2, errors=1, successes=46, skips=1)")
        self.assertEqual(line, "46 passed, 3 failed, 1 skipped")
        self.assertNotEqual(code, 0)

    def test_expected_failures_pass_unexpected_successes_fail(self) -> None:
        """An expected failure counts as passed; an unexpected success as failed."""
        line, code = self.summarize(
            "PASSED (expectedFailures=1, successes=3, unexpectedSuccesses=1)"
        )
        self.assertEqual(line, "4 passed, 1 failed")
        self.assertNotEqual(code, 0)

    def test_no_test_ran_fails(self) -> None:
        """A run in which no test ran exits non-zero."""
        line, code = self.summarize("PASSED")
        self.assertEqual(line, "0 passed, 0 failed")
        self.assertNotEqual(code, 0)

    def test_no_summary_fails(self) -> None:
        """An output without trial's summary (trial crashed) exits non-zero."""
        line, code = self.summarize("Traceback (most recent call last):")
        self.assertTrue(line.startswith("0 passed, 0 failed"))
        self.assertNotEqual(code, 0)


class ReadmeCommandTests(SynchronousTestCase):
    """``.ci/run`` runs the README's test command."""

    def test_readme_test_command_is_what_ci_runs(self) -> None:
        """The command .ci/run runs is the one install-and-test command of the README."""
        with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
            readme = f.read()
        section = readme.split("\n## Test\n", 1)[1].split("\n## ", 1)[0]
        commands = re.findall(r"^pip install .*$", section, re.MULTILINE)
        self.assertEqual(commands, ["pip install '.[test]' && python -m twisted.trial tests"])
        done = subprocess.run(
            ["bash", CI_RUN, "--print-command"], capture_output=True, text=True, check=True
        )
        self.assertEqual(done.stdout.strip(), commands[0])
