"""Tests of downloads from a lambnet node over real loopback sockets, sent with sendfile(2).

The node's site listens on 127.0.0.1 in the test's reactor and the gateway's HTTP network
(built by :meth:`HTTPNetwork.connect`) reads from it, so the node's answers go through a
plain TCP connection and :class:`~lambgw.network.files.SendfileBody`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor as global_reactor
from twisted.internet import task, tcp
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import Protocol
from twisted.internet.testing import StringTransport
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web import server
from twisted.web.resource import Resource

from lambgw.lambnet.app import Node, NodeSite
from lambgw.network import errors, files, signing
from lambgw.network.http import SILENCE_TIMEOUT, HTTPNetwork
from lambgw.network.interface import NewObject, Segment
from lambgw.network.store import Store

reactor: Any = global_reactor
MiB = 1024 * 1024


class _Collector:
    """A consumer keeping what it is written; it can hold its producer paused."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.producer: Any = None

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        self.chunks.append(data)

    def value(self) -> bytes:
        return b"".join(self.chunks)

    def received(self) -> int:
        return sum(len(chunk) for chunk in self.chunks)


def _open_files() -> list[str]:
    """What the descriptors of this process point to (sockets, files)."""
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed since it was listed
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
    return targets


def _sockets_and(directory: str) -> list[str]:
    """The sockets open in this process and the files open under ``directory``."""
    return [t for t in _open_files() if t.startswith(("socket:", directory))]


class NodeCase(TestCase):
    """A lambnet node listening on loopback, and the gateway's HTTP network reading from it."""

    def setUp(self) -> None:
        root = self.mktemp()
        self.spool = self.mktemp()
        os.makedirs(self.spool)
        self.store = Store(root, durable=False)
        self.store.create_account("demo")
        self.order = self.store.buy_order("demo", 256 * MiB, 30)
        key = signing.generate_key()
        os.makedirs(os.path.join(root, "keys"))
        with open(os.path.join(root, "keys", "demo.pub"), "wb") as f:
            f.write(signing.public_key_pem(key.public_key()))
        self.pool = ThreadPool(minthreads=1, maxthreads=4, name="test-download")
        self.pool.start()
        self.addCleanup(self.pool.stop)
        node = Node(self.store, reactor, reactor, self.pool)
        port = reactor.listenTCP(0, NodeSite(node), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.url = f"http://127.0.0.1:{port.getHost().port}"
        self.key = key
        self.network = self.connect()
        self.calls = 0
        real = os.sendfile

        def counting(*args: Any) -> int:
            self.calls += 1
            return real(*args)

        self.patch(files.os, "sendfile", counting)

    def connect(self, silence: float = SILENCE_TIMEOUT) -> HTTPNetwork:
        """The gateway's network reading the node, giving up after ``silence`` seconds."""
        network = HTTPNetwork.connect(
            self.url, "demo", self.key, reactor, self.pool, silence=silence
        )
        # The connection pool is private to the network; its connections must not outlive the test.
        self.addCleanup(network.close)
        return network

    def put(self, path: str, parts: list[bytes]) -> None:
        segments = []
        for index, part in enumerate(parts):
            name = os.path.join(self.spool, f"{path}-{index}")
            with open(name, "wb") as f:
                f.write(part)
            segments.append(Segment(name, len(part)))
        whole = b"".join(parts)
        etag = hashlib.md5(whole).hexdigest() + (f"-{len(parts)}" if len(parts) > 1 else "")
        self.store.put("demo", self.order.order_id, path, segments, NewObject(len(whole), etag))

    def get(self, path: str, first: int = 0, last: int | None = None) -> Deferred[Any]:
        return self.network.get_object("demo", self.order.order_id, path, first, last)

    def shorten(self, path: str, keep: int) -> None:
        """Cut the file of the object at ``path`` after ``keep`` bytes, behind its index."""
        _, ranges = self.store.open_range("demo", self.order.order_id, path)
        os.truncate(ranges[0].file.name, ranges[0].offset + keep)
        for piece in ranges:
            piece.file.close()


class DownloadTests(NodeCase):
    """Downloads from the node to a consumer in memory."""

    @inlineCallbacks
    def test_whole_object_sent_by_the_kernel(self) -> Any:
        """A large object arrives whole and in order, its bytes sent with sendfile."""
        data = os.urandom(9 * MiB + 5)
        self.put("big", [data])
        _, body = yield self.get("big")
        consumer = _Collector()
        yield body.deliver(consumer)
        self.assertEqual(consumer.value(), data)
        self.assertGreater(self.calls, 0)

    @inlineCallbacks
    def test_range_across_parts(self) -> Any:
        """A range spanning the parts of a multipart object comes back exactly."""
        parts = [os.urandom(3 * MiB), os.urandom(1), os.urandom(2 * MiB)]
        self.put("multi", parts)
        whole = b"".join(parts)
        first, last = 3 * MiB - 10, 3 * MiB + 1000
        _, body = yield self.get("multi", first, last)
        consumer = _Collector()
        yield body.deliver(consumer)
        self.assertEqual(consumer.value(), whole[first : last + 1])

    @inlineCallbacks
    def test_paused_consumer_resumed(self) -> Any:
        """A consumer that pauses the transfer for a while still gets every byte."""
        data = os.urandom(12 * MiB)
        self.put("slow", [data])
        _, body = yield self.get("slow")
        consumer = _Collector()
        done = body.deliver(consumer)
        consumer.producer.pauseProducing()
        yield task.deferLater(reactor, 0.3)
        self.assertLess(consumer.received(), len(data))
        consumer.producer.resumeProducing()
        yield done
        self.assertEqual(consumer.value(), data)

    @inlineCallbacks
    def test_short_file_cuts_the_transfer(self) -> Any:
        """A file shorter than its index fails the download instead of sending other bytes."""
        data = os.urandom(6 * MiB)
        self.put("short", [data])
        self.shorten("short", 2 * MiB)
        _, body = yield self.get("short")
        consumer = _Collector()
        with self.assertRaises(errors.NetworkUnavailable):
            yield body.deliver(consumer)
        self.assertEqual(consumer.value(), data[: consumer.received()])
        self.assertEqual(len(self.flushLoggedErrors(errors.NetworkError)), 1)

    @inlineCallbacks
    def test_cancelled_download_releases_the_node(self) -> Any:
        """Dropping a download mid-way closes the node's files, socket and its duplicate."""
        data = os.urandom(16 * MiB)
        self.put("dropped", [data])
        objects = os.path.join(self.store.root, "objects")
        sockets = len(_sockets_and(objects))
        _, body = yield self.get("dropped")
        consumer = _Collector()
        done = body.deliver(consumer)
        consumer.producer.pauseProducing()
        opened = yield _within(lambda: len(_sockets_and(objects)) > sockets)
        self.assertTrue(opened, "the node never opened the object")
        done.cancel()
        done.addErrback(lambda _: None)
        released = yield _within(lambda: len(_sockets_and(objects)) <= sockets)
        self.assertTrue(released, f"still open: {_sockets_and(objects)}")
        self.assertFalse([t for t in _sockets_and(objects) if t.startswith(objects)])


@inlineCallbacks
def _within(condition: Callable[[], bool], seconds: float = 10.0) -> Any:
    """Fire with whether ``condition`` became true within ``seconds``, looking every 50 ms."""
    for _ in range(int(seconds / 0.05)):
        if condition():
            return True
        yield task.deferLater(reactor, 0.05)
    return condition()


class _Channel:
    """A web request's channel, holding the transport."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.site = server.Site(Resource())

    def getPeer(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 40000)

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 9002)


def _request(transport: Any, method: bytes = b"GET", length: bool = True) -> server.Request:
    """A web request on ``transport`` whose response has (or has not) a Content-Length."""
    request = server.Request(_Channel(transport))
    request.method = method
    if length:
        request.setHeader(b"content-length", b"10")
    return request


class SendfileTransportTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.socket = socket.socket()
        self.addCleanup(self.socket.close)
        self.connection = tcp.Connection(self.socket, Protocol(), task.Clock())  # type: ignore[arg-type]

    def test_plain_tcp_used(self) -> None:
        """A plain TCP connection takes file bytes with sendfile."""
        self.assertIs(files.sendfile_transport(_request(self.connection)), self.connection)

    def test_tls_not_used(self) -> None:
        """A connection that started TLS must see the bytes: no sendfile."""
        self.connection.TLS = True
        self.assertIsNone(files.sendfile_transport(_request(self.connection)))

    def test_other_transports_not_used(self) -> None:
        """An in-memory transport, or no web request at all, means no sendfile."""
        self.assertIsNone(files.sendfile_transport(_request(StringTransport())))
        self.assertIsNone(files.sendfile_transport(StringTransport()))

    def test_framed_or_bodiless_responses_not_used(self) -> None:
        """A response framed in chunks (no Content-Length) or to a HEAD must see its bytes."""
        self.assertIsNone(files.sendfile_transport(_request(self.connection, length=False)))
        self.assertIsNone(files.sendfile_transport(_request(self.connection, method=b"HEAD")))
