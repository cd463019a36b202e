"""Tests of the memory settings: freed large buffers leave, start-up's objects are not rescanned."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SkipTest, TestCase

from lambgw.allocator import ENV_THRESHOLD, YOUNG_THRESHOLD, fix_mmap_threshold

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


#: Holds 100,000 lists and drops a cycle, tunes the collector, collects all; prints the
#: lists still scanned, whether the cycle was freed, and the young threshold.
COLLECTOR_PROBE = """
import gc, weakref
from lambgw.allocator import tune_collector
class Node:
    pass
held = [[n] for n in range(100_000)]
loop = Node()
loop.me = loop
dropped = weakref.ref(loop)
del loop
tune_collector()
gc.collect()
ids = {id(x) for x in held}
scanned = sum(1 for o in gc.get_objects() if id(o) in ids)
print(scanned, dropped() is None, gc.get_threshold()[0])
"""


class CollectorTests(TestCase):
    def test_start_up_objects_left_out(self) -> None:
        """Objects alive at start-up are not scanned again; its garbage is freed first."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
        out = subprocess.run(
            [sys.executable, "-c", COLLECTOR_PROBE],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        self.assertEqual(out.stdout.split(), ["0", "True", str(YOUNG_THRESHOLD)])
