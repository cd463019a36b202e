"""The tree is linted, formatted and typed: ruff and mypy, configured in pyproject.toml.

The tools run from the repository root, as a developer runs them; mypy keeps its usual cache
there (``.mypy_cache``, ignored by git) so that a run after the first takes a second or two.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

from twisted.trial.unittest import SkipTest, SynchronousTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: A tool that has not answered in this long has hung.
TIMEOUT = 300


def run_tool(module: str, *args: str) -> tuple[int, str]:
    """Run ``python -m module args`` in the repository root; its exit code and output."""
    if importlib.util.find_spec(module) is None:
        raise SkipTest(f"{module} is not installed in this Python ({sys.executable})")
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


class LintTests(SynchronousTestCase):
    """ruff and mypy find nothing to complain about."""

    def assertClean(self, module: str, *args: str) -> None:
        """``module`` exits 0, or the test fails with everything it said."""
        code, output = run_tool(module, *args)
        if code != 0:
            self.fail(f"{module} {' '.join(args)} exited with {code}:\n{output}")

    def test_ruff_check(self) -> None:
        """Ruff check finds no lint."""
        self.assertClean("ruff", "check", "--no-cache", ".")

    def test_ruff_format(self) -> None:
        """Ruff format would change no file."""
        self.assertClean("ruff", "format", "--no-cache", "--check", ".")

    def test_mypy(self) -> None:
        """Mypy finds no type error in the files pyproject.toml names."""
        self.assertClean("mypy")
