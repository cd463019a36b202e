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
from twisted.logger import Logger

from lambgw.network.index import Index, WouldWait
from lambgw.network.serial import SerialCalls

__all__ = ["QuickCalls", "WouldWait", "checkpoint_if_due"]

log = Logger()

_T = TypeVar("_T")

#: A quick call slower than this many seconds sends the calls after it to the pool.
BUDGET = 0.002
#: Seconds the calls go to the pool after a slow one ...
PAUSE = 0.05
#: ... doubled while each next try is slow too, up to this.
LONGEST_PAUSE = 64.0


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

    def call(self, quick: Callable[..., _T], slow: Callable[..., _T], *args: Any) -> Deferred[_T]:
        """Fire with ``quick(*args)``, or with ``slow(*args)`` run in the pool.

        ``quick`` raises :class:`WouldWait` where it cannot answer without waiting.
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
            self._timed(start)
        return succeed(result)

    def _timed(self, start: float) -> None:
        """Take note of a quick call that began at ``start`` and has just ended."""
        now = self._clock()
        took = now - start
        if took <= self._budget:
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


def checkpoint_if_due(index: Index, lane: SerialCalls) -> None:
    """Checkpoint ``index`` in ``lane`` if its quick writes made a checkpoint due."""
    if index.checkpoint_due():
        lane.call(index.checkpoint).addErrback(
            lambda failure: log.failure("The store's index could not be checkpointed", failure)
        )
