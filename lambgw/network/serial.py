"""Calls run one after the other in a pool thread, handed over in batches.

Handing each call to a thread pool costs a wake-up of a waiting thread, and waking
threads fight the reactor for the GIL: under load that hand-over costs more than the call.
:class:`SerialCalls` queues the calls and keeps one pool thread working through them while
any wait, so a busy gateway hands work over with a list append.  A thread is woken at the
end of the reactor's turn, not at the first call: every call the turn's requests queued
goes over in that one wake-up.  Each result goes back to
the reactor as soon as its call returns: the reactor answers that request while the thread
goes on with the next call (results held until the end of a batch made every client of the
batch wait for the slowest, and left the reactor idle meanwhile).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

_T = TypeVar("_T")
#: A queued call: the function, its arguments, and the Deferred of its result.
_Call = tuple[Callable[..., Any], tuple[Any, ...], Deferred[Any]]


class SerialCalls:
    """Runs queued calls in order, one at a time, in a thread of ``pool``."""

    def __init__(self, reactor: IReactorFromThreads, pool: ThreadPool) -> None:
        """Run calls in ``pool`` (started by the caller); results fire on ``reactor``."""
        self._reactor = reactor
        self._pool = pool
        self._lock = threading.Lock()
        self._queue: deque[_Call] = deque()
        self._running = False

    def call(self, f: Callable[..., _T], *args: Any) -> Deferred[_T]:
        """Queue ``f(*args)``; the Deferred fires with its result or failure."""
        d: Deferred[_T] = Deferred()
        with self._lock:
            self._queue.append((f, args, d))
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
            for f, args, d in batch:
                try:
                    result = f(*args)
                except BaseException:
                    result = Failure()
                self._reactor.callFromThread(_fire, d, result)


def _fire(d: Deferred[Any], result: Any) -> None:
    if isinstance(result, Failure):
        d.errback(result)
    else:
        d.callback(result)
