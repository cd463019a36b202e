"""Tests for the stress loop's reading of trial's output (``bench.stress``)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from twisted.trial.unittest import SynchronousTestCase

from bench.stress import failed_tests, tests_run

#: A test module with one passing, two failing and one erroring test.
SAMPLE = textwrap.dedent(
    '''
    """Sample tests."""
    from twisted.trial.unittest import SynchronousTestCase

    class Sample(SynchronousTestCase):
        def test_ok(self):
            pass

        def test_fail_a(self):
            self.assertEqual(1, 2)

        def test_fail_b(self):
            self.assertEqual(1, 2)

        def test_error(self):
            raise ValueError("boom")
    '''
)


class TrialOutputTests(SynchronousTestCase):
    """The failed tests and the count are read from a real trial run's output."""

    def test_failures_named(self) -> None:
        """Every failing and erroring test is named, including failures trial groups."""
        directory = self.mktemp()
        os.makedirs(directory)
        with open(os.path.join(directory, "sample_stress.py"), "w") as f:
            f.write(SAMPLE)
        done = subprocess.run(
            [sys.executable, "-m", "twisted.trial", "sample_stress"],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        output = done.stdout + done.stderr
        self.assertEqual(tests_run(output), 4)
        self.assertEqual(
            sorted(failed_tests(output)),
            [
                "sample_stress.Sample.test_error",
                "sample_stress.Sample.test_fail_a",
                "sample_stress.Sample.test_fail_b",
            ],
        )
