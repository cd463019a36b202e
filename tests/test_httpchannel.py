"""Tests of the HTTP channel the gateway and the node share."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import HTTPChannel, Request
from twisted.web.http_headers import Headers
from twisted.web.test.requesthelper import DummyChannel

from lambgw.httpchannel import LeanChannel, LeanRequest


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


class RecordingRequest(Request):
    """Notes what the channel made of each request, and answers it at once.

    With an ``X-Close`` header, it then closes the connection, as a server giving up does.
    """

    def process(self) -> None:
        """Record the request line, the headers and the body on the channel; answer 200."""
        self.content.seek(0)
        self.channel.seen.append(
            (
                self.method,
                self.uri,
                self.clientproto,
                sorted(self.requestHeaders.getAllRawHeaders()),
                self.content.read(),
            )
        )
        channel = self.channel
        self.setHeader(b"content-length", b"2")
        self.write(b"ok")
        self.finish()
        if self.requestHeaders.hasHeader(b"x-close"):
            channel.transport.loseConnection()


class RecordingTwisted(HTTPChannel):
    """twisted.web's own channel, recording its requests."""

    requestFactory = RecordingRequest

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Any] = []


class RecordingLean(LeanChannel):
    """The lean channel, recording its requests and counting the heads it took in one pass."""

    requestFactory = RecordingRequest

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Any] = []
        self.one_pass = 0

    def _head(self, *args: Any) -> None:
        self.one_pass += 1
        super()._head(*args)


def fed(channel: Any, pieces: list[bytes]) -> tuple[list[Any], bytes, bool, int]:
    """Feed ``pieces`` to ``channel``.

    Returns the requests it handled, what it wrote, whether it is closing, and how many
    requests it holds unfinished.
    """
    transport = StringTransport()
    channel.makeConnection(transport)
    for piece in pieces:
        if transport.disconnecting:
            break
        channel.dataReceived(piece)
    return (
        channel.seen,
        bytes(transport.value()),
        bool(transport.disconnecting),
        len(channel.requests),
    )


SIGNED = (
    b"Host: 127.0.0.1:9000\r\n"
    b"User-Agent: Boto3/1.35.0 md/Botocore#1.35.0\r\n"
    b"X-Amz-Date: 20261201T000000Z\r\n"
    b"x-amz-content-sha256: UNSIGNED-PAYLOAD\r\n"
    b"Authorization: AWS4-HMAC-SHA256 Credential=a/20261201/us-east-1/s3/aws4_request,"
    b" SignedHeaders=host;x-amz-date, Signature=00ff\r\n"
)
#: Heads the one-pass parser takes, each with what follows it.
TAKEN = {
    "get": b"GET /b/k?x-id=GetObject HTTP/1.1\r\n" + SIGNED + b"\r\n",
    "put with its body": b"PUT /b/k HTTP/1.1\r\n" + SIGNED + b"Content-Length: 5\r\n\r\nhello",
    "http/1.0": b"HEAD /b/k HTTP/1.0\r\nHost: h\r\n\r\n",
    "body to come": b"PUT /b/k HTTP/1.1\r\nContent-Length: 3\r\n\r\n",
    "chunked": b"PUT /b/k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "identity coding": b"PUT /b HTTP/1.1\r\nTransfer-Encoding: identity\r\n"
    b"Content-Length: 1\r\n\r\nx",
    "repeated header": b"GET / HTTP/1.1\r\nX-A: 1\r\nx-a: 2\r\nX-B:\r\nX-C:  spaced \t\r\n\r\n",
    "pipelined": b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n",
    "odd header case": b"GET / HTTP/1.1\r\ncontent-md5: x\r\nETAG: y\r\n"
    b"www-authenticate: z\r\n\r\n",
    "closing": b"GET / HTTP/1.1\r\nConnection: close\r\n\r\nGET /after HTTP/1.1\r\n\r\n",
    "closed": b"GET / HTTP/1.1\r\nX-Close: 1\r\n\r\nGET /after HTTP/1.1\r\n\r\n",
}
#: Heads left to twisted.web's parser: odd, or malformed (answered 400 by it).
LEFT = {
    "folded line": b"GET / HTTP/1.1\r\nX-A: 1\r\n  more\r\n\r\n",
    "empty line first": b"\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
    "lone LF": b"GET / HTTP/1.1\r\nX-A: 1\nX-B: 2\r\n\r\n",
    "NUL in a value": b"GET / HTTP/1.1\r\nX-A: a\x00b\r\n\r\n",
    "no colon": b"GET / HTTP/1.1\r\nbroken\r\n\r\n",
    "space in a name": b"GET / HTTP/1.1\r\nX A: 1\r\n\r\n",
    "empty name": b"GET / HTTP/1.1\r\n: 1\r\n\r\n",
    "bad length": b"PUT / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",
    "two lengths": b"PUT / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
    "length and chunked": b"PUT / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked"
    b"\r\n\r\n0\r\n\r\n",
    "unknown coding": b"PUT / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
    "http/2 line": b"GET / HTTP/2.0\r\n\r\n",
    "bad method": b"G(T / HTTP/1.1\r\n\r\n",
    "space in target": b"GET /a b HTTP/1.1\r\n\r\n",
    "high byte in target": b"GET /\xa0 HTTP/1.1\r\n\r\n",
    "head too large": b"GET / HTTP/1.1\r\nX-A: " + b"a" * 17000 + b"\r\n\r\n",
    "too many headers": b"GET / HTTP/1.1\r\n" + b"X-A: 1\r\n" * 501 + b"\r\n",
}


class OnePassHeadTests(SynchronousTestCase):
    """The lean channel's one-pass head parser changes nothing twisted.web would do."""

    def assertSame(self, data: bytes, pieces: list[bytes] | None = None) -> RecordingLean:
        lean = RecordingLean()
        pieces = pieces or [data]
        self.assertEqual(fed(lean, pieces), fed(RecordingTwisted(), pieces))
        return lean

    def test_taken_heads(self) -> None:
        """Each usual head is taken in one pass, with the requests twisted.web makes of it."""
        for name, data in TAKEN.items():
            with self.subTest(name):
                lean = self.assertSame(data)
                self.assertGreaterEqual(lean.one_pass, 1)
                self.assertTrue(lean.seen or name == "body to come")

    def test_pipelined_and_closing(self) -> None:
        """A pipelined request is answered too; none after ``Connection: close`` or a close."""
        self.assertEqual(
            [r[1] for r in fed(RecordingLean(), [TAKEN["pipelined"]])[0]], [b"/1", b"/2"]
        )
        for name in ("closing", "closed"):
            seen, _, closing, _ = fed(RecordingLean(), [TAKEN[name]])
            self.assertEqual([r[1] for r in seen], [b"/"])
            self.assertTrue(closing)

    def test_left_heads(self) -> None:
        """Each odd or malformed head goes to twisted.web's parser, which decides."""
        for name, data in LEFT.items():
            with self.subTest(name):
                lean = self.assertSame(data)
                self.assertEqual(lean.one_pass, 0)
        written = fed(RecordingLean(), [LEFT["no colon"]])[1]
        self.assertTrue(written.startswith(b"HTTP/1.1 400 Bad Request"))

    def test_heads_in_pieces(self) -> None:
        """A head cut anywhere is read as twisted.web reads it, and each whole one in one pass."""
        data = TAKEN["put with its body"] + TAKEN["get"]
        for cut in range(1, len(data)):
            with self.subTest(cut=cut):
                self.assertSame(data, [data[:cut], data[cut:]])
        lean = self.assertSame(data, [TAKEN["put with its body"], TAKEN["get"]])
        self.assertEqual(lean.one_pass, 2)


class ResponseHeaderTests(SynchronousTestCase):
    def test_set_as_twisted_sets_them(self) -> None:
        """Each header set ends up as twisted.web's own setHeader leaves it, breaks and all."""
        pairs: list[tuple[Any, Any]] = [
            (b"ETag", b'"abc"'),
            (b"etag", b'"again"'),
            (b"x-amz-request-id", b"0123"),
            (b"Content-Md5", b"x"),
            (b"X-Empty", b""),
            (b"X-Folded", b"one\r\ntwo\nthree\rfour"),
            (b"X-Trailing", b"end\n"),
            ("X-Text", "caf\u00e9"),
            (b"X-Mixed", "text"),
        ]
        ours, theirs = LeanRequest(DummyChannel()), Request(DummyChannel())
        for name, value in pairs:
            ours.setHeader(name, value)
            theirs.setHeader(name, value)
        self.assertEqual(
            sorted(ours.responseHeaders.getAllRawHeaders()),
            sorted(theirs.responseHeaders.getAllRawHeaders()),
        )
        self.assertEqual(ours.responseHeaders.getRawHeaders(b"x-folded"), [b"one two three four"])

    def test_cookies_not_parsed(self) -> None:
        """A ``Cookie`` header is a header like any other: no cookie is parsed from it."""
        request = LeanRequest(DummyChannel())
        request.requestHeaders.setRawHeaders(b"Cookie", [b"a=1; b=2"])
        request.parseCookies()
        self.assertEqual(request.received_cookies, {})
        self.assertEqual(request.getHeader(b"cookie"), b"a=1; b=2")
