"""Tests of the allocator setting: large buffers freed are given back to the system."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SkipTest, TestCase

from lambgw.allocator import ENV_THRESHOLD, fix_mmap_threshold

#: The source tree whose ``lambgw`` the probe imports.
ROOT = Path(__file__).resolve().parent.parent
#: Frees an 8 MiB buffer (which raises glibc's moving threshold), then fills and frees another;
#: prints the RSS in KiB with the second one held and after it is freed.
PROBE = """
import sys
from lambgw.allocator import fix_mmap_threshold
if sys.argv[1] == "fixed":
    assert fix_mmap_threshold()
def rss():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
first = bytearray(8 << 20)
del first
second = bytearray(8 << 20)
held = rss()
del second
print(held, rss())
"""


def _freed_kib(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if k != ENV_THRESHOLD}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, env=env, check=True
    )
    held, after = map(int, out.stdout.split())
    return held - after


class FixedThresholdTests(TestCase):
    def setUp(self) -> None:
        if not hasattr(ctypes.CDLL(None), "gnu_get_libc_version"):
            raise SkipTest("the C library is not glibc")

    def test_large_buffer_given_back(self) -> None:
        """With the threshold fixed, a large buffer freed after another leaves the RSS."""
        self.assertGreater(_freed_kib("fixed"), 6 * 1024)

    def test_moving_threshold_keeps_it(self) -> None:
        """Without it, glibc keeps the second buffer in the heap (what the setting prevents)."""
        self.assertLess(_freed_kib("default"), 2 * 1024)

    def test_operator_setting_wins(self) -> None:
        """With the threshold set in the environment, the process leaves it alone."""
        os.environ[ENV_THRESHOLD] = "131072"
        self.addCleanup(os.environ.pop, ENV_THRESHOLD)
        self.assertFalse(fix_mmap_threshold())
