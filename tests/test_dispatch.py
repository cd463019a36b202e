"""The reactor's dispatch without a logging context (:mod:`lambgw.dispatch`), on real sockets."""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.epollreactor import EPollReactor
from twisted.internet.testing import MemoryReactor
from twisted.python import context, log
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from lambgw.dispatch import lean_dispatch


class Reader:
    """A socket's reader for the reactor: keeps what it reads and the logging context's system."""

    def __init__(self, sock: socket.socket, fail: bool = False) -> None:
        self.sock = sock
        self.fail = fail
        self.read: list[bytes] = []
        self.systems: list[str] = []
        self.lost: list[Failure] = []

    def fileno(self) -> int:
        return self.sock.fileno()

    def logPrefix(self) -> str:
        return "reader"

    def doRead(self) -> None:
        self.systems.append(context.get(log.ILogContext, {}).get("system", "-"))
        if self.fail:
            raise ValueError("the handler failed")
        self.read.append(self.sock.recv(100))

    def connectionLost(self, reason: Failure) -> None:
        self.lost.append(reason)


class LeanDispatchTests(SynchronousTestCase):
    """A fresh epoll reactor, dispatched leanly, polled one turn at a time."""

    def setUp(self) -> None:
        self.reactor = EPollReactor()
        self.ours, self.theirs = socket.socketpair()
        self.addCleanup(self.ours.close)
        self.addCleanup(self.theirs.close)
        self.addCleanup(self.close)  # first: while the sockets are open

    def close(self) -> None:
        waker: Any = self.reactor.waker
        self.reactor.removeAll()
        self.reactor.removeReader(waker)
        waker.connectionLost(None)
        self.reactor._poller.close()

    def turn(self, reader: Reader) -> None:
        """Send a byte to ``reader``'s socket and run one turn of the reactor."""
        self.theirs.send(b"x")
        self.reactor.addReader(reader)  # type: ignore[arg-type]
        self.reactor.doIteration(5)

    def test_twisted_pushes_a_context(self) -> None:
        """Twisted's own dispatch names the reader in a logging context (what is left out)."""
        reader = Reader(self.ours)
        self.turn(reader)
        self.assertEqual((reader.read, reader.systems), ([b"x"], ["reader"]))

    def test_event_reaches_its_reader_directly(self) -> None:
        """The reader reads, with no logging context pushed around it."""
        self.assertTrue(lean_dispatch(self.reactor))
        reader = Reader(self.ours)
        self.turn(reader)
        self.assertEqual((reader.read, reader.systems), ([b"x"], ["-"]))

    def test_failing_reader_is_dropped(self) -> None:
        """A reader that raises is logged and dropped by the reactor, as before."""
        lean_dispatch(self.reactor)
        reader = Reader(self.ours, fail=True)
        self.turn(reader)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertEqual(len(reader.lost), 1)
        self.assertNotIn(reader, self.reactor.getReaders())

    def test_nothing_ready(self) -> None:
        """A turn with no event returns once its timeout is over, having called nothing."""
        lean_dispatch(self.reactor)
        reader = Reader(self.ours)
        self.reactor.addReader(reader)  # type: ignore[arg-type]
        self.reactor.doIteration(0.01)
        self.assertEqual(reader.systems, [])

    def test_other_reactors_left_alone(self) -> None:
        """A reactor that is not epoll's is not changed."""
        memory = MemoryReactor()
        self.assertFalse(lean_dispatch(memory))
        self.assertNotIn("doIteration", vars(memory))
