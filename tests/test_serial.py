"""Tests of calls run one after the other in a pool thread, handed over in batches."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from lambgw.network.serial import GROUP_SIZE, SerialCalls


class ManualPool:
    """A pool whose work the test runs when it wants."""

    def __init__(self) -> None:
        self.started: list[Callable[[], None]] = []

    def callInThread(self, f: Callable[[], None]) -> None:
        self.started.append(f)


class QueueReactor:
    """Keeps ``callFromThread`` calls, and calls for the turn's end, for the test to run."""

    def __init__(self) -> None:
        self.calls: list[Callable[[], None]] = []

    def callFromThread(self, f: Callable[..., Any], *args: Any) -> None:
        self.calls.append(lambda: f(*args))

    def callLater(self, delay: float, f: Callable[..., Any], *args: Any) -> None:
        assert delay == 0, "only the end of the turn is kept"
        self.calls.append(lambda: f(*args))


def end_turn(reactor: QueueReactor, pool: ManualPool) -> None:
    """Run what the reactor was handed, then what that handed the pool, then again."""
    for calls in (reactor.calls, pool.started, reactor.calls):
        pending, calls[:] = list(calls), []
        for call in pending:
            call()


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
        # The results ready before the reactor took any go back in one wake-up, in order.
        self.assertEqual(len(self.reactor.calls), 1)
        fired: list[int] = []
        for d in results:
            d.addCallback(fired.append)
        self.reactor.calls.pop()()
        self.assertEqual(fired, [0, 10, 20])

    def test_a_result_after_the_reactor_took_the_others_wakes_it(self) -> None:
        """Once the reactor has taken the waiting results, the next result wakes it again."""
        first = self.serial.call(lambda: "first")

        def second_call() -> str:
            self.reactor.calls.pop()()  # the reactor takes the first result meanwhile
            return "second"

        second = self.serial.call(second_call)
        self.start()
        self.pool.started[0]()
        self.assertEqual(self.successResultOf(first), "first")
        self.assertNoResult(second)
        self.assertEqual(len(self.reactor.calls), 1)
        self.reactor.calls.pop()()
        self.assertEqual(self.successResultOf(second), "second")

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


class GroupedCallsTests(SynchronousTestCase):
    """Grouped calls run together inside one group context; results after it ends."""

    def setUp(self) -> None:
        self.pool = ManualPool()
        self.reactor = QueueReactor()
        self.log: list[str] = []
        self.fail_end = False
        self.done: list[Deferred[Any]] = []
        self.serial = SerialCalls(self.reactor, self.pool, self.group)  # type: ignore[arg-type]

    @contextmanager
    def group(self) -> Iterator[None]:
        """Record where each group begins and ends, and what the reactor could fire by then."""
        self.log.append("begin")
        yield
        calls, self.reactor.calls = self.reactor.calls, []
        for call in calls:
            call()
        self.log.append(f"end, {sum(d.called for d in self.done)} fired")
        if self.fail_end:
            raise OSError("the commit failed")

    def run_all(self) -> None:
        """Start the pool thread, run it, and hand every result back."""
        calls, self.reactor.calls = self.reactor.calls, []
        for call in calls:
            call()
        self.pool.started.pop()()
        calls, self.reactor.calls = self.reactor.calls, []
        for call in calls:
            call()

    def test_neighbours_share_a_group_and_wait_for_its_end(self) -> None:
        """Consecutive grouped calls run in one group; a plain call between splits them."""
        done = self.done
        done += [self.serial.call_grouped(lambda n=n: self.log.append(f"g{n}") or n) for n in "ab"]
        done.append(self.serial.call(lambda: self.log.append("plain") or "plain"))
        done.append(self.serial.call_grouped(lambda: self.log.append("gc") or "c"))
        self.run_all()
        self.assertEqual(
            self.log,
            ["begin", "ga", "gb", "end, 0 fired", "plain", "begin", "gc", "end, 3 fired"],
        )
        self.assertEqual([self.successResultOf(d) for d in done], ["a", "b", "plain", "c"])

    def test_a_failed_call_fails_alone(self) -> None:
        """A grouped call that raises fails its own Deferred; the group's others succeed."""
        failing = self.serial.call_grouped(lambda: 1 // 0)
        fine = self.serial.call_grouped(lambda: "ok")
        self.run_all()
        self.failureResultOf(failing, ZeroDivisionError)
        self.assertEqual(self.successResultOf(fine), "ok")

    def test_a_failed_end_fails_every_call(self) -> None:
        """If ending the group raises, no call of it succeeds; failed ones keep their own."""
        self.fail_end = True
        failing = self.serial.call_grouped(lambda: 1 // 0)
        fine = self.serial.call_grouped(lambda: "ok")
        self.run_all()
        self.failureResultOf(failing, ZeroDivisionError)
        self.failureResultOf(fine, OSError)

    def test_groups_are_bounded(self) -> None:
        """At most GROUP_SIZE calls share a group."""
        for _ in range(GROUP_SIZE + 1):
            self.serial.call_grouped(lambda: None)
        self.run_all()
        self.assertEqual(self.log.count("begin"), 2)

    def test_without_a_group_calls_run_alone(self) -> None:
        """With no group context, grouped calls run and answer one by one."""
        serial = SerialCalls(self.reactor, self.pool)  # type: ignore[arg-type]
        done = [serial.call_grouped(lambda: "x"), serial.call_grouped(lambda: "y")]
        self.run_all()
        self.assertEqual(self.log, [])
        self.assertEqual([self.successResultOf(d) for d in done], ["x", "y"])
