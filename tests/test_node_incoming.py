"""Tests of where and when a node writes a spooled body: in its hashing lane's thread.

The node runs over a store in a temporary directory; its pool is either a real
``ThreadPool`` or one whose calls wait until the test runs them (``HeldPool``), and its
reactor only queues what the pool's threads hand it (``QueueReactor``).
"""

from __future__ import annotations

import errno
import hashlib
import os
import threading
import time
from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Any

from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyChannel

from lambgw.lambnet import incoming
from lambgw.lambnet.app import Node, NodeSite
from lambgw.lambnet.incoming import READ_SIZE, NodeRequest
from lambgw.network import signing, wire
from tests.test_network_http import Harness, HeldPool, QueueReactor

_real_write = os.write


def _in(directory: str, fd: int) -> bool:
    """Whether ``fd`` is open on a file in ``directory``."""
    return os.path.dirname(os.readlink(f"/proc/self/fd/{fd}")) == os.path.realpath(directory)


class SpooledWriteTests(SynchronousTestCase):
    """A spooled body is written by its hashing lane, in order, one file per part."""

    def request(
        self, pool: Any, part_sizes: Sequence[int] | None = None
    ) -> tuple[NodeRequest, list[Callable[[], None]], list[str]]:
        """A spooling request of a node on ``pool``; the reactor's queued calls; its events."""
        h = Harness(self.mktemp())
        calls: list[Callable[[], None]] = pool.calls if isinstance(pool, HeldPool) else []
        node = Node(h.store, QueueReactor(calls), h.clock, pool)
        channel = DummyChannel()
        channel.site = NodeSite(node)
        self.incoming = channel.site.incoming
        events: list[str] = []
        channel.transport.pauseProducing = lambda: events.append("pause")
        channel.transport.resumeProducing = lambda: events.append("resume")
        request = NodeRequest(channel)
        request.requestHeaders.setRawHeaders(b"authorization", [signing.SCHEME.encode()])
        if part_sizes is not None:
            header = wire.format_part_sizes(list(part_sizes)).encode()
            request.requestHeaders.setRawHeaders(wire.PART_SIZES_HEADER.encode(), [header])

        def lose() -> None:
            if getattr(request, "channel", None) is not None:  # not finished
                request.connectionLost(Failure(ConnectionDone()))

        self.addCleanup(lose)
        self.patch(request, "process", lambda: events.append("process"))
        return request, calls, events

    def left(self) -> list[str]:
        """The files left in the node's incoming/ directory."""
        return os.listdir(self.incoming)

    def test_written_in_a_pool_thread(self) -> None:
        """The reactor thread never writes a spooled body's file; a pool thread does."""
        pool = ThreadPool(minthreads=1, maxthreads=2, name="test-incoming")
        pool.start()
        self.addCleanup(pool.stop)
        request, calls, events = self.request(pool)
        writers: list[threading.Thread] = []

        def write(fd: int, data: Any) -> int:
            if _in(self.incoming, fd):
                writers.append(threading.current_thread())
            return _real_write(fd, data)

        self.patch(incoming.os, "write", write)
        data = os.urandom(3 * READ_SIZE + 5)
        request.gotLength(len(data))
        for start in range(0, len(data), READ_SIZE):
            request.handleContentChunk(data[start : start + READ_SIZE])
        request.requestReceived(b"PUT", f"/{wire.VERSION}/x".encode(), b"HTTP/1.1")
        deadline = time.monotonic() + 30
        while "process" not in events and time.monotonic() < deadline:
            while calls:
                calls.pop(0)()
            time.sleep(0.001)
        self.assertEqual(events, ["process"])
        self.assertTrue(writers)
        self.assertNotIn(threading.current_thread(), writers)
        (segment,) = request.segments()
        with open(segment.path, "rb") as f:
            self.assertEqual((segment.size, f.read()), (len(data), data))

    def test_nothing_written_until_the_lane_runs(self) -> None:
        """Bytes handed over by the connection wait in the lane, not in the file."""
        request, calls, _ = self.request(HeldPool([]))
        data = os.urandom(2 * READ_SIZE)
        request.gotLength(len(data))
        request.handleContentChunk(data)
        (path,) = request.spool_paths
        self.assertEqual(os.path.getsize(path), 0)
        while calls:
            calls.pop(0)()
        self.assertEqual(os.path.getsize(path), len(data))

    def assertParts(self, request: NodeRequest, parts: Sequence[bytes]) -> None:
        segments = request.segments()
        self.assertEqual([s.size for s in segments], [len(p) for p in parts])
        for segment, part in zip(segments, parts, strict=True):
            if segment.path:
                with open(segment.path, "rb") as f:
                    self.assertEqual(f.read(), part)
            else:
                self.assertEqual(segment.data, part)

    def test_parts_cut_where_they_end(self) -> None:
        """Pieces straddling parts' ends, joined into one batch or not, fill a file per part."""
        sizes = [300_000, 5, 0, 700_001, 0]
        data = os.urandom(sum(sizes))
        parts = [data[sum(sizes[:i]) : sum(sizes[: i + 1])] for i in range(len(sizes))]
        cuts = [0, 299_990, 300_010, 600_000, 900_000, len(data)]
        for lane_each_piece in (False, True):
            request, calls, events = self.request(HeldPool([]), sizes)
            request.gotLength(len(data))
            for start, end in pairwise(cuts):
                request.handleContentChunk(data[start:end])
                while lane_each_piece and calls:
                    calls.pop(0)()
            request.requestReceived(b"PUT", f"/{wire.VERSION}/x".encode(), b"HTTP/1.1")
            while calls:
                calls.pop(0)()
            self.assertEqual(events, ["process"])
            self.assertEqual(len(request.spool_paths), 4)
            self.assertParts(request, parts)
            self.assertEqual(request.body_sha256(), hashlib.sha256(data).hexdigest())

    def test_each_ended_part_flushed(self) -> None:
        """The file of each part but the last is flushed to disk in the pool once written."""
        request, calls, _ = self.request(HeldPool([]), [300_000, 300_000, 5])
        flushed: list[str] = []
        self.patch(
            incoming.os, "fdatasync", lambda fd: flushed.append(os.readlink(f"/proc/self/fd/{fd}"))
        )
        request.gotLength(600_005)
        request.handleContentChunk(os.urandom(600_005))
        while calls:
            calls.pop(0)()
        self.successResultOf(request.flushed())
        self.assertEqual(flushed, list(request.spool_paths[:2]))

    def test_write_failure_stops_writing(self) -> None:
        """A file system error fails the body as unwritten, makes no more files, leaves none."""
        request, calls, _ = self.request(HeldPool([]), [READ_SIZE, READ_SIZE])

        def full(fd: int, data: Any) -> int:
            if _in(self.incoming, fd):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return _real_write(fd, data)

        self.patch(incoming.os, "write", full)
        request.gotLength(2 * READ_SIZE)
        request.handleContentChunk(os.urandom(2 * READ_SIZE))
        while calls:
            calls.pop(0)()
        failure = self.failureResultOf(request.flushed(), wire.ProtocolError)
        self.assertEqual((failure.value.status, failure.value.code), (500, "InternalError"))
        self.assertIn("No space left on device", str(failure.value))
        self.assertRaises(wire.ProtocolError, request.segments)
        self.assertEqual(len(request.spool_paths), 1)
        request.finish()
        self.assertEqual(self.left(), [])

    def test_lost_while_the_lane_writes(self) -> None:
        """A connection lost while the lane writes removes the files at once; none is made after."""
        request, calls, _ = self.request(HeldPool([]), [READ_SIZE, READ_SIZE])
        left_at_loss: list[list[str]] = []

        def write(fd: int, data: Any) -> int:
            if not left_at_loss and _in(self.incoming, fd):
                request.connectionLost(Failure(ConnectionLost()))
                left_at_loss.append(self.left())
            return _real_write(fd, data)

        self.patch(incoming.os, "write", write)
        request.gotLength(2 * READ_SIZE)
        request.handleContentChunk(os.urandom(2 * READ_SIZE))
        calls.pop(0)()  # the lane: its first file written, the second not made
        self.assertEqual((left_at_loss, len(request.spool_paths)), ([[]], 1))
        while calls:
            calls.pop(0)()
        self.assertEqual(self.left(), [])

    def test_lost_with_the_lane_stopped(self) -> None:
        """Files go with the connection even if the lane never runs again (a node stopping)."""
        request, calls, _ = self.request(HeldPool([]))
        request.gotLength(2 * READ_SIZE)
        request.handleContentChunk(os.urandom(READ_SIZE))
        calls.pop(0)()  # the lane writes; its news wait for the reactor
        request.handleContentChunk(os.urandom(READ_SIZE))
        request.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(self.left(), [])
