"""The spool's directories per process, the sweep of what ended processes left, free space."""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.logger import LogEvent, capturedLogs
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SynchronousTestCase, TestCase

from lambgw import spooldir
from lambgw.protocol.errors import S3Error
from lambgw.s3 import spool
from lambgw.s3.spool import SpoolBody
from lambgw.spooldir import (
    CLAIMING_GRACE,
    LOOSE_FILE_AGE,
    SpoolDirectory,
    Swept,
    gateway_spools,
    sweep_spool,
)


def write(path: str, size: int) -> str:
    """Write ``size`` bytes to ``path``; the path."""
    with open(path, "wb") as f:
        f.write(b"x" * size)
    return path


def age(path: str, seconds: float) -> None:
    """Make ``path`` look untouched for ``seconds``."""
    then = os.stat(path).st_mtime - seconds
    os.utime(path, (then, then))


class SweepTests(SynchronousTestCase):
    """What a sweep of the spool removes, and what it leaves."""

    def setUp(self) -> None:
        self.root = self.mktemp()
        os.makedirs(self.root)

    def claim(self) -> SpoolDirectory:
        """A directory claimed in the spool, released at the end of the test."""
        spool = SpoolDirectory.claim(self.root)
        self.addCleanup(spool.release)
        return spool

    def test_live_directory_kept(self) -> None:
        """The directory of a live process, and its bodies, are never swept."""
        spool = self.claim()
        body = write(os.path.join(spool.path, "body.part"), 10)
        age(body, 10 * LOOSE_FILE_AGE)
        self.assertEqual(sweep_spool(self.root), Swept())
        self.assertTrue(os.path.exists(body))

    def test_ended_process_swept_at_once(self) -> None:
        """A directory no process holds is removed at once, however young its files."""
        left = os.path.join(self.root, "0123456789abcdef")
        os.makedirs(left)
        write(os.path.join(left, "a.part"), 100)
        write(os.path.join(left, "b.part"), 20)
        self.assertEqual(sweep_spool(self.root), Swept(2, 120))
        self.assertEqual(os.listdir(self.root), [])

    def test_claim_sweeps_first(self) -> None:
        """Claiming a directory removes what ended processes left, and logs it."""
        left = os.path.join(self.root, "0123456789abcdef")
        os.makedirs(left)
        write(os.path.join(left, "a.part"), 100)
        with capturedLogs() as events:
            spool = self.claim()
        self.assertEqual(os.listdir(self.root), [os.path.basename(spool.path)])
        (event,) = [e for e in events if e.get("root") == self.root]
        self.assertEqual((event["files"], event["size"]), (1, 100))

    def test_claim_being_made_kept(self) -> None:
        """A directory still being claimed is left alone until it is surely abandoned."""
        claiming = os.path.join(self.root, "0123456789abcdef.new")
        os.makedirs(claiming)
        self.assertEqual(sweep_spool(self.root), Swept())
        age(claiming, 2 * CLAIMING_GRACE)
        self.assertEqual(sweep_spool(self.root), Swept())
        self.assertEqual(os.listdir(self.root), [])

    def test_loose_files_by_age(self) -> None:
        """Loose files at the top (from older gateways) go only once stale."""
        loose = write(os.path.join(self.root, "old.part"), 5)
        self.assertEqual(sweep_spool(self.root), Swept())
        now = os.stat(loose).st_mtime + LOOSE_FILE_AGE + 1
        self.assertEqual(sweep_spool(self.root, now), Swept(1, 5))

    def test_release(self) -> None:
        """Releasing removes the process's directory; a second release does nothing."""
        spool = SpoolDirectory.claim(self.root)
        write(os.path.join(spool.path, "body.part"), 1)
        spool.release()
        spool.release()
        self.assertEqual(os.listdir(self.root), [])

    def test_gateway_spools(self) -> None:
        """The spools of a gateway's data: its own and each other account's."""
        os.makedirs(os.path.join(self.root, "accounts", "bob", "spool"))
        self.assertEqual(
            gateway_spools(self.root),
            [os.path.join(self.root, "spool"), os.path.join(self.root, "accounts/bob/spool")],
        )


class SpaceTests(SynchronousTestCase):
    """Uploads that cannot fit are refused; the shortage is logged once and reported."""

    def setUp(self) -> None:
        root = self.mktemp()
        self.spool = SpoolDirectory.claim(root)
        self.addCleanup(self.spool.release)
        self.free_blocks = 100
        self.patch(spooldir.os, "statvfs", self.statvfs)
        self.events: Sequence[LogEvent] = self.enterContext(capturedLogs())

    def statvfs(self, path: str) -> Any:
        """A file system of 1,000 blocks of 10 bytes."""
        return SimpleNamespace(f_frsize=10, f_blocks=1000, f_bavail=self.free_blocks)

    def warnings(self) -> list[LogEvent]:
        """The warnings logged so far."""
        return [e for e in self.events if e["log_level"].name == "warn"]

    def test_fits(self) -> None:
        """An upload that fits the free space passes."""
        self.spool.check_room(1000)
        self.assertIsNone(self.spool.shortage())

    def test_refused_with_slow_down(self) -> None:
        """An upload larger than the free space is a 503 SlowDown, logged once."""
        for _ in range(3):
            e = self.assertRaises(S3Error, self.spool.check_room, 1001)
            self.assertEqual((e.code, e.status), ("SlowDown", 503))
            self.assertIn("spool is full (1000 bytes free)", e.message)
        (warning,) = self.warnings()
        self.assertEqual((warning["path"], warning["free"]), (self.spool.root, 1000))
        self.assertEqual(
            self.spool.shortage(),
            f"spool full: {self.spool.root} has 1000 bytes free, an upload needed 1001",
        )

    def test_larger_than_the_disk(self) -> None:
        """An upload larger than the whole file system is not worth retrying."""
        e = self.assertRaises(S3Error, self.spool.check_room, 10001)
        self.assertEqual((e.code, e.status), ("EntityTooLarge", 400))

    def test_room_again(self) -> None:
        """Once there is room again, the shortage is over, and a new one is logged anew."""
        self.spool.ran_out(5000)
        self.free_blocks = 600
        self.assertIsNone(self.spool.shortage())
        self.free_blocks = 10
        self.assertRaises(S3Error, self.spool.check_room, 200)
        self.assertEqual(len(self.warnings()), 2)


class FullFile:
    """A spool file on a file system that fills after ``room`` bytes."""

    def __init__(self, real: Any, room: int) -> None:
        self._real = real
        self._room = room

    def write(self, data: bytes) -> int:
        """Write, or fail as a full disk does."""
        if len(data) > self._room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= len(data)
        return int(self._real.write(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class FullDiskBodyTests(TestCase):
    """A body whose file system fills while it is spooled (ENOSPC injected)."""

    @inlineCallbacks
    def test_full_disk_is_slow_down(self) -> Any:
        """The body fails with the spool's error, after all of it was read, and its file goes."""
        directory = self.mktemp()
        os.makedirs(directory)
        pool = ThreadPool(minthreads=0, maxthreads=2, name="test-full")
        pool.start()
        self.addCleanup(pool.stop)
        needed: list[int] = []

        def on_full(received: int) -> S3Error:
            needed.append(received)
            return S3Error("SlowDown", 503, "The gateway's spool is full.")

        body = SpoolBody(reactor, pool, directory, max_size=1 << 20, on_full=on_full)  # type: ignore[arg-type]
        body._file = FullFile(body._file, 1000)
        for _ in range(5):
            body.write(b"x" * 1000)
        error = yield self.assertFailure(body.finish(), S3Error)
        self.assertEqual((error.code, error.status), ("SlowDown", 503))
        self.assertEqual(needed, [5000])
        self.assertEqual(os.listdir(directory), [])

    @inlineCallbacks
    def test_full_disk_before_finish(self) -> Any:
        """A body that failed on a full disk before its end was read fails with the same error."""
        directory = self.mktemp()
        os.makedirs(directory)
        pool = ThreadPool(minthreads=0, maxthreads=2, name="test-full")
        pool.start()
        self.addCleanup(pool.stop)
        full = S3Error("SlowDown", 503, "The gateway's spool is full.")
        body = SpoolBody(reactor, pool, directory, max_size=1 << 20, on_full=lambda n: full)  # type: ignore[arg-type]
        body._file = FullFile(body._file, 10)
        body.write(b"x" * 1000)
        for _ in range(500):  # the lanes finish with the error before the body's end is read
            if not os.listdir(directory):
                break
            yield deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(os.listdir(directory), [])
        error = yield self.assertFailure(body.finish(), S3Error)
        self.assertIs(error, full)

    @inlineCallbacks
    def test_failed_flush_fails_the_body(self) -> Any:
        """A body whose early flush to disk fails (EIO) is refused and its file removed."""
        error = yield self._failed_flush(errno.EIO)
        self.assertIsInstance(error, OSError)
        self.assertEqual(error.errno, errno.EIO)

    @inlineCallbacks
    def test_full_disk_at_flush_is_slow_down(self) -> Any:
        """A flush that finds the disk full fails the body with the spool's full error."""
        error = yield self._failed_flush(errno.ENOSPC)
        self.assertEqual((error.code, error.status), ("SlowDown", 503))

    @inlineCallbacks
    def _failed_flush(self, code: int) -> Any:
        directory = self.mktemp()
        os.makedirs(directory)
        pool = ThreadPool(minthreads=0, maxthreads=2, name="test-flush")
        pool.start()
        self.addCleanup(pool.stop)
        flushed: list[int] = []

        def failing(fd: int) -> None:
            flushed.append(fd)
            raise OSError(code, os.strerror(code))

        self.patch(spool, "SYNC_EVERY", 1000)
        self.patch(spool.os, "fdatasync", failing)
        full = S3Error("SlowDown", 503, "The gateway's spool is full.")
        body = SpoolBody(reactor, pool, directory, max_size=1 << 20, on_full=lambda n: full)  # type: ignore[arg-type]
        for _ in range(5):
            body.write(b"x" * 1000)
        error = yield body.finish().addCallbacks(lambda _: None, lambda f: f.value)
        self.assertIsNotNone(error, "the body was accepted")
        self.assertTrue(flushed)
        self.assertEqual(os.listdir(directory), [])
        return error
