"""Tests of the access log written to a file of its own, in batches."""

from __future__ import annotations

import os
import signal
import tempfile

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from lambgw.observe import accessfile
from lambgw.observe.accessfile import AccessLogFile
from tests.configured import send_signal, wait_for
from tests.gateway import start_lambgw


def read(path: str) -> str:
    """The text of a file."""
    with open(path, encoding="utf-8") as f:
        return f.read()


class AccessLogFileTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.path = os.path.join(self.mktemp() + "-dir", "access.log")
        os.makedirs(os.path.dirname(self.path))
        self.log = AccessLogFile(self.path, self.clock, flush_every=1.0)
        self.addCleanup(self.log.close)

    def test_written_after_the_wait(self) -> None:
        """Lines are kept, then written together once the wait is over."""
        self.log.write("one")
        self.log.write("two")
        self.assertEqual(read(self.path), "")
        self.clock.advance(1.0)
        self.assertEqual(read(self.path), "one\ntwo\n")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_written_at_once_when_many_wait(self) -> None:
        """Enough waiting bytes are written without waiting for the timer."""
        line = "x" * 1000
        for _ in range(accessfile.FLUSH_BYTES // 1001 + 1):
            self.log.write(line)
        self.assertEqual(read(self.path).count("\n"), accessfile.FLUSH_BYTES // 1001 + 1)

    def test_close_writes_what_waits(self) -> None:
        """Closing writes the waiting lines; the file is appended to, never truncated."""
        self.log.write("first")
        self.log.close()
        again = AccessLogFile(self.path, self.clock)
        again.write("second")
        again.close()
        self.assertEqual(read(self.path), "first\nsecond\n")

    def test_reopen_after_rotation(self) -> None:
        """After the file is moved away, reopen starts a new one at the path."""
        self.log.write("old")
        os.rename(self.path, self.path + ".1")
        self.log.reopen()
        self.log.write("new")
        self.clock.advance(1.0)
        self.assertEqual((read(self.path + ".1"), read(self.path)), ("old\n", "new\n"))

    def test_unwritable_refused(self) -> None:
        """A path that cannot be opened raises at once."""
        self.assertRaises(OSError, AccessLogFile, os.path.join(self.path, "x"), self.clock)


class AccessLogFileGatewayTests(SynchronousTestCase):
    """A real gateway with --access-log."""

    def test_lines_in_the_file_and_rotated_on_sighup(self) -> None:
        """Requests are logged to the file, not the twistd log; SIGHUP starts a new file."""
        home = tempfile.mkdtemp(prefix="lambgw-access-")
        path = os.path.join(home, "access.log")
        gateway = start_lambgw(home, "--access-log", path)
        self.addCleanup(gateway.stop)
        s3 = gateway.s3_client()
        s3.put_object(Bucket=gateway.order_id, Key="logged", Body=b"x")
        wait_for(lambda: "PutObject" in read(path))
        self.assertIn(f"/{gateway.order_id}/logged", read(path))
        self.assertNotIn("PutObject", gateway.output())
        os.rename(path, path + ".1")
        send_signal(gateway, signal.SIGHUP)
        wait_for(lambda: os.path.exists(path))
        s3.get_object(Bucket=gateway.order_id, Key="logged")["Body"].read()
        gateway.stop()
        self.assertIn("GetObject", read(path))
        self.assertNotIn("GetObject", read(path + ".1"))
