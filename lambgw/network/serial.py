"""Calls run one after the other in a pool thread, handed over in batches.

Handing each call to a thread pool costs a wake-up of a waiting thread, and waking
threads fight the reactor for the GIL: under load that hand-over costs more than the call.
:class:`SerialCalls` queues the calls and keeps one pool thread working through them while
any wait, so a busy gateway hands work over with a list append.  A thread is woken at the
end of the reactor's turn, not at the first call: every call the turn's requests queued
goes over in that one wake-up.  Each result goes back to
the reactor as soon as its call returns: the reactor answers that request while the thread
goes on with the next call (results held until the end of a batch made every client of the
batch wait for the slowest, and left the reactor idle meanwhile).  Results that come while
the reactor has not yet taken the earlier ones go with them: one wake-up of the reactor
hands over every result ready by then.

Calls queued with :meth:`SerialCalls.call_grouped` are different: consecutive ones, up to
:data:`GROUP_SIZE`, run together inside the ``group`` context given (for a store, one
transaction: :meth:`~lambgw.network.index.Index.group`), and their results go back only
once it has ended, since none is done before the group is committed.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

_T = TypeVar("_T")
#: A queued call: the function, its arguments, the Deferred of its result, and whether it
#: may run in a group.
_Call = tuple[Callable[..., Any], tuple[Any, ...], Deferred[Any], bool]
#: The most calls run in one group.
GROUP_SIZE = 64


class SerialCalls:
    """Runs queued calls in order, one at a time, in a thread of ``pool``."""

    def __init__(
        self,
        reactor: IReactorFromThreads,
        pool: ThreadPool,
        group: Callable[[], AbstractContextManager[None]] | None = None,
    ) -> None:
        """Run calls in ``pool`` (started by the caller); results fire on ``reactor``.

        ``group`` makes the context that grouped calls run in (without it, they run alone).
        """
        self._reactor = reactor
        self._pool = pool
        self._group = group
        self._lock = threading.Lock()
        self._queue: deque[_Call] = deque()
        self._running = False
        #: Results waiting for the reactor, in the order their calls ran.
        self._results: list[tuple[Deferred[Any], Any]] = []

    def call(self, f: Callable[..., _T], *args: Any) -> Deferred[_T]:
        """Queue ``f(*args)``; the Deferred fires with its result or failure."""
        return self._queue_call(f, args, False)

    def call_grouped(self, f: Callable[..., _T], *args: Any) -> Deferred[_T]:
        """Queue ``f(*args)`` to run in a group with its neighbours, if any.

        The Deferred fires once the group has ended: with the call's failure if it raised,
        with the group's if ending it raised, else with the call's result.
        """
        return self._queue_call(f, args, self._group is not None)

    def _queue_call(
        self, f: Callable[..., _T], args: tuple[Any, ...], grouped: bool
    ) -> Deferred[_T]:
        d: Deferred[_T] = Deferred()
        with self._lock:
            self._queue.append((f, args, d, grouped))
            start = not self._running
            self._running = True
        if start:
            self._reactor.callFromThread(self._pool.callInThread, self._run)
        return d

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    self._running = False
                    return
                batch = list(self._queue)
                self._queue.clear()
            start = 0
            while start < len(batch):
                end = start + 1
                if batch[start][3]:
                    while end < len(batch) and batch[end][3] and end - start < GROUP_SIZE:
                        end += 1
                    self._run_group(batch[start:end])
                else:
                    f, args, d, _ = batch[start]
                    self._hand_back([(d, _result(f, args))])
                start = end

    def _run_group(self, calls: list[_Call]) -> None:
        """Run ``calls`` inside one group, then hand their results back."""
        assert self._group is not None
        results: list[Any] = []
        try:
            with self._group():
                for f, args, _, _ in calls:
                    results.append(_result(f, args))
        except BaseException:
            ended = Failure()
            results = [r if isinstance(r, Failure) else ended for r in results]
            results += [ended] * (len(calls) - len(results))
        self._hand_back([(d, result) for (_, _, d, _), result in zip(calls, results, strict=True)])

    def _hand_back(self, results: list[tuple[Deferred[Any], Any]]) -> None:
        """Give ``results`` to the reactor, waking it unless it has results still to take."""
        with self._lock:
            wake = not self._results
            self._results += results
        if wake:
            self._reactor.callFromThread(self._fire_results)

    def _fire_results(self) -> None:
        """Fire the Deferreds of every result handed back so far (on the reactor)."""
        with self._lock:
            results, self._results = self._results, []
        for d, result in results:
            _fire(d, result)


def _result(f: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """``f(*args)``, or the failure it raised."""
    try:
        return f(*args)
    except BaseException:
        return Failure()


def _fire(d: Deferred[Any], result: Any) -> None:
    if isinstance(result, Failure):
        d.errback(result)
    else:
        d.callback(result)
