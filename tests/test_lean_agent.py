"""The lean agent of the network client, against real servers on loopback."""

from __future__ import annotations

import select
import socket
from typing import Any

from treq import content
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import TestCase
from twisted.web import server
from twisted.web.client import ResponseDone, ResponseFailed
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource

from lambgw.heldwrites import hold_writes
from lambgw.network.httpbody import BytesProducer
from lambgw.network.leanagent import MAX_AHEAD, LeanAgent, LeanResponse, _Chunked


class Node(Resource):
    """Answers as the node does; the path says how, the answer names the connection."""

    isLeaf = True

    def render(self, request: Any) -> Any:
        port = b"%d" % request.getClientAddress().port
        request.setHeader(b"x-port", port)
        if request.path == b"/chunked":
            request.write(b"part one, ")
            request.write(b"part two")
            request.finish()
            return server.NOT_DONE_YET
        if request.path == b"/large":
            return b"x" * (4 * MAX_AHEAD)
        if request.path == b"/host":
            return request.getHeader(b"host")
        if request.path == b"/echo":
            return request.method + b" " + request.content.read()
        return port


class Recorder(Protocol):
    """A body's reader: keeps the bytes and how the body ended."""

    def __init__(self, pause_first: bool = False) -> None:
        self.data: list[bytes] = []
        self.ended: Deferred[Any] = Deferred()
        self._pause_first = pause_first

    def dataReceived(self, data: bytes) -> None:
        self.data.append(data)
        if self._pause_first:
            self._pause_first = False
            self.transport.pauseProducing()  # type: ignore[union-attr]
            reactor.callLater(0.05, self.transport.resumeProducing)  # type: ignore[attr-defined,union-attr]

    def connectionLost(self, reason: Any) -> None:
        self.ended.callback([reason])


class Fallback:
    """The agent a streamed body goes to: records the call."""

    def __init__(self) -> None:
        self.calls: list[bytes] = []

    def request(self, method: bytes, uri: bytes, headers: Any = None, body: Any = None) -> Any:
        self.calls.append(uri)
        return Deferred()


class LeanAgentTests(TestCase):
    """Requests with a body in memory, or none, and their answers."""

    def setUp(self) -> None:
        self.port = reactor.listenTCP(0, server.Site(Node()), interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.clock = Clock()
        self.fallback = Fallback()
        self.agent = self.make_agent(self.port.getHost().port)

    def make_agent(self, port: int) -> LeanAgent:
        base = f"http://127.0.0.1:{port}"
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        agent = LeanAgent(self.clock, base, endpoint, self.fallback, 60, 2)  # type: ignore[arg-type]
        self.addCleanup(agent.close)
        self.base = base
        return agent

    def get(self, path: str, method: bytes = b"GET", body: bytes | None = None) -> Any:
        producer = None if body is None else BytesProducer(body)
        url = f"{self.base}{path}".encode()
        return self.agent.request(method, url, Headers({b"host": [b"node"]}), producer)

    @inlineCallbacks
    def test_small_answer_whole_and_connection_used_again(self) -> None:
        """A small answer is read with its head; the next request goes on the same connection."""
        first = yield self.get("/a")
        self.assertIsInstance(first, LeanResponse)
        self.assertEqual(first.code, 200)
        self.assertEqual(first.headers.getRawHeaders(b"x-port"), [first.header(b"x-port")])
        body = yield content(first)
        second = yield self.get("/b")
        self.assertEqual((yield content(second)), body)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)  # one idle timer

    @inlineCallbacks
    def test_body_sent_with_its_length(self) -> None:
        """A PUT's body in memory goes with its length."""
        response = yield self.get("/echo", b"PUT", b"the bytes")
        self.assertEqual((yield content(response)), b"PUT the bytes")

    @inlineCallbacks
    def test_host_named_when_not_given(self) -> None:
        """A request without a Host header is sent with the node's."""
        response = yield self.agent.request(b"GET", f"{self.base}/host".encode())
        self.assertEqual((yield content(response)), self.base.removeprefix("http://").encode())

    @inlineCallbacks
    def test_chunked_answer(self) -> None:
        """A chunked answer is decoded."""
        response = yield self.get("/chunked")
        self.assertEqual((yield content(response)), b"part one, part two")

    @inlineCallbacks
    def test_head_has_no_body(self) -> None:
        """A HEAD's answer ends with its head, whatever its Content-Length says."""
        response = yield self.get("/a", b"HEAD")
        self.assertEqual(response.length, 0)
        again = yield self.get("/a")
        self.assertEqual(again.header(b"x-port"), response.header(b"x-port"))

    @inlineCallbacks
    def test_large_body_streamed_with_backpressure(self) -> None:
        """A body larger than what is read ahead streams to its reader, who may pause it."""
        response = yield self.get("/large")
        self.assertEqual(response.length, 4 * MAX_AHEAD)
        reader = Recorder(pause_first=True)
        response.deliverBody(reader)
        (reason,) = yield reader.ended
        self.assertTrue(reason.check(ResponseDone))
        self.assertEqual(b"".join(reader.data), b"x" * (4 * MAX_AHEAD))
        again = yield self.get("/a")
        self.assertEqual(again.header(b"x-port"), response.header(b"x-port"))

    @inlineCallbacks
    def test_streamed_upload_goes_to_fallback(self) -> None:
        """A body that is not in memory is sent by the fallback agent."""

        class Streamed:
            length = 3

        url = f"{self.base}/x".encode()
        self.agent.request(b"PUT", url, None, Streamed())  # type: ignore[arg-type]
        self.assertEqual(self.fallback.calls, [url])
        yield deferLater(reactor, 0, lambda: None)

    @inlineCallbacks
    def test_idle_connections_closed_after_timeout(self) -> None:
        """A connection idle for the timeout is closed; the next request opens another."""
        first = yield self.get("/a")
        self.clock.advance(60)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        yield deferLater(reactor, 0.01, lambda: None)
        second = yield self.get("/a")
        self.assertNotEqual(second.header(b"x-port"), first.header(b"x-port"))


class Canned(Protocol):
    """A server that answers every request with ``answers`` in turn (then closes, if told)."""

    def __init__(self, answers: list[bytes], close_after: bool) -> None:
        self._answers = answers
        self._close_after = close_after

    def dataReceived(self, data: bytes) -> None:
        if b"\r\n\r\n" not in data:
            return
        self.transport.write(self._answers.pop(0) if self._answers else b"")  # type: ignore[union-attr]
        if self._close_after:
            self.transport.loseConnection()  # type: ignore[union-attr]


def agent_on(test: TestCase, factory: Factory) -> tuple[LeanAgent, bytes]:
    """A lean agent for a server of ``factory`` on loopback, and a URL on it."""
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    test.addCleanup(port.stopListening)
    number = port.getHost().port
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", number)
    agent = LeanAgent(Clock(), f"http://127.0.0.1:{number}", endpoint, Fallback(), 60, 4)  # type: ignore[arg-type]
    test.addCleanup(agent.close)
    return agent, f"http://127.0.0.1:{number}/x".encode()


class MalformedAnswerTests(TestCase):
    """Answers the agent refuses, and connections that end early."""

    def serve(self, answers: list[bytes], close_after: bool = False) -> LeanAgent:
        factory = Factory.forProtocol(lambda: Canned(list(answers), close_after))
        agent, self.url = agent_on(self, factory)
        return agent

    @inlineCallbacks
    def refused(self, answer: bytes) -> Any:
        agent = self.serve([answer])
        with self.assertRaises(ResponseFailed) as caught:
            yield agent.request(b"GET", self.url)
        return caught.exception

    @inlineCallbacks
    def test_no_length(self) -> None:
        """An answer with neither a length nor chunks is refused."""
        yield self.refused(b"HTTP/1.1 200 OK\r\n\r\nbody")

    @inlineCallbacks
    def test_two_lengths(self) -> None:
        """Two different lengths are refused."""
        yield self.refused(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab")

    @inlineCallbacks
    def test_bytes_after_the_answer(self) -> None:
        """Bytes after the answer's length are refused."""
        yield self.refused(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nab")

    @inlineCallbacks
    def test_not_http(self) -> None:
        """A status line that is not HTTP/1.x is refused."""
        yield self.refused(b"SMTP 220 hello\r\n\r\n")

    @inlineCallbacks
    def test_bad_chunk_size(self) -> None:
        """A chunk size that is not hexadecimal is refused."""
        yield self.refused(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1_0\r\n")

    @inlineCallbacks
    def test_head_too_large(self) -> None:
        """A head that never ends is refused once too large."""
        yield self.refused(b"HTTP/1.1 200 OK\r\nx: " + b"a" * (70 * 1024))

    @inlineCallbacks
    def test_interim_answer_skipped(self) -> None:
        """A 100 Continue before the answer is skipped."""
        agent = self.serve(
            [b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]
        )
        response = yield agent.request(b"GET", self.url)
        self.assertEqual((response.code, (yield content(response))), (200, b"ok"))

    @inlineCallbacks
    def test_cut_body_is_not_done(self) -> None:
        """A body the server cuts short ends its reader with a failure, not ResponseDone."""
        agent = self.serve([b"HTTP/1.1 200 OK\r\ncontent-length: 400000\r\n\r\nabc"], True)
        response = yield agent.request(b"GET", self.url)
        self.assertEqual(response.length, 400000)
        reader = Recorder()
        response.deliverBody(reader)
        (reason,) = yield reader.ended
        self.assertTrue(reason.check(ResponseFailed))
        self.assertEqual(b"".join(reader.data), b"abc")

    @inlineCallbacks
    def test_cancel_drops_the_connection(self) -> None:
        """A request given up before its answer drops its connection."""
        agent = self.serve([])
        waiting = agent.request(b"GET", self.url)
        yield deferLater(reactor, 0.05, lambda: None)
        waiting.cancel()
        yield self.assertFailure(waiting, CancelledError)
        self.assertEqual(agent._idle, [])


class OneAnswer(Protocol):
    """Answers the first request on its connection; closes it at the second, unanswered."""

    answered = False

    def dataReceived(self, data: bytes) -> None:
        if self.answered:
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        self.answered = True
        self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")  # type: ignore[union-attr]


class StaleConnectionTests(TestCase):
    """A request on a kept connection that the node closes before answering."""

    def setUp(self) -> None:
        self.agent, self.url = agent_on(self, Factory.forProtocol(OneAnswer))

    @inlineCallbacks
    def test_get_sent_again(self) -> None:
        """A GET is sent once more on a new connection, and answered."""
        first = yield self.agent.request(b"GET", self.url)
        self.assertEqual((yield content(first)), b"ok")
        second = yield self.agent.request(b"GET", self.url)
        self.assertEqual((yield content(second)), b"ok")

    @inlineCallbacks
    def test_put_not_sent_again(self) -> None:
        """A PUT is not sent again: it fails."""
        first = yield self.agent.request(b"GET", self.url)
        yield content(first)
        with self.assertRaises(ResponseFailed):
            yield self.agent.request(b"PUT", self.url, None, BytesProducer(b"x"))


class ChunkedTests(TestCase):
    """The decoder of chunked bodies, however the bytes are cut."""

    BODY = b"4;ext=1\r\nabcd\r\nA\r\n0123456789\r\n0\r\nx-trailer: 1\r\n\r\nNEXT"

    def test_every_cut(self) -> None:
        """Cut anywhere in two, the body decodes the same, and what follows it is kept."""
        for cut in range(len(self.BODY) + 1):
            decoder = _Chunked()
            first, rest1 = decoder.feed(self.BODY[:cut])
            second, rest2 = decoder.feed(self.BODY[cut:])
            self.assertTrue(decoder.done, cut)
            self.assertEqual(first + second, b"abcd0123456789", cut)
            self.assertEqual(rest1 + rest2, b"NEXT", cut)

    def test_byte_by_byte(self) -> None:
        """Fed one byte at a time, the body decodes whole."""
        decoder = _Chunked()
        pieces = [decoder.feed(bytes([b]))[0] for b in self.BODY[: self.BODY.index(b"NEXT")]]
        self.assertTrue(decoder.done)
        self.assertEqual(b"".join(pieces), b"abcd0123456789")


class Held(Protocol):
    """Keeps its connection, answers the first request only, and counts what it reads."""

    def __init__(self, made: list[Held]) -> None:
        made.append(self)
        self.answered = False

    def dataReceived(self, data: bytes) -> None:
        if not self.answered:
            self.answered = True
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")  # type: ignore[union-attr]


def readable(sock: Any) -> bool:
    """Whether bytes wait in ``sock``, waiting up to 5 s for them (blocking the reactor)."""
    found, _, _ = select.select([sock], [], [], 5)
    return bool(found)


class SentAtOnceTests(TestCase):
    """A request leaves when it is made; what its answer completes, when it is handled."""

    @inlineCallbacks
    def setUp(self) -> Any:
        self.nodes: list[Held] = []
        self.agent, self.url = agent_on(self, Factory.forProtocol(lambda: Held(self.nodes)))
        first = yield self.agent.request(b"GET", self.url)
        self.assertEqual((yield content(first)), b"ok")  # its connection is kept

    def test_request_on_a_kept_connection(self) -> Deferred[Any]:
        """The request is in the node's socket when ``request`` returns: not at the turn's end."""
        asked = self.agent.request(b"GET", self.url)  # the node leaves it unanswered
        handle = self.nodes[0].transport.getHandle()  # type: ignore[union-attr]
        self.assertTrue(readable(handle))
        asked.cancel()  # which drops the connection
        return self.assertFailure(asked, CancelledError)

    @inlineCallbacks
    def test_what_the_answer_completes(self) -> Any:
        """What the answer's handler writes to a held connection is sent when it is handled."""
        accepted: Deferred[Protocol] = Deferred()

        def made() -> Protocol:
            protocol = Protocol()
            reactor.callLater(0, accepted.callback, protocol)  # type: ignore[attr-defined]
            return protocol

        port = reactor.listenTCP(0, Factory.forProtocol(made), interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        peer = socket.create_connection(("127.0.0.1", port.getHost().port))
        self.addCleanup(peer.close)
        their: Any = (yield accepted).transport  # a connection of one of the gateway's clients
        hold_writes(their)
        self.addCleanup(their.loseConnection)
        (connection,) = self.agent._idle
        asked = self.agent.request(b"GET", self.url)  # the node leaves it unanswered
        asked.addCallback(lambda response: their.write(b"answered"))
        connection.dataReceived(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        self.assertTrue(asked.called)
        self.assertTrue(readable(peer))
