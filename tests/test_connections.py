"""Tests of the bounds on the S3 API's connections: head time, body pace, the cap."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import server
from twisted.web.resource import Resource

from lambgw.s3.connections import ConnectionLimits, Connections, Refusal, S3Channel

LIMITS = ConnectionLimits(header_timeout=2.0, min_body_rate=1000, max_connections=2)
PUT_HEAD = b"PUT /b/k HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\n"


class Ok(Resource):
    """Answers ``ok`` to anything."""

    isLeaf = True

    def render(self, request: server.Request) -> bytes:
        return b"ok"


class ChannelTests(SynchronousTestCase):
    """A channel cuts heads and bodies too slow, and only those."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.closed: list[str] = []
        self.connections = Connections(LIMITS, self.closed.append)
        site = server.Site(Ok())
        self.channel = S3Channel()
        self.channel.site = site
        self.channel.requestFactory = site.requestFactory
        self.channel.callLater = self.clock.callLater  # type: ignore[method-assign]
        self.channel.clock = self.clock
        self.channel.connections = self.connections
        self.transport = StringTransport()
        self.channel.makeConnection(self.transport)
        self.addCleanup(self.channel.connectionLost, None)  # type: ignore[arg-type]

    def test_counted(self) -> None:
        """An open connection counts against the cap until it is lost."""
        self.assertEqual(self.connections.open, 1)
        self.assertFalse(self.connections.full())
        self.connections.opened()
        self.assertTrue(self.connections.full())

    def test_slow_head_cut(self) -> None:
        """A head not in within the timeout is answered RequestTimeout and closed."""
        self.channel.dataReceived(b"GET / HTTP/1.1\r\n")
        self.clock.advance(1.9)
        self.channel.dataReceived(b"Host: h\r\n")  # each byte resets the idle timer, not this one
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(0.2)
        self.assertTrue(self.transport.disconnecting)
        self.assertTrue(self.transport.value().startswith(b"HTTP/1.1 400 Bad Request\r\n"))
        self.assertIn(b"<Code>RequestTimeout</Code>", self.transport.value())
        self.assertEqual(self.closed, ["header_timeout"])

    def test_idle_keepalive_not_cut(self) -> None:
        """Between two requests of a kept-alive connection, only the idle timeout applies."""
        self.channel.dataReceived(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertIn(b"ok", self.transport.value())
        self.clock.advance(10)
        self.assertFalse(self.transport.disconnecting)
        self.channel.dataReceived(b"GET / HTTP/1.1\r\n")
        self.clock.advance(2.1)
        self.assertTrue(self.transport.disconnecting)

    def test_body_at_pace(self) -> None:
        """A body that brings the least rate goes on."""
        self.channel.dataReceived(PUT_HEAD)
        for _ in range(6):
            self.channel.dataReceived(b"x" * 1000)
            self.clock.advance(1.0)
        self.assertFalse(self.transport.disconnecting)

    def test_slow_body_cut(self) -> None:
        """A body slower than the least rate over a window is cut."""
        self.channel.dataReceived(PUT_HEAD)
        self.channel.dataReceived(b"x" * 1000)
        self.clock.advance(2.0)
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.closed, ["slow_body"])

    def test_held_body_not_cut(self) -> None:
        """While the gateway holds a body back, its pace is not held against the client."""
        self.channel.dataReceived(PUT_HEAD)
        self.channel.hold_body()
        self.assertEqual(self.transport.producerState, "paused")
        self.clock.advance(10)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(0.5)
        self.channel.release_body()
        self.clock.advance(1.9)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(self.transport.disconnecting)


class HalfClosing(StringTransport):
    """A transport whose write side closes apart."""

    write_closed = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True


class RefusalTests(SynchronousTestCase):
    """A connection over the cap is answered SlowDown and cut soon after."""

    def test_answered_and_cut(self) -> None:
        """The answer is a 503 SlowDown; the connection is aborted if the client lingers."""
        clock = Clock()
        transport = HalfClosing()
        refusal = Refusal(clock)
        refusal.makeConnection(transport)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 503 Service Unavailable\r\n"))
        self.assertIn(b"<Code>SlowDown</Code>", transport.value())
        refusal.dataReceived(b"GET / HTTP/1.1\r\n")
        self.assertTrue(transport.write_closed)
        self.assertFalse(transport.disconnecting)
        clock.advance(2.0)
        self.assertTrue(transport.disconnecting)
