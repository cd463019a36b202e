"""Small store calls run on the reactor thread for as long as they stay quick.

A small GET or HEAD looks one row up in the index, and a small PUT writes two rows: tens
of microseconds.  Handing such a call to a pool thread costs the reactor more than that:
the two threads trade the GIL at every SQLite call, each trade a futex wake-up and a
context switch.  On the embedded network a 4 KiB GET cost the gateway 440 µs of CPU
through the pool and 270 µs when read in place; a 4 KiB PUT 506 µs and 442 µs.

So such a call is tried on the reactor thread, under bounds that keep the reactor from
blocking (:class:`QuickCalls`):

- the quick form of a call touches the index only, on a connection that never waits
  (:meth:`~lambgw.network.index.Index.nowait`): where it would wait for a lock, or would
  open, write or flush an object file, it raises :class:`WouldWait` and the call goes to
  the pool instead.  A quick write commits without a flush, as every small write does
  (the log is flushed by checkpoints); the checkpoints of quick writes run in the pool
  (:func:`checkpoint_if_due`);
- a quick call that took longer than ``budget`` (the index's pages were not in memory,
  or the disk is slow) sends the following calls to the pool for ``pause`` seconds,
  doubled each time the next try is slow again, up to ``longest``, and back to ``pause``
  after a quick one.  Reaching ``longest`` (calls slow at every try for about a hundred
  seconds) is logged once: on a busy machine single calls are slow now and then, and say
  nothing;
- anything else a call raises is its answer, as from the pool.

Small writes are also grouped (:class:`TurnWrites`): those of one turn of the reactor
commit together at its end, so that a busy gateway or node pays one commit for a few
objects.

The first pause is short (:data:`PAUSE`, 50 ms) because most slow calls are not the
store's doing: on a machine whose cores are all busy, the scheduler runs another process
in the middle of a call now and then.  With a first pause of one second, those few calls
(4 to 27 in 16,000 to 48,000, in the benchmark's small-request load on two cores) sent 20
to 45% of all calls to the pool; with 50 ms, 1 to 4%.  A disk that stays slow still
reaches the longest pause, at its twelfth slow call instead of its seventh.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from lambgw.network.index import Index, WouldWait
from lambgw.network.serial import SerialCalls

__all__ = ["QuickCalls", "TurnWrites", "WouldWait", "checkpoint_if_due"]

log = Logger()

_T = TypeVar("_T")

#: A quick call slower than this many seconds sends the calls after it to the pool.
BUDGET = 0.002
#: Seconds the calls go to the pool after a slow one ...
PAUSE = 0.05
#: ... doubled while each next try is slow too, up to this.
LONGEST_PAUSE = 64.0
#: The most writes of one turn committed together (:class:`TurnWrites`).
TURN_GROUP = 32

#: A write waiting for the end of its turn: its quick and slow forms, their arguments, and
#: the Deferred of its result.
_Write = tuple[Callable[..., Any], Callable[..., Any], tuple[Any, ...], Deferred[Any]]


class QuickCalls:
    """Runs calls on the calling (reactor) thread while they are quick, else by ``pooled``."""

    def __init__(
        self,
        pooled: Callable[..., Deferred[Any]],
        budget: float = BUDGET,
        pause: float = PAUSE,
        longest: float = LONGEST_PAUSE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Hand the calls that are not quick to ``pooled(f, *args)``, which runs them in a pool.

        ``clock`` times the quick ones.
        """
        self._pooled = pooled
        self._budget = budget
        self._first_pause = pause
        self._pause = pause
        self._longest = longest
        self._clock = clock
        #: Until this time (of ``clock``) calls go to the pool.
        self._pooled_until = float("-inf")
        #: Whether the calls' staying slow was logged (once, until a call is quick again).
        self._warned = False

    def call(
        self, quick: Callable[..., _T], slow: Callable[..., _T], *args: Any, weight: int = 1
    ) -> Deferred[_T]:
        """Fire with ``quick(*args)``, or with ``slow(*args)`` run in the pool.

        ``quick`` raises :class:`WouldWait` where it cannot answer without waiting.  A call
        that does the work of ``weight`` calls has ``weight`` times the budget.
        """
        start = self._clock()
        if start < self._pooled_until:
            return self._pooled(slow, *args)
        try:
            result = quick(*args)
        except WouldWait:
            return self._pooled(slow, *args)
        except Exception:
            return fail()
        finally:
            self._timed(start, weight)
        return succeed(result)

    def pooled(self, slow: Callable[..., _T], *args: Any) -> Deferred[_T]:
        """Fire with ``slow(*args)`` run in the pool, without trying it here first."""
        return self._pooled(slow, *args)

    def _timed(self, start: float, weight: int) -> None:
        """Take note of a quick call that began at ``start`` and has just ended."""
        now = self._clock()
        took = now - start
        if took <= self._budget * weight:
            self._pause = self._first_pause
            self._warned = False
            return
        self._pooled_until = now + self._pause
        if self._pause >= self._longest and not self._warned:
            # A busy machine makes a call slow now and then: only calls slow at every try
            # for a minute or more (a slow disk) are worth a warning.
            log.warn(
                "Store calls on the reactor thread stay slow (the last took {took:.1f} ms):"
                " they run in a pool thread, tried again every {pause:g} s",
                took=1000 * took,
                pause=self._pause,
            )
            self._warned = True
        self._pause = min(2 * self._pause, self._longest)


class TurnWrites:
    """The small writes asked for in one turn of the reactor, committed together.

    A write alone in its turn goes through :class:`QuickCalls` as it would by itself.  When
    several came in one turn (a busy gateway or node gets a few at a time from its clients),
    they are tried together on the reactor thread at the turn's end: one transaction
    (:meth:`~lambgw.network.index.Index.group_now`), each write a savepoint of it, so they
    cost one commit and one turn of the writers' lock instead of one each.  A write that
    raises is undone alone and its error is its answer.  If the group cannot start without
    waiting, or the writes are going to the pool for a while, the group runs in the pool,
    in the index's :meth:`~lambgw.network.index.Index.group`.  No write is answered before
    its group is committed.
    """

    def __init__(
        self, reactor: IReactorTime, index: Index, quick: QuickCalls, limit: int = TURN_GROUP
    ) -> None:
        """Group the writes of a turn of ``reactor`` in ``index``, ``limit`` at most a group.

        ``quick`` hands the calls that are not quick to a lane that runs them in a group
        (:meth:`SerialCalls.call_grouped`).
        """
        self._reactor = reactor
        self._index = index
        self._quick = quick
        self._limit = limit
        self._waiting: list[_Write] = []

    def call(self, quick: Callable[..., _T], slow: Callable[..., _T], *args: Any) -> Deferred[_T]:
        """Fire with ``quick(*args)`` or ``slow(*args)``, as :meth:`QuickCalls.call` does.

        Both are writes that are one savepoint inside a group of writes.
        """
        d: Deferred[_T] = Deferred()
        if not self._waiting:
            self._reactor.callLater(0, self._end_of_turn)
        self._waiting.append((quick, slow, args, d))
        return d

    def _end_of_turn(self) -> None:
        waiting, self._waiting = self._waiting, []
        for start in range(0, len(waiting), self._limit):
            writes = waiting[start : start + self._limit]
            if len(writes) == 1:
                quick, slow, args, d = writes[0]
                self._quick.call(quick, slow, *args).chainDeferred(d)
                continue
            done = self._quick.call(self._now, self._pooled, writes, weight=len(writes))
            done.addCallbacks(self._answer, self._fail, (writes,), errbackArgs=(writes,))

    def _now(self, writes: list[_Write]) -> list[Any]:
        """Each write's result or failure, all committed together without waiting."""
        with self._index.group_now():
            return [_outcome(quick, args) for quick, _, args, _ in writes]

    @staticmethod
    def _pooled(writes: list[_Write]) -> list[Any]:
        """Each write's result or failure (in a pool thread, in a group of the index)."""
        return [_outcome(slow, args) for _, slow, args, _ in writes]

    def _answer(self, outcomes: list[Any], writes: list[_Write]) -> None:
        for (_, slow, args, d), outcome in zip(writes, outcomes, strict=True):
            if isinstance(outcome, Failure) and outcome.check(WouldWait):
                # Undone: this one needs what a quick write may not do (the pool does it).
                self._quick.pooled(slow, *args).chainDeferred(d)
            elif isinstance(outcome, Failure):
                d.errback(outcome)
            else:
                d.callback(outcome)

    @staticmethod
    def _fail(failure: Failure, writes: list[_Write]) -> None:
        for *_, d in writes:
            d.errback(failure)


def _outcome(f: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """``f(*args)``, or the failure it raised."""
    try:
        return f(*args)
    except Exception:
        return Failure()


def checkpoint_if_due(index: Index, lane: SerialCalls) -> None:
    """Checkpoint ``index`` in ``lane`` if its quick writes made a checkpoint due."""
    if index.checkpoint_due():
        lane.call(index.checkpoint).addErrback(
            lambda failure: log.failure("The store's index could not be checkpointed", failure)
        )
