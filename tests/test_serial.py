"""Tests of calls run one after the other in a pool thread, handed over in batches."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from lambgw.network.serial import SerialCalls


class ManualPool:
    """A pool whose work the test runs when it wants."""

    def __init__(self) -> None:
        self.started: list[Callable[[], None]] = []

    def callInThread(self, f: Callable[[], None]) -> None:
        self.started.append(f)


class QueueReactor:
    """Keeps ``callFromThread`` calls for the test to run."""

    def __init__(self) -> None:
        self.calls: list[Callable[[], None]] = []

    def callFromThread(self, f: Callable[..., Any], *args: Any) -> None:
        self.calls.append(lambda: f(*args))


class SerialCallsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.pool = ManualPool()
        self.reactor = QueueReactor()
        self.serial = SerialCalls(self.reactor, self.pool)  # type: ignore[arg-type]

    def start(self) -> None:
        """End the reactor's turn: run the calls it queued (the pool threads' starts)."""
        calls, self.reactor.calls = self.reactor.calls, []
        for call in calls:
            call()

    def test_one_thread_for_a_batch(self) -> None:
        """Calls queued in one reactor turn start one pool thread, which runs them in order."""
        ran: list[int] = []
        results = [self.serial.call(lambda n=n: ran.append(n) or n * 10) for n in range(3)]
        self.assertEqual((len(self.pool.started), ran), (0, []))
        self.start()
        self.assertEqual((len(self.pool.started), ran), (1, []))
        self.pool.started[0]()
        self.assertEqual(ran, [0, 1, 2])
        self.assertEqual(len(self.reactor.calls), 3)  # one hand-back per result, in order
        fired: list[int] = []
        for d in results:
            d.addCallback(fired.append)
        self.reactor.calls[0]()
        self.assertEqual(fired, [0])
        for call in self.reactor.calls[1:]:
            call()
        self.assertEqual(fired, [0, 10, 20])

    def test_failure_fires_its_own_deferred(self) -> None:
        """A call that raises fails its own Deferred; the next call still runs."""
        failing = self.serial.call(lambda: 1 // 0)
        fine = self.serial.call(lambda: "ok")
        self.start()
        self.pool.started[0]()
        for call in self.reactor.calls:
            call()
        self.failureResultOf(failing, ZeroDivisionError)
        self.assertEqual(self.successResultOf(fine), "ok")

    def test_new_thread_after_the_queue_ran_dry(self) -> None:
        """Once the worker found the queue empty, the next call starts a thread again."""
        self.serial.call(lambda: None)
        self.start()
        self.pool.started[0]()
        self.serial.call(lambda: None)
        self.start()
        self.assertEqual(len(self.pool.started), 2)
