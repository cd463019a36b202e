"""Tests of the HTTP channel the gateway and the node share."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import HTTPChannel
from twisted.web.http_headers import Headers

from lambgw.httpchannel import LeanChannel


class CountingTransport(StringTransport):
    """Counts how often it is asked for its addresses."""

    asked = 0

    def getPeer(self) -> Any:
        self.asked += 1
        return super().getPeer()

    def getHost(self) -> Any:
        self.asked += 1
        return super().getHost()


def head_written(channel_class: type[HTTPChannel], headers: Headers) -> bytes:
    """What a channel of ``channel_class`` writes for a 206 head with ``headers``."""
    channel = channel_class()
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.writeHeaders(b"HTTP/1.1", b"206", b"Partial Content", headers)
    return bytes(transport.value())


class LeanChannelTests(SynchronousTestCase):
    def test_head_as_twisted_writes_it(self) -> None:
        """The head's bytes are twisted.web's, repeated headers and all, in one write."""
        headers = Headers()
        headers.addRawHeader(b"content-length", b"10")
        headers.addRawHeader(b"x-amz-meta-a", b"1")
        headers.addRawHeader(b"x-amz-meta-a", b"2")
        headers.addRawHeader("etag", '"abc"')
        written = head_written(LeanChannel, headers)
        self.assertEqual(written, head_written(HTTPChannel, headers))
        self.assertTrue(written.startswith(b"HTTP/1.1 206 Partial Content\r\n"))
        self.assertIn(b"X-Amz-Meta-A: 1\r\nX-Amz-Meta-A: 2\r\n", written)
        self.assertTrue(written.endswith(b'"abc"\r\n\r\n'))
        self.assertEqual(
            head_written(LeanChannel, Headers()), b"HTTP/1.1 206 Partial Content\r\n\r\n"
        )

    def test_addresses_asked_once(self) -> None:
        """Each request asks for both addresses; the transport is asked once for each."""
        channel = LeanChannel()
        transport = CountingTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 80),
            peerAddress=IPv4Address("TCP", "10.0.0.2", 5000),
        )
        channel.makeConnection(transport)
        for _ in range(3):
            self.assertEqual(channel.getPeer().host, "10.0.0.2")
            self.assertEqual(channel.getHost().port, 80)
        self.assertEqual(transport.asked, 2)
