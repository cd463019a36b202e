"""Tests of downloads relayed from a lambnet node to a web client inside the kernel (splice).

A lambnet node and a small front site (standing for the S3 API's GetObject: it sets the
Content-Length and delivers the network's body to the request) listen on loopback in the
test's reactor; a plain HTTP client in a thread reads from the front.  Both hops are plain
TCP, so large bodies go through :class:`~lambgw.network.splice.SpliceRelay`.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import re
import socket
import threading
import time
from typing import Any

from twisted.internet import threads
from twisted.internet.defer import inlineCallbacks
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.resource import Resource

from lambgw.network import errors, sessions, splice, wire
from tests.test_lambnet_download import MiB, NodeCase, _open_files, _within, reactor

#: What the front site answers when the network fails before the headers.
FAILED = 502


class _Front(Resource):
    """GET /PATH answers the object at PATH of the test's order, with an optional Range."""

    isLeaf = True

    def __init__(self, case: _FrontCase) -> None:
        super().__init__()
        self.case = case
        self.requests: list[server.Request] = []
        self.delivered: list[Any] = []

    def render_GET(self, request: server.Request) -> Any:
        path = request.path.decode()[1:]
        first, last = 0, None
        wanted = request.getHeader(b"range")
        if wanted:
            low, _, high = wanted.decode().removeprefix("bytes=").partition("-")
            first, last = int(low), int(high)
        self.requests.append(request)
        getting = self.case.get(path, first, last)
        getting.addCallbacks(
            self._got, self._failed, callbackArgs=(request, first, last), errbackArgs=(request,)
        )
        return server.NOT_DONE_YET

    def _got(self, result: Any, request: server.Request, first: int, last: int | None) -> None:
        info, body = result
        end = info.size if last is None else last + 1
        request.setHeader(b"content-length", str(end - first).encode())
        delivering = body.deliver(request)
        delivering.addBoth(self._delivered, request)

    def _delivered(self, result: Any, request: server.Request) -> None:
        self.delivered.append(result)
        if isinstance(result, Failure):
            if request.channel is not None:
                request.channel.transport.abortConnection()
        else:
            request.finish()

    def _failed(self, reason: Failure, request: server.Request) -> None:
        request.setResponseCode(FAILED)
        request.finish()


def _fetch(
    port: int, path: str, headers: dict[str, str], pause_after: int = 0, pause: float = 0.5
) -> bytes:
    """GET ``path``; after ``pause_after`` bytes, stop reading for ``pause`` s (thread only)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        pieces = []
        if pause_after:
            pieces.append(response.read(pause_after))
            time.sleep(pause)
        pieces.append(response.read())
        return b"".join(pieces)
    finally:
        connection.close()


def _leave(port: int, path: str, after: int) -> int:
    """GET ``path``, read ``after`` bytes and close the connection; the bytes read (thread)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path)
        return len(connection.getresponse().read(after))
    finally:
        connection.close()


def _read_short(port: int, path: str) -> tuple[int, bytes]:
    """GET ``path`` whose body must end short; its announced length and what came (thread)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        length = int(response.getheader("content-length", "0"))
        pieces = []
        try:
            while piece := response.read(64 * 1024):
                pieces.append(piece)
        except (http.client.IncompleteRead, OSError):
            pass
        return length, b"".join(pieces)
    finally:
        connection.close()


def _pipes() -> int:
    return sum(1 for target in _open_files() if target.startswith("pipe:"))


def _sockets() -> set[str]:
    return {target for target in _open_files() if target.startswith("socket:")}


class _FrontCase(NodeCase):
    """The node (NodeCase) and the front site, both over real loopback sockets."""

    def setUp(self) -> None:
        """Start the node (NodeCase) and the front site; count splice calls."""
        super().setUp()
        self.front = _Front(self)
        port = reactor.listenTCP(0, server.Site(self.front), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port
        self.splices = 0
        real = os.splice

        def counting(*args: Any, **kwargs: Any) -> int:
            self.splices += 1
            return real(*args, **kwargs)

        self.patch(splice.os, "splice", counting)

    def fetch(
        self,
        path: str,
        headers: dict[str, str] | None = None,
        pause_after: int = 0,
        pause: float = 0.5,
    ) -> Any:
        return threads.deferToThread(_fetch, self.port, path, headers or {}, pause_after, pause)


class SpliceTests(_FrontCase):
    """Node to client through the front."""

    @inlineCallbacks
    def test_large_object_spliced(self) -> Any:
        """A large object arrives whole, moved by splice, and counted as sent by the request."""
        data = os.urandom(24 * MiB + 7)
        self.put("big", [data])
        received = yield self.fetch("/big")
        self.assertEqual(received, data)
        self.assertGreater(self.splices, 0)
        self.assertEqual(self.front.requests[0].sentLength, len(data))

    @inlineCallbacks
    def test_range_across_parts_spliced(self) -> Any:
        """A range spanning the parts of a multipart object is relayed exactly."""
        parts = [os.urandom(3 * MiB), os.urandom(1), os.urandom(5 * MiB)]
        self.put("multi", parts)
        whole = b"".join(parts)
        first, last = 100, 7 * MiB
        received = yield self.fetch("/multi", {"range": f"bytes={first}-{last}"})
        self.assertEqual(received, whole[first : last + 1])
        self.assertGreater(self.splices, 0)

    @inlineCallbacks
    def test_small_object_read_and_written(self) -> Any:
        """A body under the threshold goes through the process, keeping the node connection."""
        data = os.urandom(300 * 1024)
        self.put("small", [data])
        received = yield self.fetch("/small")
        self.assertEqual(received, data)
        self.assertEqual(self.splices, 0)

    @inlineCallbacks
    def test_slow_client_waited_for(self) -> Any:
        """A client that stops reading holds the relay back; every byte still arrives."""
        data = os.urandom(48 * MiB)
        self.put("slow", [data])
        received = yield self.fetch("/slow", pause_after=MiB)
        self.assertEqual(received, data)
        self.assertGreater(self.splices, 0)

    @inlineCallbacks
    def test_slow_client_not_taken_for_a_silent_node(self) -> Any:
        """A client that reads nothing for longer than the silence timeout still gets it all."""
        self.network = self.connect(silence=1.0)
        data = os.urandom(48 * MiB)
        self.put("slower", [data])
        received = yield self.fetch("/slower", pause_after=MiB, pause=3.0)
        self.assertEqual(received, data)
        self.assertGreater(self.splices, 0)

    @inlineCallbacks
    def test_client_leaving_releases_the_pipe_and_sockets(self) -> Any:
        """A client that goes away mid-body: the pipe, the duplicates and the node hop close."""
        data = os.urandom(64 * MiB)
        self.put("left", [data])
        yield threads.deferToThread(lambda: None)  # the thread pool's own descriptors
        pipes, sockets = _pipes(), _sockets()
        read = yield threads.deferToThread(_leave, self.port, "/left", MiB)
        self.assertEqual(read, MiB)
        ended = yield _within(lambda: bool(self.front.delivered))
        self.assertTrue(ended, "the delivery did not end when the client left")
        self.assertIsInstance(self.front.delivered[-1], Failure)
        released = yield _within(lambda: _pipes() == pipes)
        self.assertTrue(released, "a pipe of the relay is still open")
        closed = yield _within(lambda: _sockets() == sockets)
        self.assertTrue(closed, "a socket (or a duplicate) of the relay is still open")
        self.assertGreater(self.splices, 0)

    @inlineCallbacks
    def test_node_cutting_the_body_cuts_the_client(self) -> Any:
        """A node whose file is short cuts its answer: the client's body ends short, not wrong."""
        data = os.urandom(8 * MiB)
        self.put("short", [data])
        self.shorten("short", 3 * MiB)
        length, received = yield threads.deferToThread(_read_short, self.port, "/short")
        self.assertEqual(length, len(data))
        self.assertLess(len(received), len(data))
        self.assertEqual(received, data[: len(received)])
        self.assertTrue(self.front.delivered[0].check(errors.NetworkUnavailable))
        self.flushLoggedErrors(errors.NetworkError)


def _session_answer(connection: socket.socket, request: bytes) -> bytes:
    """The answer to a request opening a session: a session of the stand-in's own making."""
    head, _, body = request.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head)[1])  # type: ignore[index]
    while len(body) < length:
        body += connection.recv(65536)
    client_key = base64.b64decode(json.loads(body)["key"])
    session_id, node_key = sessions.SessionTable().open("demo", None, client_key, time.time())
    answer = json.dumps(
        {"session": session_id, "key": base64.b64encode(node_key).decode(), "lifetime": 3600}
    ).encode()
    status = f"HTTP/1.1 201 Created\r\nconnection: close\r\ncontent-length: {len(answer)}\r\n"
    return status.encode() + b"\r\n" + answer


class _OnePieceNode:
    """A stand-in node answering every GET with its headers and a first piece in one send.

    It opens the sessions the gateway asks for, and checks no request.

    The gateway then parses the headers, hands the body to the front and gets the first body
    bytes in the same read: the relay must count them before it starts.
    """

    def __init__(self, head: bytes, body: bytes, first: int) -> None:
        self.head, self.body, self.first = head, body, first
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:  # closed
                return
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        with connection:
            request = b""
            while b"\r\n\r\n" not in request:
                piece = connection.recv(65536)
                if not piece:
                    return
                request += piece
            if request.startswith(b"POST "):
                connection.sendall(_session_answer(connection, request))
                return
            with contextlib.suppress(OSError):  # the gateway may close early
                connection.sendall(self.head + self.body[: self.first])
                time.sleep(0.05)
                connection.sendall(self.body[self.first :])
                connection.recv(1)  # until the gateway closes

    def close(self) -> None:
        self.listener.close()


class SameReadTests(_FrontCase):
    """Body bytes that arrive with the node's headers are not lost to the relay."""

    def test_first_bytes_in_the_headers_read(self) -> Any:
        """Headers and a first piece in one read, then the rest: every GET ends whole."""
        data = os.urandom(8 * MiB)
        self.put("one", [data])
        info = self.store.head("demo", self.order.order_id, "one")
        head = (
            b"HTTP/1.1 200 OK\r\n"
            + f"content-length: {len(data)}\r\n".encode()
            + f"{wire.OBJECT_HEADER}: {wire.header_json(wire.info_to_json(info))}\r\n\r\n".encode()
        )
        node = _OnePieceNode(head, data, 48 * 1024)
        self.addCleanup(node.close)
        self.url = f"http://127.0.0.1:{node.port}"
        self.network = self.connect(silence=5.0)

        @inlineCallbacks
        def run() -> Any:
            for _ in range(5):
                received = yield self.fetch("/one")
                self.assertEqual(received, data)
            self.assertEqual(self.front.delivered, [None] * 5)
            self.assertGreater(self.splices, 0)

        return run()
