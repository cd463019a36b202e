"""Tests of counting a download's bytes as the kernel takes them, whatever the client does.

A sendfile(2) call runs in a pool thread; the client may leave (often right after the last
byte) before the reactor hears of the call's result.  The test holds the call back to force
exactly that interleaving.
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyChannel

from lambgw.network.files import SendfileBody
from lambgw.network.store import FileRange
from lambgw.s3.request import S3Request

DATA = b"0123456789" * 1000


class HeldPool:
    """A thread pool whose calls run only when the test says so."""

    def __init__(self) -> None:
        self.calls: list[Callable[[], None]] = []

    def callInThreadWithCallback(self, on_result: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        def run() -> None:
            try:
                on_result(True, f(*args, **kwargs))
            except BaseException as e:
                on_result(False, Failure(e))

        self.calls.append(run)


class InlineReactor(Clock):
    """A clock whose calls from threads run at once."""

    def callFromThread(self, f: Any, *args: Any, **kwargs: Any) -> None:
        f(*args, **kwargs)


class Transport:
    """The plain TCP transport under the request: one end of a socket pair."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.producerPaused = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def startWriting(self) -> None:
        """Writable at once: the body may go on."""


class Request:
    """The parts of a web request a SendfileBody uses, and the kernel sends it was told of."""

    def __init__(self) -> None:
        self.sentLength = 0
        self.written: list[bytes] = []
        self.producer: Any = None
        self.sends: list[Deferred[Any]] = []
        self._disconnected = False

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def kernel_send(self, call: Deferred[Any]) -> None:
        self.sends.append(call)


class SendfileCountTests(SynchronousTestCase):
    """Bytes are counted when the kernel takes them, even after the client has left."""

    def setUp(self) -> None:
        self.ours, self.theirs = socket.socketpair()
        self.addCleanup(self.ours.close)
        self.addCleanup(self.theirs.close)
        fd, path = tempfile.mkstemp()
        os.write(fd, DATA)
        os.close(fd)
        self.addCleanup(os.remove, path)
        self.file = open(path, "rb")  # noqa: SIM115 - the body closes it
        self.addCleanup(self.file.close)
        self.pool = HeldPool()
        self.request = Request()

    def start(self, chunk_size: int = len(DATA)) -> None:
        """Deliver the file in calls of ``chunk_size`` bytes; the first one is held."""
        self.body = SendfileBody(
            [FileRange(self.file, 0, len(DATA))],
            Transport(self.ours),  # type: ignore[arg-type]
            InlineReactor(),
            self.pool,  # type: ignore[arg-type]
            chunk_size,
        )
        self.done = self.body.deliver(self.request)
        self.body.resumeProducing()  # the transport is writable

    def test_left_after_last_byte(self) -> None:
        """A client that leaves while the last send is in flight got a whole download."""
        self.start()
        (send,) = self.pool.calls
        self.body.stopProducing()  # the connection is lost before the send's result is in
        self.assertNoResult(self.done)
        send()
        self.successResultOf(self.done)
        self.assertEqual(self.request.sentLength, len(DATA))
        self.assertEqual(len(self.request.sends), 1)

    def test_cancelled_then_counted(self) -> None:
        """Cancelled meanwhile (the request is gone), the send's bytes are still counted."""
        self.start()
        (send,) = self.pool.calls
        self.body.stopProducing()
        self.done.cancel()
        self.failureResultOf(self.done)
        send()
        self.assertEqual(self.request.sentLength, len(DATA))

    def test_left_before_last_byte(self) -> None:
        """A client that leaves with bytes still to send cut the download."""
        self.start(chunk_size=1000)
        (send,) = self.pool.calls
        self.body.stopProducing()
        send()
        self.failureResultOf(self.done, ConnectionLost)
        self.assertEqual(self.request.sentLength, 1000)


class SettledTests(SynchronousTestCase):
    """A request settles once no kernel send is in flight; lost, it forgets unsent bytes."""

    def request(self) -> S3Request:
        return S3Request(DummyChannel())

    def test_settled_waits_for_sends(self) -> None:
        """when_settled() calls at once with no send in flight, else once every one returned."""
        request = self.request()
        calls: list[str] = []
        request.when_settled(lambda: calls.append("now"))
        self.assertEqual(calls, ["now"])
        first: Deferred[None] = Deferred()
        second: Deferred[None] = Deferred()
        request.kernel_send(first)
        request.kernel_send(second)
        request.when_settled(lambda: calls.append("later"))
        first.callback(None)
        self.assertEqual(calls, ["now"])
        second.errback(ConnectionLost())
        self.assertEqual(calls, ["now", "later"])
        self.failureResultOf(second, ConnectionLost)

    def test_settled_waiter_raising(self) -> None:
        """A waiter that raises is logged: the send's own result and the other waiters stay."""
        request = self.request()
        calls: list[str] = []
        send: Deferred[int] = Deferred()
        request.kernel_send(send)

        def raising() -> None:
            raise RuntimeError("a waiter's own bug")

        request.when_settled(raising)
        request.when_settled(lambda: calls.append("after"))
        send.callback(5)
        self.assertEqual(self.successResultOf(send), 5)
        self.assertEqual(calls, ["after"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_over_observers(self) -> None:
        """when_over() observers hear, in order, of a finished answer, each only once."""
        request = self.request()
        heard: list[tuple[str, object]] = []
        request.when_over(lambda reason: heard.append(("first", reason)))
        request.when_over(lambda reason: heard.append(("second", reason)))
        request.setHeader(b"Content-Length", b"0")
        request.finish()
        self.assertEqual(heard, [("first", None), ("second", None)])

    def test_over_observers_when_lost(self) -> None:
        """Observers hear the failure of a lost request; one that raises stops no other."""
        request = self.request()
        heard: list[object] = []

        def raising(reason: Failure | None) -> None:
            raise RuntimeError("an observer's own bug")

        request.when_over(raising)
        request.when_over(heard.append)
        request.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(len(heard), 1)
        assert isinstance(heard[0], Failure)
        self.assertTrue(heard[0].check(ConnectionLost))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_unsent_buffer_not_counted(self) -> None:
        """Bytes left in the transport's buffer when the connection is lost were not sent."""
        request = self.request()
        request.sentLength = 5000
        transport = request.channel.transport
        transport.dataBuffer = b"x" * 1500
        transport.offset = 500
        transport._tempDataLen = 200
        request.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(request.sentLength, 5000 - 1000 - 200)
