"""Tests for the embedded network through its asynchronous interface, with a real pool."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Generator
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred, inlineCallbacks
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.internet.task import deferLater
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from lambgw.network import index as index_module
from lambgw.network.embedded import EmbeddedNetwork
from lambgw.network.errors import NoSuchPath, PreconditionFailed, QuotaExceeded
from lambgw.network.files import SMALL_READ, BytesBody, FileRangeBody
from lambgw.network.interface import INetwork, NewObject, Segment
from lambgw.network.store import Store
from tests.test_quick import open_store
from tests.test_serial import ManualPool, QueueReactor, end_turn


@implementer(IConsumer)
class Consumer:
    """Collects writes; pauses its producer after each write when ``pausing``."""

    def __init__(self, pausing: bool = False) -> None:
        self.pausing = pausing
        self.chunks: list[bytes] = []
        self.producer: IPushProducer | None = None
        self.registered = 0

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        assert streaming
        self.producer = producer
        self.registered += 1

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        self.chunks.append(data)
        if self.pausing and self.producer is not None:
            self.producer.pauseProducing()


def sleep(seconds: float) -> Deferred[None]:
    """Let the reactor and the pool run for ``seconds``."""
    return deferLater(reactor, seconds, lambda: None)


@inlineCallbacks
def until(condition: Callable[[], bool], seconds: float = 10.0) -> Generator[Any, Any, bool]:
    """Let the reactor and the pool run until ``condition`` holds (for at most ``seconds``)."""
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        yield sleep(0.005)
    return condition()


class EmbeddedTests(TestCase):
    def setUp(self) -> None:
        base = self.mktemp()
        os.makedirs(base)
        self.spool = base
        self.pool = ThreadPool(1, 4)
        self.pool.start()
        self.addCleanup(self.pool.stop)
        self.network = EmbeddedNetwork.from_directory(os.path.join(base, "net"), reactor, self.pool)
        self.addCleanup(self.network.store.close)
        self.order_id = self.network.store.ensure_account("demo", 10_000, 30)[0].order_id
        self.data = os.urandom(5000)

    def segment(self, name: str, data: bytes) -> Segment:
        """Spool ``data`` into a file."""
        path = os.path.join(self.spool, name)
        with open(path, "wb") as f:
            f.write(data)
        return Segment(path, len(data))

    def put(self, path: str) -> Deferred[object]:
        """Store ``self.data`` in two segments at ``path``."""
        segments = [self.segment("p1", self.data[:1234]), self.segment("p2", self.data[1234:])]
        return self.network.put_object(
            "demo", self.order_id, path, segments, NewObject(len(self.data), "e")
        )

    def test_provides_interface(self) -> None:
        """The embedded network provides INetwork."""
        self.assertTrue(verifyObject(INetwork, self.network))

    @inlineCallbacks
    def test_round_trip(self) -> Generator[Any, Any, None]:
        """Put, head, list, get and delete work through Deferreds."""
        yield self.put("dir/a")
        info = yield self.network.head_object("demo", self.order_id, "dir/a")
        self.assertEqual(info.size, 5000)
        page = yield self.network.list_objects("demo", self.order_id, "", "/")
        self.assertEqual(list(page.common_prefixes), ["dir/"])
        info, body = yield self.network.get_object("demo", self.order_id, "dir/a", 1000, 2999)
        consumer = Consumer()
        yield body.deliver(consumer)
        self.assertEqual(b"".join(consumer.chunks), self.data[1000:3000])
        self.assertIsNone(consumer.producer)
        deleted = yield self.network.delete_object("demo", self.order_id, "dir/a")
        self.assertTrue(deleted)
        order = yield self.network.order("demo", self.order_id)
        self.assertEqual(order.used, 0)

    @inlineCallbacks
    def test_small_body_read_with_lookup(self) -> Generator[Any, Any, None]:
        """A small range across segments comes back read, its files already closed."""
        yield self.put("small")
        _, body = yield self.network.get_object("demo", self.order_id, "small", 1000, 2999)
        self.assertIsInstance(body, BytesBody)
        consumer = Consumer()
        yield body.deliver(consumer)
        self.assertEqual(b"".join(consumer.chunks), self.data[1000:3000])

    @inlineCallbacks
    def test_large_body_streams(self) -> Generator[Any, Any, None]:
        """A body larger than SMALL_READ is streamed by a producer, not read at once."""
        self.network.store.buy_order("demo", 10 * SMALL_READ, 30)
        orders = yield self.network.orders("demo")
        data = os.urandom(SMALL_READ + 1)
        segment = self.segment("large", data)
        yield self.network.put_object(
            "demo", orders[-1].order_id, "large", [segment], NewObject(len(data), "e")
        )
        _, body = yield self.network.get_object("demo", orders[-1].order_id, "large")
        self.assertIsInstance(body, FileRangeBody)
        consumer = Consumer()
        yield body.deliver(consumer)
        self.assertEqual(b"".join(consumer.chunks), data)
        self.assertEqual(consumer.registered, 1)

    @inlineCallbacks
    def test_failures_propagate(self) -> Generator[Any, Any, None]:
        """Store errors arrive as failed Deferreds."""
        with self.assertRaises(NoSuchPath):
            yield self.network.get_object("demo", self.order_id, "missing")
        segment = self.segment("big", b"x" * 10_001)
        with self.assertRaises(QuotaExceeded):
            yield self.network.put_object(
                "demo", self.order_id, "big", [segment], NewObject(10_001, "e")
            )

    @inlineCallbacks
    def test_copy(self) -> Generator[Any, Any, None]:
        """A copy streams the same bytes."""
        yield self.put("a")
        yield self.network.copy_object("demo", self.order_id, "a", self.order_id, "b")
        _, body = yield self.network.get_object("demo", self.order_id, "b")
        consumer = Consumer()
        yield body.deliver(consumer)
        self.assertEqual(b"".join(consumer.chunks), self.data)

    @inlineCallbacks
    def test_pause_is_honoured(self) -> Generator[Any, Any, None]:
        """A paused producer writes nothing until resumed, and all bytes arrive in order."""
        yield self.put("a")
        _, ranges = self.network.store.open_range("demo", self.order_id, "a")
        body = FileRangeBody(ranges, reactor, self.pool, chunk_size=1000)
        consumer = Consumer(pausing=True)
        done = body.deliver(consumer)
        for expected in range(1, 6):
            self.assertTrue((yield until(lambda n=expected: len(consumer.chunks) >= n)))
            yield sleep(0.02)  # a paused producer writes no more meanwhile
            self.assertEqual(len(consumer.chunks), expected)
            self.assertFalse(done.called)
            assert consumer.producer is not None
            consumer.producer.resumeProducing()
        yield done
        self.assertEqual([len(c) for c in consumer.chunks], [1000, 234, 1000, 1000, 1000, 766])
        self.assertEqual(b"".join(consumer.chunks), self.data)
        self.assertIsNone(consumer.producer)

    @inlineCallbacks
    def test_cancel(self) -> Generator[Any, Any, None]:
        """Cancelling a delivery stops it, unregisters and closes the files."""
        yield self.put("a")
        _, ranges = self.network.store.open_range("demo", self.order_id, "a")
        body = FileRangeBody(ranges, reactor, self.pool, chunk_size=1000)
        consumer = Consumer(pausing=True)
        done = body.deliver(consumer)
        self.assertTrue((yield until(lambda: len(consumer.chunks) == 1)))
        done.cancel()
        with self.assertRaises(CancelledError):
            yield done
        self.assertIsNone(consumer.producer)
        self.assertTrue((yield until(lambda: all(r.file.closed for r in ranges))))
        self.assertEqual(len(consumer.chunks), 1)
        self.assertTrue(all(r.file.closed for r in ranges))

    @inlineCallbacks
    def test_stop_twice(self) -> Generator[Any, Any, None]:
        """A consumer that stops the producer fails the delivery; a second stop is harmless."""
        yield self.put("a")
        _, ranges = self.network.store.open_range("demo", self.order_id, "a")
        body = FileRangeBody(ranges, reactor, self.pool, chunk_size=1000)
        consumer = Consumer(pausing=True)
        done = body.deliver(consumer)
        body.stopProducing()
        body.stopProducing()
        with self.assertRaises(ConnectionLost):
            yield done
        self.assertTrue((yield until(lambda: all(r.file.closed for r in ranges))))
        self.assertEqual(consumer.chunks, [])
        self.assertTrue(all(r.file.closed for r in ranges))

    @inlineCallbacks
    def test_close_undelivered(self) -> Generator[Any, Any, None]:
        """Closing a body that was never delivered closes its files."""
        yield self.put("a")
        _, ranges = self.network.store.open_range("demo", self.order_id, "a")
        body = FileRangeBody(ranges, reactor, self.pool)
        body.close()
        self.assertTrue(all(r.file.closed for r in ranges))
        self.assertRaises(RuntimeError, body.deliver, Consumer())


def stopped_clock() -> float:
    """A clock that does not move: no call tried on the reactor counts as slow."""
    return 0.0


class ReadLaneTests(SynchronousTestCase):
    """Lookups for GET and HEAD: on the reactor while quick, else in a lane of their own."""

    def setUp(self) -> None:
        base = self.mktemp()
        os.makedirs(base)
        self.store = Store(base, durable=False)
        self.addCleanup(self.store.close)
        self.order_id = self.store.ensure_account("demo", 1 << 20, 30)[0].order_id
        self.pool = ManualPool()
        self.reactor = QueueReactor()
        network = EmbeddedNetwork(
            self.store,
            self.reactor,  # type: ignore[arg-type]
            self.pool,  # type: ignore[arg-type]
            quick_clock=stopped_clock,
        )
        self.network = network

    def run_reactor_calls(self) -> None:
        """Run what was handed to the reactor."""
        calls, self.reactor.calls = self.reactor.calls, []
        for call in calls:
            call()

    def waiting_write(self) -> None:
        """Queue a write of an object too large for the index: it waits in its lane."""
        size = 100 * 1024
        self.network.put_object(
            "demo", self.order_id, "w", [Segment("", size, bytes(size))], NewObject(size, "e")
        )

    def test_held_reads_answered_at_once(self) -> None:
        """Objects the index holds are read on the reactor, also while a write waits."""
        self.store.put("demo", self.order_id, "k", [Segment("", 1, b"x")], NewObject(1, "e"))
        self.waiting_write()
        heads = [self.network.head_object("demo", self.order_id, "k") for _ in range(3)]
        got = self.network.get_object("demo", self.order_id, "k", 0, 0)
        self.assertEqual([self.successResultOf(d).size for d in heads], [1, 1, 1])
        info, body = self.successResultOf(got)
        self.assertEqual(info.etag, "e")
        consumer = Consumer()
        self.successResultOf(body.deliver(consumer))  # type: ignore[arg-type]
        self.assertEqual(consumer.chunks, [b"x"])
        self.failureResultOf(self.network.head_object("demo", self.order_id, "w"), NoSuchPath)
        self.run_reactor_calls()  # the end of the reactor's turn starts the write's lane
        self.assertEqual(len(self.pool.started), 1)

    def test_reads_of_files_batched_beside_writes(self) -> None:
        """Reads of objects in files, queued behind a waiting write, go over in one batch."""
        size = 100 * 1024
        data = os.urandom(size)
        self.store.put("demo", self.order_id, "k", [Segment("", size, data)], NewObject(size, "e"))
        self.waiting_write()
        gets = [self.network.get_object("demo", self.order_id, "k", 1, 10) for _ in range(3)]
        self.assertEqual(self.pool.started, [])
        self.run_reactor_calls()  # the end of the reactor's turn starts the lanes
        self.assertEqual(len(self.pool.started), 2)
        self.pool.started[1]()  # the reads' lane only; the write still waits
        self.run_reactor_calls()
        for got in gets:
            info, body = self.successResultOf(got)
            self.assertEqual(info.size, size)
            consumer = Consumer()
            self.successResultOf(body.deliver(consumer))  # type: ignore[arg-type]
            self.assertEqual(b"".join(consumer.chunks), data[1:11])
        stored = [info.path for info in self.store.list("demo", self.order_id).objects]
        self.assertEqual(stored, ["k"])


class QuickWriteTests(SynchronousTestCase):
    """Small objects are stored on the reactor while no writer waits, else in their lane."""

    def setUp(self) -> None:
        self.base, self.store, self.order_id = open_store(self, 1 << 20)
        self.pool = ManualPool()
        self.reactor = QueueReactor()
        self.network = EmbeddedNetwork(
            self.store,
            self.reactor,  # type: ignore[arg-type]
            self.pool,  # type: ignore[arg-type]
            quick_clock=stopped_clock,
        )

    def put(self, path: str, data: bytes) -> Deferred[Any]:
        return self.network.put_object(
            "demo", self.order_id, path, [Segment("", len(data), data)], NewObject(len(data), "e")
        )

    def end_turn(self) -> None:
        """Run what the reactor was handed, then what that handed the pool, then again."""
        end_turn(self.reactor, self.pool)

    def run_turn_end(self) -> None:
        """Run what the reactor was handed for the end of its turn, and no more."""
        pending, self.reactor.calls = self.reactor.calls, []
        for call in pending:
            call()

    def test_stored_at_the_end_of_the_turn(self) -> None:
        """No writer waits: the put commits on the reactor at the turn's end; no thread runs."""
        put = self.put("k", b"abc")
        self.assertNoResult(put)
        self.assertRaises(NoSuchPath, self.store.head, "demo", self.order_id, "k")
        self.run_turn_end()
        self.assertEqual(self.successResultOf(put).size, 3)
        self.assertEqual(self.store.head("demo", self.order_id, "k").size, 3)
        self.assertEqual((self.pool.started, self.reactor.calls), ([], []))

    def test_puts_of_a_turn_committed_together(self) -> None:
        """The puts of one turn are one transaction, on the reactor; a refused one alone fails."""
        transactions: list[int] = []
        group_now = self.store.index.group_now
        self.patch(self.store.index, "group_now", lambda: transactions.append(1) or group_now())
        puts = [self.put(f"k{n}", b"abc") for n in range(3)]
        again = [Segment("", 2, b"ab")]
        puts.append(
            self.network.put_object(
                "demo", self.order_id, "k1", again, NewObject(2, "e"), if_none_match=True
            )
        )
        self.run_turn_end()
        self.assertEqual([self.successResultOf(put).size for put in puts[:3]], [3, 3, 3])
        self.failureResultOf(puts[3], PreconditionFailed)
        self.assertEqual((transactions, self.pool.started), ([1], []))
        self.assertEqual(self.store.order("demo", self.order_id).used, 9)

    def test_waits_in_the_lane_behind_another_writer(self) -> None:
        """Another process writing: the put goes to the writes' lane, grouped, and is stored."""
        other = Store(self.base, durable=False)
        self.addCleanup(other.close)
        with other.index.write():
            puts = [self.put(f"k{n}", b"abc") for n in range(3)]
        for put in puts:
            self.assertNoResult(put)
        self.end_turn()
        self.assertEqual([self.successResultOf(put).size for put in puts], [3, 3, 3])
        self.assertEqual(self.store.order("demo", self.order_id).used, 9)

    def test_checkpoints_run_in_the_lane(self) -> None:
        """Every so many quick puts, a checkpoint of the index is queued in the writes' lane."""
        self.patch(index_module, "CHECKPOINT_EVERY", 2)
        done = self.put("a", b"1")
        self.end_turn()
        self.successResultOf(done)
        self.assertEqual(self.pool.started, [])
        checkpoints: list[tuple[int, int]] = []
        checkpoint = self.store.index.checkpoint
        self.patch(self.store.index, "checkpoint", lambda: checkpoints.append(checkpoint()))
        done = self.put("b", b"2")
        self.run_turn_end()
        self.successResultOf(done)
        self.assertEqual(checkpoints, [])
        self.end_turn()
        self.assertEqual(len(checkpoints), 1)
        log_frames, copied = checkpoints[0]
        self.assertEqual(log_frames, copied)
