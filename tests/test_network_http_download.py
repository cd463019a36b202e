"""Tests of the download side of the HTTP network: connection read size and silence timer."""

from __future__ import annotations

from typing import Any

from twisted.internet import task
from twisted.internet.abstract import FileDescriptor
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import URI, BrowserLikePolicyForHTTPS, ResponseDone

from lambgw.network import errors
from lambgw.network.httpagent import NodeEndpoints
from lambgw.network.httpbody import DEFAULT_READ, LARGE_READ, HTTPObjectBody, set_read_size
from tests.test_network_http import FakeResponse


class _Wrapper:
    """A transport over another one, as TLS wraps the socket's."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport


class ReadSizeTests(SynchronousTestCase):
    def test_socket_read_size_set(self) -> None:
        """The socket transport reads the size given at a time."""
        socket = FileDescriptor(reactor=task.Clock())  # type: ignore[arg-type]
        self.assertIs(set_read_size(socket, LARGE_READ), socket)
        self.assertEqual(socket.bufferSize, LARGE_READ)

    def test_socket_under_tls_set(self) -> None:
        """The socket under a wrapping transport (TLS) is the one changed."""
        socket = FileDescriptor(reactor=task.Clock())  # type: ignore[arg-type]
        wrapper = _Wrapper(socket)
        set_read_size(wrapper, LARGE_READ)
        self.assertEqual(socket.bufferSize, LARGE_READ)
        self.assertFalse(hasattr(wrapper, "bufferSize"))

    def test_large_reads_only_while_a_large_body_arrives(self) -> None:
        """A streamed body reads its connection in large pieces, then gives the default back."""
        socket = FileDescriptor(reactor=task.Clock())  # type: ignore[arg-type]
        self.assertEqual(socket.bufferSize, DEFAULT_READ)
        response = FakeResponse(10)
        response.transport._producer = socket  # type: ignore[attr-defined]
        body = HTTPObjectBody(response, task.Clock(), 30.0)
        done = body.deliver(StringTransport())
        self.assertEqual(socket.bufferSize, LARGE_READ)
        response.protocol.dataReceived(b"0123456789")
        response.protocol.connectionLost(Failure(ResponseDone()))
        self.successResultOf(done)
        self.assertEqual(socket.bufferSize, DEFAULT_READ)


class EndpointTests(SynchronousTestCase):
    def test_endpoints_made_once(self) -> None:
        """The node's endpoint is made once and reused; HTTPS gets a TLS endpoint of its own."""
        endpoints = NodeEndpoints(task.Clock(), BrowserLikePolicyForHTTPS(), 10.0)
        plain = endpoints.endpointForURI(URI.fromBytes(b"http://127.0.0.1:9100/v1/a?path=x"))
        again = endpoints.endpointForURI(URI.fromBytes(b"http://127.0.0.1:9100/v1/b"))
        tls = endpoints.endpointForURI(URI.fromBytes(b"https://127.0.0.1:9100/v1/a"))
        self.assertIs(plain, again)
        self.assertIsInstance(plain, HostnameEndpoint)
        self.assertNotIsInstance(tls, HostnameEndpoint)


class _CountingClock(task.Clock):
    """A clock that counts the calls scheduled on it."""

    scheduled = 0

    def callLater(self, delay: float, f: Any, *args: Any, **kw: Any) -> Any:
        self.scheduled += 1
        return super().callLater(delay, f, *args, **kw)


class SilenceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = _CountingClock()
        self.response = FakeResponse(10)
        self.body = HTTPObjectBody(self.response, self.clock, 30.0)
        self.consumer = StringTransport()
        self.done = self.body.deliver(self.consumer)

    def test_no_timer_per_chunk(self) -> None:
        """Chunks arriving, pauses and resumptions schedule nothing: one silence check runs."""
        for _ in range(5):
            self.response.protocol.dataReceived(b"0")
            self.consumer.producer.pauseProducing()
            self.consumer.producer.resumeProducing()
            self.clock.advance(1)
        self.assertEqual(self.clock.scheduled, 1)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.assertNoResult(self.done)

    def test_silence_counted_from_resume(self) -> None:
        """After a long pause, the node has the whole timeout again from the resumption."""
        self.consumer.producer.pauseProducing()
        self.clock.advance(100)
        self.consumer.producer.resumeProducing()
        self.clock.advance(29)
        self.assertNoResult(self.done)
        self.clock.advance(2)
        self.failureResultOf(self.done, errors.NetworkUnavailable)
        self.assertTrue(self.response.transport.stopped)

    def test_no_timer_left_after_the_end(self) -> None:
        """A complete body leaves no silence check behind."""
        self.response.protocol.dataReceived(b"0123456789")
        self.response.protocol.connectionLost(Failure(ResponseDone()))
        self.successResultOf(self.done)
        self.assertEqual(self.clock.getDelayedCalls(), [])
