"""Point reads of a store, run on the reactor thread for as long as they stay quick.

A small GET or HEAD looks one row up in the index: tens of microseconds.  Handing it to a
pool thread costs the reactor several times that: the two threads trade the GIL at every
SQLite call, each trade a futex wake-up and a context switch.  On the embedded network a
4 KiB GET cost the gateway 440 µs of CPU through the pool and 270 µs when read in place.

So such a read is tried on the reactor thread, under three bounds that keep the reactor
from blocking (:class:`QuickReads`):

- the quick form of a read touches the index only, on a connection with no busy handler:
  where it would open an object file or wait for a lock it raises :class:`WouldWait`, and
  the read goes to the pool instead;
- a quick read that took longer than ``budget`` (the index's pages were not in memory, or
  the disk is slow) sends the following reads to the pool for ``pause`` seconds, doubled
  each time the next try is slow again, up to ``longest``, and back to ``pause`` after a
  quick one;
- anything else a read raises is its answer, as from the pool.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger

from lambgw.network.serial import SerialCalls

log = Logger()

_T = TypeVar("_T")

#: A quick read slower than this many seconds sends the reads after it to the pool.
BUDGET = 0.002
#: Seconds the reads go to the pool after a slow one ...
PAUSE = 1.0
#: ... doubled while each next try is slow too, up to this.
LONGEST_PAUSE = 64.0


class WouldWait(Exception):
    """A quick read that would have to wait (for a lock or an object file) to answer."""


class QuickReads:
    """Runs reads on the calling (reactor) thread while they are quick, else in ``lane``."""

    def __init__(
        self,
        lane: SerialCalls,
        budget: float = BUDGET,
        pause: float = PAUSE,
        longest: float = LONGEST_PAUSE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Send the reads that are not quick to ``lane``; ``clock`` times the quick ones."""
        self._lane = lane
        self._budget = budget
        self._first_pause = pause
        self._pause = pause
        self._longest = longest
        self._clock = clock
        #: Until this time (of ``clock``) reads go to the lane.
        self._pooled_until = float("-inf")

    def call(self, quick: Callable[..., _T], slow: Callable[..., _T], *args: Any) -> Deferred[_T]:
        """Fire with ``quick(*args)``, or with ``slow(*args)`` run in the lane.

        ``quick`` raises :class:`WouldWait` where it cannot answer without waiting.
        """
        start = self._clock()
        if start < self._pooled_until:
            return self._lane.call(slow, *args)
        try:
            result = quick(*args)
        except WouldWait:
            return self._lane.call(slow, *args)
        except Exception:
            return fail()
        finally:
            self._timed(start)
        return succeed(result)

    def _timed(self, start: float) -> None:
        """Take note of a quick read that began at ``start`` and has just ended."""
        now = self._clock()
        took = now - start
        if took <= self._budget:
            self._pause = self._first_pause
            return
        self._pooled_until = now + self._pause
        log.warn(
            "A store read took {took:.1f} ms on the reactor thread;"
            " reads go to a pool thread for {pause:g} s",
            took=1000 * took,
            pause=self._pause,
        )
        self._pause = min(2 * self._pause, self._longest)
