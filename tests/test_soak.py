"""Tests of the chaos soak: how it judges what it reads, and a quick run end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from bench.soakload import Body, check_read
from tests.gateway import target_is_moto

ROOT = Path(__file__).resolve().parent.parent


class CheckReadTests(SynchronousTestCase):
    """A read must find one of the bodies the key may hold, whole."""

    def setUp(self) -> None:
        self.old, _ = Body.make(1, 100)
        self.new, _ = Body.make(2, 50)

    def test_candidates_pass(self) -> None:
        """The last acknowledged body, or one a failed write may have left, is right."""
        self.assertIsNone(check_read("k", [self.new], self.new))
        self.assertIsNone(check_read("k", [self.new, None], None))

    def test_lost_write(self) -> None:
        """An acknowledged body that is gone is a lost write."""
        self.assertIn("missing", check_read("k", [self.new], None) or "")

    def test_overwritten_body_back(self) -> None:
        """A body overwritten by an acknowledged write must not come back."""
        self.assertIn("older write", check_read("k", [self.new], self.old) or "")

    def test_body_from_nowhere(self) -> None:
        """Bytes that no write sent (a partial object) are wrong."""
        self.assertIn("no write sent", check_read("k", [self.new], "ab" * 32) or "")


class QuickSoakTests(SynchronousTestCase):
    """``python -m bench.soak --quick`` against a gateway over a lambnet node."""

    def test_quick_soak(self) -> None:
        """Killed and restarted a few times, the gateway and node lose nothing, leave nothing."""
        if target_is_moto():
            raise SkipTest("the soak runs the gateway and a node")
        done = subprocess.run(
            [sys.executable, "-m", "bench.soak", "--quick", "--seed", "14"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        report = done.stdout + done.stderr
        self.assertIn("lost: 0\n", done.stdout, report)
        self.assertIn("violations: 0\n", done.stdout, report)
        self.assertRegex(done.stdout, r"kills survived: [1-9]")
        # A completion cut by a kill is given back by the uploads' own sweep, an hour later:
        # the uploads are not counted here; the spools must be empty at once.
        self.assertRegex(done.stdout, r"stray files: .*gateway spool 0, .*node incoming 0, ")
