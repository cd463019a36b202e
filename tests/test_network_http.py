"""Tests of the HTTP network client against the lambnet app in memory (treq.testing, no sockets).

The client's agent is ``treq.testing.RequestTraversalAgent``, whose
server side is the node's own site; store calls and digests run synchronously and time is a
``task.Clock``, so every test is deterministic.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from hypothesis import given
from hypothesis import strategies as st
from treq import content
from treq.client import HTTPClient
from treq.testing import RequestTraversalAgent
from twisted.internet import task
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseDone
from twisted.web.iweb import UNKNOWN_LENGTH
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyChannel, DummyRequest

from lambgw.lambnet.app import Node, NodeSite
from lambgw.lambnet.app import _query as node_query
from lambgw.lambnet.incoming import (
    DEFAULT_READ,
    HASH_HIGH_WATER,
    MEMORY_BODY,
    READ_SIZE,
    NodeRequest,
)
from lambgw.lambnet.keys import PublicKeys
from lambgw.lambnet.resource import NodeResource
from lambgw.network import errors, signing, wire
from lambgw.network.files import read_small
from lambgw.network.http import EARLY_GROUP, IDLE_TIMEOUT, HTTPNetwork
from lambgw.network.httpbody import HTTPObjectBody, SegmentsProducer
from lambgw.network.interface import NewObject, Segment
from lambgw.network.store import Store

_T = TypeVar("_T")


class SyncPool:
    """A thread pool that runs each call at once, in the calling thread."""

    def callInThreadWithCallback(
        self, on_result: Callable[[bool, Any], None], f: Callable[..., Any], *a: Any, **kw: Any
    ) -> None:
        try:
            result = f(*a, **kw)
        except BaseException:
            on_result(False, Failure())
        else:
            on_result(True, result)

    def callInThread(self, f: Callable[..., Any], *a: Any, **kw: Any) -> None:
        f(*a, **kw)


class QueueReactor:
    """Queues ``callFromThread`` calls for the harness to run."""

    def __init__(self, queue: list[Callable[[], None]]) -> None:
        self.queue = queue

    def callFromThread(self, f: Callable[..., Any], *a: Any, **kw: Any) -> None:
        self.queue.append(lambda: f(*a, **kw))


class Harness:
    """A node over a store in ``root`` and an HTTP network client wired to it in memory."""

    def __init__(self, root: str) -> None:
        self.clock = task.Clock()
        self.clock.advance(time.time())
        self.scheduled: list[Callable[[], None]] = []
        self.cooperator = task.Cooperator(scheduler=self._schedule, started=True)
        self.store = Store(root, clock=self.clock.seconds, durable=False)
        self.store.create_account("demo")
        self.order = self.store.buy_order("demo", 1024 * 1024, 30)
        self.key = signing.generate_key()
        os.makedirs(os.path.join(root, "keys"))
        with open(os.path.join(root, "keys", "demo.pub"), "wb") as f:
            f.write(signing.public_key_pem(self.key.public_key()))
        pool: Any = SyncPool()
        reactor: Any = QueueReactor(self.scheduled)
        self.node = Node(self.store, reactor, self.clock, pool)
        self.agent = RequestTraversalAgent(NodeResource(self.node))
        self.agent._serverFactory = NodeSite(self.node)
        self.network = HTTPNetwork(
            "http://node.example:9100",
            "demo",
            self.key,
            self.agent,
            reactor,
            self.clock,
            pool,
            self.cooperator,
            silence=30.0,
            retry_delays=(1.0, 2.0),
        )

    def _schedule(self, f: Callable[[], None]) -> None:
        self.scheduled.append(f)

    def run(self, d: Deferred[_T], advance: float = 0.0) -> _T | Failure:
        """Pump the connections and the cooperator until ``d`` fires; its result."""
        results: list[Any] = []
        d.addBoth(results.append)
        for _ in range(10_000):
            if results:
                break
            self.agent.flush()
            pending = list(self.scheduled)
            del self.scheduled[:]
            for f in pending:
                f()
            if not pending:
                # Calls due now (a turn's reads sent together), then the time asked for.
                self.clock.advance(advance)
        if not results:
            raise AssertionError("the Deferred never fired")
        result: _T | Failure = results[0]
        return result


def _segment(directory: str, name: str, data: bytes) -> Segment:
    path = os.path.join(directory, name)
    with open(path, "wb") as f:
        f.write(data)
    return Segment(path, len(data))


def _new(data: bytes, etag: str = "") -> NewObject:
    return NewObject(size=len(data), etag=etag or hashlib.md5(data).hexdigest())


class ClientTests(SynchronousTestCase):
    def setUp(self) -> None:
        root = self.mktemp()
        self.spool = self.mktemp()
        os.makedirs(self.spool)
        self.h = Harness(root)

    def put(self, path: str, data: bytes) -> Any:
        segment = _segment(self.spool, "body", data)
        return self.h.run(
            self.h.network.put_object("demo", self.h.order.order_id, path, [segment], _new(data))
        )

    def test_orders(self) -> None:
        """The account's orders come back as the store holds them."""
        orders = self.h.run(self.h.network.orders("demo"))
        self.assertEqual(orders, [self.h.order])

    def test_streaming_upload_of_segments(self) -> None:
        """Segments from files and memory are uploaded in order and consumed."""
        parts = [os.urandom(300_000), os.urandom(5), os.urandom(700_000)]
        segments = [
            _segment(self.spool, "p1", parts[0]),
            Segment("", len(parts[1]), parts[1]),
            _segment(self.spool, "p3", parts[2]),
        ]
        whole = b"".join(parts)
        info = self.h.run(
            self.h.network.put_object(
                "demo", self.h.order.order_id, "a/b c", segments, _new(whole, "x-3")
            )
        )
        self.assertEqual((info.size, info.etag), (len(whole), "x-3"))
        self.assertEqual(tuple(info.part_sizes), (300_000, 5, 700_000))
        self.assertEqual(os.listdir(self.spool), [])
        _, ranges = self.h.store.open_range("demo", self.h.order.order_id, "a/b c")
        stored = b"".join(os.pread(r.file.fileno(), r.length, r.offset) for r in ranges)
        self.assertEqual(stored, whole)

    def test_small_multipart_keeps_its_parts(self) -> None:
        """A small multipart object (kept in memory by the node) keeps its part sizes."""
        segments = [Segment("", 2, b"ab"), Segment("", 3, b"cde")]
        info = self.h.run(
            self.h.network.put_object(
                "demo", self.h.order.order_id, "m", segments, _new(b"abcde", "y-2")
            )
        )
        self.assertEqual(tuple(info.part_sizes), (2, 3))
        _, body = self.h.run(self.h.network.get_object("demo", self.h.order.order_id, "m", 1, 3))
        consumer = StringTransport()
        self.h.run(body.deliver(consumer))
        self.assertEqual(consumer.value(), b"bcd")

    def test_get_streams_with_range(self) -> None:
        """A byte range is delivered to the consumer, and the description comes along."""
        data = os.urandom(100_000)
        self.put("k", data)
        info, body = self.h.run(
            self.h.network.get_object("demo", self.h.order.order_id, "k", 10, 20_009)
        )
        self.assertEqual(info.size, len(data))
        consumer = StringTransport()
        self.h.run(body.deliver(consumer))
        self.assertEqual(consumer.value(), data[10:20_010])
        self.assertIsNone(consumer.producer)

    def sent(self) -> list[tuple[bytes, bytes]]:
        """Record the method and path of every request the network sends from now on."""
        sent: list[tuple[bytes, bytes]] = []
        request = self.h.agent.request

        def recording(method: bytes, uri: bytes, *args: Any, **kwargs: Any) -> Any:
            resource = uri.split(b"?")[0].rsplit(b"/", 1)[-1]
            if resource != b"sessions":
                sent.append((method, resource))
            return request(method, uri, *args, **kwargs)

        self.patch(self.h.agent, "request", recording)
        return sent

    def body_of(self, got: Any) -> bytes:
        """The bytes of a read object's body."""
        consumer = StringTransport()
        self.h.run(got[1].deliver(consumer))
        return consumer.value()

    def test_reads_of_one_turn_sent_together(self) -> None:
        """Whole objects asked for in one turn come in one request, each with its error."""
        order = self.h.order.order_id
        small, held, large = os.urandom(60_000), b"h" * 10, os.urandom(100_000)
        self.put("small", small)
        self.put("held", held)
        self.put("large", large)
        sent = self.sent()
        network = self.h.network
        reads = [network.get_object("demo", order, p) for p in ("held", "nope", "large", "small")]
        reads.append(network.get_object("demo", "0" * 40, "held"))  # no such order
        held_info, _ = got_held = self.h.run(reads[0])
        self.assertEqual((held_info.size, self.body_of(got_held)), (10, held))
        self.assertIsInstance(self.h.run(reads[1]).value, errors.NoSuchPath)
        # Over SMALL_READ: described, then read alone, streamed.
        got_large = self.h.run(reads[2])
        self.assertEqual(self.body_of(got_large), large)
        self.assertIsInstance(got_large[1], HTTPObjectBody)
        self.assertEqual(self.body_of(self.h.run(reads[3])), small)
        self.assertIsInstance(self.h.run(reads[4]).value, errors.NoSuchOrder)
        self.assertEqual(sent, [(b"POST", b"read"), (b"GET", b"object")])

    def test_read_alone_and_ranges_are_plain_gets(self) -> None:
        """A turn's only read, and a byte range, are each a GET of their own."""
        order = self.h.order.order_id
        self.put("k", b"0123456789")
        sent = self.sent()
        self.assertEqual(
            self.body_of(self.h.run(self.h.network.get_object("demo", order, "k"))), b"0123456789"
        )
        ranged = [self.h.network.get_object("demo", order, "k", 2, 4) for _ in range(2)]
        self.assertEqual([self.body_of(self.h.run(d)) for d in ranged], [b"234", b"234"])
        self.assertEqual(sent, [(b"GET", b"object")] * 3)

    def test_reads_of_long_paths_sent_alone(self) -> None:
        """Reads whose paths would make the request too long for the node go alone."""
        order = self.h.order.order_id
        paths = [f"{n:02d}" + "\x01" * 1000 for n in range(12)]  # escaped: 6 bytes each
        for path in paths:
            self.put(path, path[:2].encode())
        sent = self.sent()
        reads = [self.h.network.get_object("demo", order, path) for path in paths]
        self.assertEqual(
            [self.body_of(self.h.run(d)) for d in reads], [p[:2].encode() for p in paths]
        )
        self.assertEqual(sent, [(b"GET", b"object")] * 12)

    def test_reads_given_up_are_dropped(self) -> None:
        """A read cancelled while it waits fails as cancelled; the others are answered."""
        order = self.h.order.order_id
        self.put("a", b"A")
        self.put("b", b"B")
        first = self.h.network.get_object("demo", order, "a")
        second = self.h.network.get_object("demo", order, "b")
        first.cancel()
        self.assertIsInstance(self.h.run(first).value, CancelledError)
        self.assertEqual(self.body_of(self.h.run(second)), b"B")

    def test_reads_of_more_than_one_request(self) -> None:
        """A turn's reads go in groups of ``EARLY_GROUP``, each sent once it is full."""
        order = self.h.order.order_id
        count = 2 * EARLY_GROUP + 3
        for n in range(count):
            self.put(f"o{n}", b"%d" % n)
        sent = self.sent()
        reads = [self.h.network.get_object("demo", order, f"o{n}") for n in range(count)]
        self.assertEqual(sent, [(b"POST", b"read")] * 2)  # before the turn ends
        self.assertEqual(
            [self.body_of(self.h.run(d)) for d in reads], [b"%d" % n for n in range(count)]
        )
        self.assertEqual(sent, [(b"POST", b"read")] * 3)

    def test_empty_object(self) -> None:
        """An empty object is stored, and read back as no bytes."""
        self.h.run(
            self.h.network.put_object(
                "demo", self.h.order.order_id, "e", [Segment("", 0, b"")], _new(b"")
            )
        )
        info, body = self.h.run(self.h.network.get_object("demo", self.h.order.order_id, "e"))
        consumer = StringTransport()
        self.h.run(body.deliver(consumer))
        self.assertEqual((info.size, consumer.value()), (0, b""))

    def test_head_list_copy_delete(self) -> None:
        """Head, list, copy and delete reach the store."""
        self.put("dir/one", b"1")
        self.put("two", b"22")
        order = self.h.order.order_id
        self.assertEqual(self.h.run(self.h.network.head_object("demo", order, "two")).size, 2)
        page = self.h.run(self.h.network.list_objects("demo", order, delimiter="/"))
        self.assertEqual(
            ([o.path for o in page.objects], page.common_prefixes), (["two"], ["dir/"])
        )
        copied = self.h.run(self.h.network.copy_object("demo", order, "two", order, "three"))
        self.assertEqual(copied.size, 2)
        self.assertTrue(self.h.run(self.h.network.delete_object("demo", order, "two")))
        self.assertFalse(self.h.run(self.h.network.delete_object("demo", order, "two")))

    def test_errors_mapped(self) -> None:
        """The node's errors come back as the network's exceptions."""
        order = self.h.order.order_id
        missing = self.h.run(self.h.network.head_object("demo", order, "nope"))
        self.assertIsInstance(missing, Failure)
        missing.trap(errors.NoSuchPath)
        other = self.h.run(self.h.network.order("demo", "0" * 40))
        other.trap(errors.NoSuchOrder)

    def test_quota_refused_and_not_charged(self) -> None:
        """An object larger than the order's free space is refused; nothing is charged."""
        result = self.put("big", os.urandom(1024 * 1024 + 1))
        result.trap(errors.QuotaExceeded)
        self.assertEqual(self.h.store.order("demo", self.h.order.order_id).used, 0)
        self.assertEqual(os.listdir(self.spool), [])
        incoming = os.path.join(self.h.store.root, "incoming")
        self.assertEqual([n for _, _, names in os.walk(incoming) for n in names], [])

    def test_if_none_match(self) -> None:
        """A conditional put over an existing object fails with PreconditionFailed."""
        self.put("k", b"1")
        segment = Segment("", 1, b"2")
        result = self.h.run(
            self.h.network.put_object(
                "demo", self.h.order.order_id, "k", [segment], _new(b"2"), if_none_match=True
            )
        )
        result.trap(errors.PreconditionFailed)

    def test_if_match(self) -> None:
        """The node replaces or deletes only an object with the etag If-Match names."""
        order, network = self.h.order.order_id, self.h.network
        self.put("k", b"1")
        etag = _new(b"1").etag

        def put_if(if_match: str) -> Any:
            segment = Segment("", 1, b"2")
            return self.h.run(
                network.put_object("demo", order, "k", [segment], _new(b"2"), False, if_match)
            )

        put_if("0" * 32).trap(errors.PreconditionFailed)
        self.assertEqual(put_if(etag).etag, _new(b"2").etag)
        self.h.run(network.delete_object("demo", order, "k", etag)).trap(errors.PreconditionFailed)
        self.assertTrue(self.h.run(network.delete_object("demo", order, "k", "*")))
        self.h.run(network.delete_object("demo", order, "k", "*")).trap(errors.NoSuchPath)


class IdleTimeoutTests(SynchronousTestCase):
    def test_gateway_closes_idle_connections_first(self) -> None:
        """The gateway keeps an idle connection for less time than the node does."""
        h = Harness(self.mktemp())
        self.assertLess(IDLE_TIMEOUT, NodeSite(h.node).timeOut)


class LengthTests(SynchronousTestCase):
    def test_answers_carry_their_length(self) -> None:
        """The node sends its answers with their length, not in chunks."""
        h = Harness(self.mktemp())
        agent, seen = h.agent, []

        class Watching:
            def request(self, *args: Any) -> Deferred[Any]:
                return agent.request(*args).addCallback(lambda r: seen.append(r) or r)

        h.network._agent = Watching()  # type: ignore[assignment]
        order = h.order.order_id
        h.run(h.network.orders("demo"))
        h.run(h.network.put_object("demo", order, "a", [Segment("", 1, b"x")], _new(b"x")))
        h.run(h.network.list_objects("demo", order))
        h.run(h.network.delete_object("demo", order, "a"))
        h.run(h.network.head_object("demo", order, "a"))  # an error answer
        self.assertEqual(len(seen), 6)  # the session's opening first
        # A chunked answer's length is unknown until its end.
        self.assertNotIn(UNKNOWN_LENGTH, [response.length for response in seen])


class _Recording(Resource):
    """Passes every request on to ``inner``, keeping the signing headers it came with."""

    isLeaf = True

    def __init__(self, inner: Any) -> None:
        super().__init__()
        self.inner = inner
        self.seen: list[tuple[str | None, str | None]] = []

    def object_handler(self, method: bytes, path: bytes) -> None:
        """No request is answered past :meth:`render`: each goes the usual way."""

    def render(self, request: Any) -> Any:
        self.seen.append(
            (request.getHeader(signing.SHA256_HEADER), request.getHeader(wire.OBJECT_HEADER))
        )
        return self.inner.render(request)


class SmallObjectTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = Harness(self.mktemp())
        site = self.h.agent._serverFactory
        self.recording = _Recording(site.resource)
        site.resource = self.recording

    def test_small_put_signed_over_its_digest(self) -> None:
        """An object held in memory goes in one request signed over its SHA-256: no trailer."""
        data = b"small object"
        order = self.h.order.order_id
        info = self.h.run(
            self.h.network.put_object(
                "demo", order, "s", [Segment("", len(data), data)], _new(data)
            )
        )
        digest, description = self.recording.seen[-1]
        self.assertEqual(digest, hashlib.sha256(data).hexdigest())
        self.assertEqual(json.loads(description or "")["size"], len(data))
        self.assertEqual((info.size, info.etag), (len(data), _new(data).etag))
        _, ranges = self.h.store.open_range("demo", order, "s")
        self.assertEqual(read_small(ranges), data)

    def test_small_get_read_whole(self) -> None:
        """A small object comes back already read: delivered at once, with no producer."""
        data = os.urandom(1000)
        order = self.h.order.order_id
        self.h.run(
            self.h.network.put_object(
                "demo", order, "s", [Segment("", len(data), data)], _new(data)
            )
        )
        info, body = self.h.run(self.h.network.get_object("demo", order, "s", 10, 19))
        consumer = StringTransport()
        delivered = body.deliver(consumer)
        self.assertEqual((info.size, consumer.value()), (1000, data[10:20]))
        self.assertIsNone(consumer.producer)
        self.assertIsNone(self.successResultOf(delivered))


class VersionTests(SynchronousTestCase):
    def test_other_version_refused_naming_both(self) -> None:
        """A request for another protocol version is refused with both versions named."""
        h = Harness(self.mktemp())
        for version in ("v0", "v7", "v9"):
            d = h.agent.request(
                b"GET", f"http://node.example/{version}/accounts/demo/orders".encode()
            )
            response = h.run(d)
            body = json.loads(h.run(content(response)))
            self.assertEqual((response.code, body["code"]), (400, "VersionMismatch"))
            self.assertIn(f"client speaks protocol {version}", body["message"])
            self.assertIn(f"this node speaks {wire.VERSION}", body["message"])


class QueryTests(SynchronousTestCase):
    @given(
        st.lists(
            st.sampled_from(["a", "path", "=", "&", "+", "%20", "%2F", "%", "%C3%A9", "%ff", ";"]),
            max_size=12,
        ).map("".join)
    )
    def test_read_as_parse_qsl(self, query: str) -> None:
        """The node reads a query as ``parse_qsl`` does (blank values kept, UTF-8 strict)."""
        request = DummyRequest([])
        request.uri = f"/x?{query}".encode("ascii")
        try:
            expected = dict(parse_qsl(query, keep_blank_values=True, errors="strict"))
        except UnicodeDecodeError:
            with self.assertRaises(wire.ProtocolError):
                node_query(request)
        else:
            self.assertEqual(node_query(request), expected)


class UnsignedTests(SynchronousTestCase):
    def test_refused_alike_on_both_paths(self) -> None:
        """An unsigned request is refused, dated, whether answered directly or through Klein.

        Object requests are answered by their handler straight from the node's site; the
        others go through twisted.web's resource lookup and Klein.
        """
        h = Harness(self.mktemp())
        order = h.order.order_id
        requests = [(b"GET", f"orders/{order}"), (b"GET", "orders")]
        requests += [(m, f"orders/{order}/object?path=a") for m in (b"GET", b"HEAD", b"DELETE")]
        for method, target in requests:
            url = f"http://node.example/{wire.VERSION}/accounts/demo/{target}"
            response = h.run(h.agent.request(method, url.encode()))
            self.assertEqual(response.code, 401, (method, target))
            self.assertTrue(response.headers.hasHeader(b"date"), (method, target))
            self.assertEqual(response.headers.getRawHeaders(wire.ERROR_HEADER), ["Unauthorized"])


class _Answers(Resource):
    """Answers each request with the next status; ``None`` never answers.

    Sessions are opened by the node (``inner``), and not counted.
    """

    isLeaf = True

    def __init__(self, statuses: list[int | None], inner: Any) -> None:
        super().__init__()
        self.statuses = statuses
        self.inner = inner
        self.requests = 0

    def object_handler(self, method: bytes, path: bytes) -> None:
        """No request is answered past :meth:`render`: each goes the usual way."""

    def render(self, request: Any) -> Any:
        if request.path.endswith(b"/sessions"):
            return self.inner.render(request)
        self.requests += 1
        status = self.statuses.pop(0) if self.statuses else 200
        if status is None:
            return NOT_DONE_YET
        request.setResponseCode(status)
        return b"[]" if status == 200 else b'{"code": "X", "message": "broken"}'


class FailureTests(SynchronousTestCase):
    def harness(self, statuses: list[int | None]) -> tuple[Harness, _Answers]:
        h = Harness(self.mktemp())
        site = h.agent._serverFactory
        answers = _Answers(statuses, site.resource)
        site.resource = answers
        return h, answers

    def test_idempotent_retried(self) -> None:
        """A listing of orders is retried after 503s and 500s, with backoff."""
        h, answers = self.harness([503, 500])
        self.assertEqual(h.run(h.network.orders("demo"), advance=1.0), [])
        self.assertEqual(answers.requests, 3)

    def test_retries_give_up(self) -> None:
        """After the last retry, the failure is NetworkUnavailable."""
        h, answers = self.harness([500, 500, 500, 500])
        h.run(h.network.orders("demo"), advance=1.0).trap(errors.NetworkUnavailable)
        self.assertEqual(answers.requests, 3)

    def test_put_not_retried(self) -> None:
        """A put answered with 503 is not repeated, and its segments are removed."""
        h, answers = self.harness([503])
        spool = self.mktemp()
        os.makedirs(spool)
        segment = _segment(spool, "body", b"data")
        d = h.network.put_object("demo", "O" * 40, "k", [segment], _new(b"data"))
        h.run(d, advance=1.0).trap(errors.NetworkUnavailable)
        self.assertEqual(answers.requests, 1)
        self.assertEqual(os.listdir(spool), [])

    def test_client_errors_not_retried(self) -> None:
        """A 4xx answer is not retried and is a NetworkError."""
        h, answers = self.harness([403])
        h.run(h.network.orders("demo"), advance=1.0).trap(errors.NetworkError)
        self.assertEqual(answers.requests, 1)

    def test_silent_node_times_out(self) -> None:
        """A node that never answers fails the request after the silence timeout."""
        h, _ = self.harness([None, None, None])
        result = h.run(h.network.orders("demo"), advance=10.0)
        result.trap(errors.NetworkUnavailable)


class ProducerTests(SynchronousTestCase):
    def test_pause_resume(self) -> None:
        """The upload producer writes nothing while paused, then every byte in order."""
        spool = self.mktemp()
        os.makedirs(spool)
        data = [os.urandom(600_000), os.urandom(10)]
        scheduled: list[Callable[[], None]] = []
        cooperator = task.Cooperator(scheduler=scheduled.append, started=True)
        producer = SegmentsProducer(
            [_segment(spool, "a", data[0]), _segment(spool, "b", data[1])], cooperator
        )
        self.assertEqual(producer.length, 600_010)
        consumer = StringTransport()
        done = producer.startProducing(consumer)
        scheduled.pop(0)()
        written = len(consumer.value())
        self.assertGreater(written, 0)
        producer.pauseProducing()
        while scheduled:
            scheduled.pop(0)()
        self.assertEqual(len(consumer.value()), written)
        producer.resumeProducing()
        while scheduled:
            scheduled.pop(0)()
        self.successResultOf(done)
        self.assertEqual(consumer.value(), b"".join(data))

    def test_public_keys_follow_the_file(self) -> None:
        """The node reads a replaced public key without a restart, within a second."""
        root = self.mktemp()
        os.makedirs(os.path.join(root, "keys"))
        clock = task.Clock()
        keys = PublicKeys(root, clock.seconds, recheck=1.0)
        self.assertIsNone(keys.get("demo"))
        first, second = signing.generate_key(), signing.generate_key()
        path = os.path.join(root, "keys", "demo.pub")
        with open(path, "wb") as f:
            f.write(signing.public_key_pem(first.public_key()))
        self.assertEqual(
            signing.public_key_pem(keys.get("demo")),  # type: ignore[arg-type]
            signing.public_key_pem(first.public_key()),
        )
        with open(path, "wb") as f:
            f.write(signing.public_key_pem(second.public_key()))
        os.utime(path, (1, 1))
        self.assertEqual(
            signing.public_key_pem(keys.get("demo")),  # type: ignore[arg-type]
            signing.public_key_pem(first.public_key()),
        )
        clock.advance(1.0)
        self.assertEqual(
            signing.public_key_pem(keys.get("demo")),  # type: ignore[arg-type]
            signing.public_key_pem(second.public_key()),
        )


class FakeTransport:
    """The transport of a response body: records pauses and stops."""

    def __init__(self) -> None:
        self.paused = False
        self.stopped = False

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        self.stopped = True


class FakeResponse:
    """An unbuffered response whose body the test feeds by hand."""

    def __init__(self, length: int) -> None:
        self.length = length
        self.transport = FakeTransport()
        self.protocol: Any = None

    def deliverBody(self, protocol: Any) -> None:
        self.protocol = protocol
        protocol.makeConnection(self.transport)


class ObjectBodyTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.response = FakeResponse(10)
        self.body = HTTPObjectBody(self.response, self.clock, 30.0)
        self.consumer = StringTransport()
        self.done = self.body.deliver(self.consumer)

    def test_complete(self) -> None:
        """The body's bytes reach the consumer; the end of the body fires the Deferred."""
        self.response.protocol.dataReceived(b"0123456789")
        self.response.protocol.connectionLost(Failure(ResponseDone()))
        self.successResultOf(self.done)
        self.assertEqual(self.consumer.value(), b"0123456789")
        self.assertIsNone(self.consumer.producer)

    def test_cut_mid_stream(self) -> None:
        """A body cut before its length fails with NetworkUnavailable."""
        self.response.protocol.dataReceived(b"01234")
        self.response.protocol.connectionLost(Failure(ResponseDone()))
        self.failureResultOf(self.done, errors.NetworkUnavailable)

    def test_backpressure(self) -> None:
        """Pausing the consumer pauses the connection; silence is not counted meanwhile."""
        self.consumer.producer.pauseProducing()
        self.assertTrue(self.response.transport.paused)
        self.clock.advance(60)
        self.assertNoResult(self.done)
        self.consumer.producer.resumeProducing()
        self.assertFalse(self.response.transport.paused)

    def test_silence_times_out(self) -> None:
        """A node that stops sending mid-body fails the transfer and drops the connection."""
        self.response.protocol.dataReceived(b"01")
        self.clock.advance(29)
        self.response.protocol.dataReceived(b"23")
        self.clock.advance(29)
        self.assertNoResult(self.done)
        self.clock.advance(2)
        self.failureResultOf(self.done, errors.NetworkUnavailable)
        self.assertTrue(self.response.transport.stopped)

    def test_cancel_stops(self) -> None:
        """Cancelling the delivery drops the connection and unregisters the producer."""
        self.done.cancel()
        self.failureResultOf(self.done, CancelledError)
        self.assertTrue(self.response.transport.stopped)
        self.assertIsNone(self.consumer.producer)


def held_node_request(
    case: SynchronousTestCase, path: bytes | None = None
) -> tuple[NodeRequest, list[Callable[[], None]], list[str]]:
    """A request to a node whose pool runs nothing until told to, for ``case``.

    ``path``: the request's target as its channel read it.  Returns the request, the pool's
    calls and what happened to the connection (pauses, resumes, the request handled).
    """
    h = Harness(case.mktemp())
    calls: list[Callable[[], None]] = []
    pool: Any = HeldPool(calls)
    node = Node(h.store, QueueReactor(calls), h.clock, pool)
    channel = DummyChannel()
    channel.site = NodeSite(node)
    if path is not None:
        channel._path = path
    events: list[str] = []
    channel.transport.pauseProducing = lambda: events.append("pause")
    channel.transport.resumeProducing = lambda: events.append("resume")
    request = NodeRequest(channel)
    request.requestHeaders.setRawHeaders(b"authorization", [signing.SCHEME.encode()])
    case.addCleanup(request.connectionLost, Failure(ConnectionDone()))
    case.patch(request, "process", lambda: events.append("process"))
    return request, calls, events


class NodeSpoolTests(SynchronousTestCase):
    def test_leftover_bodies_swept_at_start(self) -> None:
        """Bodies left in incoming/ by a crash are removed when the node starts; fresh ones stay."""
        h = Harness(self.mktemp())
        incoming = os.path.join(h.store.root, "incoming")
        old, fresh = os.path.join(incoming, "body-old"), os.path.join(incoming, "body-fresh")
        for path in (old, fresh):
            with open(path, "wb") as f:
                f.write(b"x")
        os.utime(old, (1, 1))
        NodeSite(h.node)
        self.assertEqual([n for _, _, names in os.walk(incoming) for n in names], ["body-fresh"])

    def test_unsigned_body_not_spooled(self) -> None:
        """A large unsigned upload is refused without writing its body to a file."""
        h = Harness(self.mktemp())
        spooled: list[object] = []
        self.patch(tempfile, "mkstemp", lambda *a, **kw: spooled.append(a))
        orders = f"http://node.example:9100/{wire.VERSION}/accounts/demo/orders"
        target = f"{orders}/{h.order.order_id}/object?path=k"
        size = MEMORY_BODY + 1
        body = SegmentsProducer([Segment("", size, b"x" * size)], h.cooperator)
        response = h.run(HTTPClient(h.agent).put(target, data=body))
        self.assertEqual((response.code, spooled), (401, []))

    def test_large_reads_end_with_the_request(self) -> None:
        """A large body is read in large pieces; the connection reads small ones after it."""
        h = Harness(self.mktemp())
        channel = DummyChannel()
        channel.site = NodeSite(h.node)
        request = NodeRequest(channel)
        request.requestHeaders.setRawHeaders(b"authorization", [signing.SCHEME.encode()])
        request.gotLength(MEMORY_BODY + 1)
        self.assertEqual(channel.transport.bufferSize, READ_SIZE)
        request.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(channel.transport.bufferSize, DEFAULT_READ)
        self.assertEqual(request.spool_paths and os.path.exists(request.spool_paths[0]), False)

    def held_request(self) -> tuple[NodeRequest, list[Callable[[], None]], list[str]]:
        """A spooling request of a node whose pool runs nothing until told to."""
        return held_node_request(self)

    def test_body_hashed_in_a_pool_thread(self) -> None:
        """A spooled body is hashed by the pool; the request is handled once all of it is."""
        request, calls, events = self.held_request()
        data = os.urandom(3 * 1024 * 1024)
        request.gotLength(len(data))
        for start in range(0, len(data), READ_SIZE):
            request.handleContentChunk(data[start : start + READ_SIZE])
        request.requestReceived(b"PUT", f"/{wire.VERSION}/x".encode(), b"HTTP/1.1")
        self.assertEqual(events, [])
        while calls:
            calls.pop(0)()
        self.assertEqual(events, ["process"])
        self.assertEqual(request.body_sha256(), hashlib.sha256(data).hexdigest())

    def test_hashing_behind_pauses_the_connection(self) -> None:
        """The connection stops reading while too much waits to be hashed, and reads again."""
        request, calls, events = self.held_request()
        data = os.urandom(HASH_HIGH_WATER + 2 * READ_SIZE)
        request.gotLength(len(data))
        for start in range(0, len(data), READ_SIZE):
            request.handleContentChunk(data[start : start + READ_SIZE])
        self.assertEqual(events, ["pause"])
        while calls:
            calls.pop(0)()
        self.assertEqual(events, ["pause", "resume"])
        request.requestReceived(b"PUT", f"/{wire.VERSION}/x".encode(), b"HTTP/1.1")
        self.assertEqual(events, ["pause", "resume", "process"])
        self.assertEqual(request.body_sha256(), hashlib.sha256(data).hexdigest())

    def test_lost_connection_handles_nothing(self) -> None:
        """A connection lost while its body is being hashed is not handled."""
        request, calls, events = self.held_request()
        data = os.urandom(2 * READ_SIZE)
        request.gotLength(len(data))
        request.handleContentChunk(data)
        request.requestReceived(b"PUT", f"/{wire.VERSION}/x".encode(), b"HTTP/1.1")
        request.connectionLost(Failure(ConnectionDone()))
        while calls:
            calls.pop(0)()
        self.assertEqual(events, [])
        self.assertEqual([p for p in request.spool_paths if os.path.exists(p)], [])


class HeldPool:
    """A thread pool whose calls wait in a list until the test runs them."""

    def __init__(self, calls: list[Callable[[], None]]) -> None:
        self.calls = calls

    def callInThread(self, f: Callable[..., Any], *a: Any, **kw: Any) -> None:
        self.calls.append(lambda: f(*a, **kw))

    def callInThreadWithCallback(
        self, on_result: Callable[[bool, Any], None], f: Callable[..., Any], *a: Any, **kw: Any
    ) -> None:
        self.calls.append(lambda: SyncPool().callInThreadWithCallback(on_result, f, *a, **kw))


class WireTests(SynchronousTestCase):
    @given(st.lists(st.integers(min_value=0, max_value=5 * 2**30), max_size=200))
    def test_part_sizes_round_trip(self, sizes: list[int]) -> None:
        """Part sizes survive their header encoding, whatever they are."""
        self.assertEqual(wire.parse_part_sizes(wire.format_part_sizes(sizes)) or [], sizes)

    def test_part_sizes_compact(self) -> None:
        """10000 equal parts and a last one fit in a short header."""
        value = wire.format_part_sizes([5 * 2**20] * 9999 + [17])
        self.assertEqual(value, "5242880*9999,17")

    def test_part_sizes_bounded(self) -> None:
        """More than 10000 parts, or a malformed value, are refused."""
        for value in ("1*10001", "1,x", "-1", "1*", "*2"):
            self.assertRaises(wire.ProtocolError, wire.parse_part_sizes, value)
