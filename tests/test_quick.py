"""Tests of point reads run on the reactor thread while they stay quick."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from twisted.logger import LogEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from lambgw.network.errors import NoSuchOrder, NoSuchPath, PreconditionFailed, QuotaExceeded
from lambgw.network.index import INDEX_FILE
from lambgw.network.interface import NewObject, Segment
from lambgw.network.objectfiles import INLINE_MARK
from lambgw.network.quick import QuickCalls, TurnWrites, WouldWait
from lambgw.network.serial import SerialCalls
from lambgw.network.store import Store
from tests.test_serial import ManualPool, QueueReactor, end_turn

#: Clock steps and read times in exact binary fractions, so that sums compare equal.
STEP = 2.0**-3
#: A read over the 2 ms budget ...
SLOW = 2.0**-8
#: ... and one well under it.
FAST = 2.0**-14


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class QuickCallsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.pool = ManualPool()
        self.reactor = QueueReactor()
        self.clock = Clock()
        lane = SerialCalls(self.reactor, self.pool)  # type: ignore[arg-type]
        self.quick = QuickCalls(lane.call, budget=0.002, pause=1.0, longest=4.0, clock=self.clock)
        self.warnings: list[LogEvent] = []
        observer: Callable[[LogEvent], None] = self.warnings.append
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        self.slow_calls: list[tuple[Any, ...]] = []

    def slow(self, *args: Any) -> str:
        """The pool's form of the read."""
        self.slow_calls.append(args)
        return "pooled"

    def quick_taking(self, seconds: float) -> Callable[..., str]:
        """A quick form of the read that takes ``seconds`` of the clock."""

        def read(*args: Any) -> str:
            self.clock.now += seconds
            return "quick"

        return read

    def run_lane(self) -> None:
        """End the reactor's turn, run the lane's thread and hand its results back."""
        end_turn(self.reactor, self.pool)

    def read(self, seconds: float = FAST) -> str:
        """One read whose quick form takes ``seconds``; what it answered."""
        answer = self.quick.call(self.quick_taking(seconds), self.slow, "k")
        self.run_lane()
        result: str = self.successResultOf(answer)
        return result

    def test_quick_read_answers_at_once(self) -> None:
        """A quick read fires before the call returns and hands nothing to the pool."""
        answer = self.quick.call(self.quick_taking(FAST), self.slow, "k")
        self.assertEqual(self.successResultOf(answer), "quick")
        self.assertEqual((self.reactor.calls, self.pool.started), ([], []))

    def test_would_wait_goes_to_the_lane(self) -> None:
        """A quick form that would wait is replaced by the slow one, in the pool."""

        def waits(*args: Any) -> str:
            raise WouldWait("locked")

        answer = self.quick.call(waits, self.slow, "k", 1)
        self.assertNoResult(answer)
        self.run_lane()
        self.assertEqual(self.successResultOf(answer), "pooled")
        self.assertEqual(self.slow_calls, [("k", 1)])

    def test_errors_are_the_answer(self) -> None:
        """Anything else the quick form raises is the read's failure; the pool is not tried."""

        def missing(*args: Any) -> str:
            raise NoSuchPath("no object at k")

        self.failureResultOf(self.quick.call(missing, self.slow, "k"), NoSuchPath)
        self.assertEqual((self.slow_calls, self.pool.started, self.reactor.calls), ([], [], []))

    def pooled_for(self, next_try: float) -> float:
        """Seconds reads keep going to the pool; the first quick try takes ``next_try``."""
        start = self.clock.now
        while self.read(next_try) == "pooled":
            self.clock.now += STEP
        return self.clock.now - start - next_try

    def test_slow_read_sends_the_next_to_the_pool(self) -> None:
        """After a read over budget, reads go to the pool for the pause, then are tried again."""
        self.assertEqual(self.read(SLOW), "quick")  # done, but over budget
        self.assertEqual(self.pooled_for(FAST), 1.0)
        self.assertEqual(len(self.slow_calls), 1.0 / STEP)
        self.assertEqual(self.warnings, [])  # one slow read says nothing

    def test_default_first_pause_is_short(self) -> None:
        """By default one slow call sends the calls of the next 50 ms to the pool, no more.

        A call is slow when the scheduler takes the core from it: that must not send a
        second of calls to the pool.  A store slow at every try still gets the longest pause.
        """
        lane = SerialCalls(self.reactor, self.pool)  # type: ignore[arg-type]
        self.quick = QuickCalls(lane.call, clock=self.clock)
        self.assertEqual(self.read(SLOW), "quick")
        self.clock.now += 0.04
        self.assertEqual(self.read(), "pooled")
        self.clock.now += 0.02
        self.assertEqual(self.read(), "quick")
        self.read(SLOW)
        pauses = []
        while not self.warnings:
            start = self.clock.now
            while self.read(SLOW) == "pooled":
                self.clock.now += 2.0**-5
            pauses.append(self.clock.now - start - SLOW)
        self.assertEqual(len(pauses), 11)
        # 0.05, 0.1, ... 51.2 s (each measured to the clock step): about 100 s in all.
        self.assertLess(abs(sum(pauses) - 0.05 * (2**11 - 1)), 2.0**-5 * 11)

    def test_pause_doubles_while_slow_and_resets_when_quick(self) -> None:
        """Each slow try doubles the pause, up to the longest; a quick read resets it."""
        self.read(SLOW)
        self.assertEqual([self.pooled_for(SLOW) for _ in range(4)], [1.0, 2.0, 4.0, 4.0])
        self.assertEqual(self.pooled_for(FAST), 4.0)
        self.read(SLOW)
        self.assertEqual(self.pooled_for(FAST), 1.0)

    def test_staying_slow_is_logged_once(self) -> None:
        """Reaching the longest pause is one warning, until a read is quick again."""
        self.read(SLOW)
        self.pooled_for(SLOW)  # pause 1 s, then slow again: 2 s
        self.assertEqual(self.warnings, [])
        self.pooled_for(SLOW)  # 4 s: the longest
        self.assertEqual(len(self.warnings), 1)
        event = self.warnings[0]
        self.assertIn("took 3.9 ms", event["log_format"].format(**event))
        self.pooled_for(SLOW)
        self.pooled_for(SLOW)
        self.assertEqual(len(self.warnings), 1)
        self.pooled_for(FAST)  # quick again
        for _ in range(3):
            self.pooled_for(SLOW)
        self.assertEqual(len(self.warnings), 2)


def open_store(case: SynchronousTestCase, capacity: int) -> tuple[str, Store, str]:
    """A new store of the test, with account ``demo`` and one order of ``capacity`` bytes.

    Its directory, the store, and the order's id.
    """
    base = case.mktemp()
    os.makedirs(base)
    store = Store(base, durable=False)
    case.addCleanup(store.close)
    return base, store, store.ensure_account("demo", capacity, 30)[0].order_id


class StoreQuickReadTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.base, self.store, self.order_id = open_store(self, 1 << 22)

    def put(self, path: str, data: bytes) -> None:
        self.store.put(
            "demo", self.order_id, path, [Segment("", len(data), data)], NewObject(len(data), "e")
        )

    def test_held_object_read_whole_and_in_ranges(self) -> None:
        """Bytes the index holds are read, whole or in part, with the object's description."""
        self.put("k", b"0123456789")
        info, data = self.store.read_held_now("demo", self.order_id, "k")
        self.assertEqual((info, data), (self.store.head("demo", self.order_id, "k"), b"0123456789"))
        self.assertEqual(self.store.read_held_now("demo", self.order_id, "k", 2, 4)[1], b"234")
        self.assertEqual(self.store.read_held_now("demo", self.order_id, "k", 8, 99)[1], b"89")
        self.assertEqual(self.store.head_now("demo", self.order_id, "k"), info)

    def test_held_pieces_read_in_order(self) -> None:
        """An object of several pieces the index holds is read whole, not as its first piece.

        The statement that reads a held object with its row takes a row of one piece only:
        one of two pieces (made by hand here) is read piece by piece, with the same answer.
        """
        self.put("k", b"abc")
        with self.store.index.write() as db:
            ids = [
                db.execute("INSERT INTO small_files (data) VALUES (?)", (data,)).lastrowid
                for data in (b"abc", b"defgh")
            ]
            files = json.dumps([[f"{INLINE_MARK}{ids[0]}", 3], [f"{INLINE_MARK}{ids[1]}", 5]])
            db.execute("UPDATE objects SET files = ?, size = 8", (files,))
        self.assertEqual(self.store.read_held_now("demo", self.order_id, "k")[1], b"abcdefgh")
        self.assertEqual(self.store.read_held_now("demo", self.order_id, "k", 2, 4)[1], b"cde")

    def test_object_in_files_would_wait(self) -> None:
        """An object in files is not read on the caller's thread."""
        self.put("big", os.urandom(100 * 1024))
        self.assertRaises(WouldWait, self.store.read_held_now, "demo", self.order_id, "big")
        self.assertEqual(self.store.head_now("demo", self.order_id, "big").size, 100 * 1024)

    def test_missing_objects_and_orders(self) -> None:
        """A missing path or another account's order is the same error as from the pool."""
        self.put("k", b"x")
        for read in (self.store.read_held_now, self.store.head_now):
            self.assertRaises(NoSuchPath, read, "demo", self.order_id, "nope")
            self.assertRaises(NoSuchOrder, read, "other", self.order_id, "k")

    def test_locked_index_would_wait(self) -> None:
        """A read that finds the index locked fails at once with WouldWait, not a wait."""
        self.put("k", b"x")
        self.store.index.close()  # an exclusive lock needs every other connection closed
        holder = sqlite3.connect(
            os.path.join(self.base, INDEX_FILE), isolation_level=None, timeout=0
        )
        self.addCleanup(holder.close)
        holder.execute("PRAGMA locking_mode = EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        self.assertRaises(WouldWait, self.store.read_held_now, "demo", self.order_id, "k")
        self.assertRaises(WouldWait, self.store.head_now, "demo", self.order_id, "k")
        holder.execute("COMMIT")
        holder.close()
        self.assertEqual(self.store.read_held_now("demo", self.order_id, "k")[1], b"x")


class StoreQuickWriteTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.base, self.store, self.order_id = open_store(self, 64 * 1024)

    def put_now(self, path: str, data: bytes, **conditions: Any) -> None:
        segments = [Segment("", len(data), data)]
        self.store.put(
            "demo",
            self.order_id,
            path,
            segments,
            NewObject(len(data), "e"),
            now=True,
            **conditions,
        )

    def used(self) -> int:
        return self.store.order("demo", self.order_id).used

    def test_small_object_stored(self) -> None:
        """A small object is stored whole and charged, as by ``put``."""
        self.put_now("k", b"abc")
        self.put_now("k", b"abcdef")
        self.assertEqual(self.store.read_held_now("demo", self.order_id, "k")[1], b"abcdef")
        self.assertEqual(self.used(), 6)

    def test_refusals_leave_nothing(self) -> None:
        """A failed condition and a full order are their errors; nothing changes."""
        self.put_now("k", b"abc")
        self.assertRaises(PreconditionFailed, self.put_now, "k", b"x", if_none_match=True)
        self.assertRaises(PreconditionFailed, self.put_now, "k", b"x", if_match='"other"')
        self.assertRaises(QuotaExceeded, self.put_now, "big", bytes(64 * 1024 - 2))
        self.assertEqual(self.store.read_held_now("demo", self.order_id, "k")[1], b"abc")
        self.assertEqual(self.used(), 3)
        self.assertRaises(NoSuchPath, self.store.head, "demo", self.order_id, "big")

    def test_object_for_a_file_would_wait(self) -> None:
        """An object too large for the index is refused before anything is written."""

        def files() -> list[str]:
            return sorted(name for _, _, names in os.walk(self.base) for name in names)

        before = files()
        self.assertRaises(WouldWait, self.put_now, "f", bytes(65 * 1024))
        self.assertEqual(self.used(), 0)
        self.assertEqual(files(), before)

    def test_another_writer_would_wait(self) -> None:
        """While another store writes, the put does not wait: WouldWait, nothing stored."""
        other = Store(self.base, durable=False)
        self.addCleanup(other.close)
        with other.index.write():
            self.assertRaises(WouldWait, self.put_now, "k", b"abc")
        self.assertRaises(NoSuchPath, self.store.head, "demo", self.order_id, "k")
        self.put_now("k", b"abc")
        self.assertEqual(self.used(), 3)


class TurnWritesTests(SynchronousTestCase):
    """The small writes of one turn: committed together at its end, each undone alone."""

    def setUp(self) -> None:
        self.base, self.store, self.order_id = open_store(self, 64 * 1024)
        self.groups: list[str] = []
        for name in ("group", "group_now"):
            self.patch(self.store.index, name, self.counted(name, getattr(self.store.index, name)))
        self.pool = ManualPool()
        self.reactor = QueueReactor()
        self.lane = SerialCalls(
            self.reactor,  # type: ignore[arg-type]
            self.pool,  # type: ignore[arg-type]
            self.store.index.group,
        )
        self.clock = Clock()
        self.quick = QuickCalls(self.lane.call_grouped, clock=self.clock)
        self.writes = TurnWrites(
            self.reactor,  # type: ignore[arg-type]
            self.store.index,
            self.quick,
            limit=3,
        )

    def counted(self, name: str, group: Callable[[], Any]) -> Callable[[], Any]:
        def counting() -> Any:
            self.groups.append(name)
            return group()

        return counting

    def put(self, path: str, data: bytes, **conditions: Any) -> Any:
        args = (
            "demo",
            self.order_id,
            path,
            [Segment("", len(data), data)],
            NewObject(len(data), "e"),
        )

        def now(*args: Any) -> Any:
            return self.store.put(*args, now=True, **conditions)

        def slow(*args: Any) -> Any:
            return self.store.put(*args, **conditions)

        return self.writes.call(now, slow, *args)

    def stored(self) -> list[str]:
        """The paths stored, as another connection sees them."""
        db = sqlite3.connect(os.path.join(self.base, INDEX_FILE))
        try:
            return sorted(bytes(p).decode() for (p,) in db.execute("SELECT path FROM objects"))
        finally:
            db.close()

    def end_turn(self) -> None:
        """Run what the reactor was handed, then what that handed the pool, then again."""
        end_turn(self.reactor, self.pool)

    def test_one_commit_at_the_end_of_the_turn(self) -> None:
        """A turn's writes are answered only once committed, all in one group, in order."""
        puts = [self.put(f"k{n}", b"abc") for n in range(3)]
        for put in puts:
            self.assertNoResult(put)
        self.assertEqual(self.stored(), [])
        self.end_turn()
        self.assertEqual([self.successResultOf(put).path for put in puts], ["k0", "k1", "k2"])
        self.assertEqual(self.stored(), ["k0", "k1", "k2"])
        self.assertEqual((self.groups, self.pool.started), (["group_now"], []))
        self.assertEqual(self.store.order("demo", self.order_id).used, 9)

    def test_alone_in_its_turn(self) -> None:
        """A write alone in its turn commits by itself, with no group."""
        put = self.put("k", b"abc")
        self.end_turn()
        self.assertEqual(self.successResultOf(put).size, 3)
        self.assertEqual(self.groups, [])

    def test_groups_of_at_most_the_limit(self) -> None:
        """More writes in a turn than the limit: several groups, each committed."""
        puts = [self.put(f"k{n}", b"a") for n in range(7)]
        self.end_turn()
        self.assertEqual([self.successResultOf(put).size for put in puts], [1] * 7)
        self.assertEqual(self.groups, ["group_now", "group_now"])  # 3, 3, and 1 alone
        self.assertEqual(len(self.stored()), 7)

    def test_a_refused_write_is_undone_alone(self) -> None:
        """A write refused in the group fails with its error; the others are stored."""
        self.successResultOf(self.end_turn_of(self.put("k", b"abc")))
        puts = [
            self.put("a", b"1"),
            self.put("k", b"x", if_none_match=True),
            self.put("big", bytes(64 * 1024)),
        ]
        self.end_turn()
        self.assertEqual(self.successResultOf(puts[0]).size, 1)
        self.failureResultOf(puts[1], PreconditionFailed)
        self.failureResultOf(puts[2], QuotaExceeded)
        self.assertEqual(self.stored(), ["a", "k"])
        self.assertEqual(self.store.order("demo", self.order_id).used, 4)

    def end_turn_of(self, d: Any) -> Any:
        self.end_turn()
        return d

    def test_index_held_the_group_goes_to_the_pool(self) -> None:
        """Another writer holds the index: the turn's writes are grouped in the pool."""
        other = Store(self.base, durable=False)
        self.addCleanup(other.close)
        with other.index.write():
            puts = [self.put(f"k{n}", b"ab") for n in range(3)]
            for _ in range(2):  # the turn's end, then the lane's start
                pending, self.reactor.calls = self.reactor.calls, []
                for call in pending:
                    call()
            self.assertEqual(len(self.pool.started), 1)
        self.end_turn()
        self.assertEqual([self.successResultOf(put).size for put in puts], [2, 2, 2])
        self.assertEqual(self.groups, ["group_now", "group"])
        self.assertEqual(self.stored(), ["k0", "k1", "k2"])

    def test_a_write_that_would_wait_goes_to_the_pool(self) -> None:
        """One write of the group that cannot be done without waiting is done by the pool."""
        args = ("demo", self.order_id, "f", [Segment("", 3, b"abc")], NewObject(3, "e"))

        def waits(*args: Any) -> Any:
            raise WouldWait("needs a file")

        puts = [self.put("a", b"1"), self.writes.call(waits, self.store.put, *args)]
        self.end_turn()
        self.assertEqual(self.successResultOf(puts[0]).size, 1)
        self.assertNoResult(puts[1])
        self.end_turn()
        self.assertEqual(self.successResultOf(puts[1]).path, "f")
        self.assertEqual(self.stored(), ["a", "f"])

    def test_a_failed_commit_fails_the_group(self) -> None:
        """If the group's transaction cannot commit, every write of it fails; none is stored."""
        group_now = self.store.index.group_now

        @contextmanager
        def failing() -> Iterator[None]:
            with group_now():
                yield
                self.store.index.nowait().execute("INSERT INTO no_such_table VALUES (1)")

        self.patch(self.store.index, "group_now", failing)
        puts = [self.put(f"k{n}", b"ab") for n in range(2)]
        self.end_turn()
        for put in puts:
            self.failureResultOf(put, sqlite3.OperationalError)
        self.assertEqual(self.stored(), [])
        self.assertEqual(self.store.order("demo", self.order_id).used, 0)
