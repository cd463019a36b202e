"""Serial workers on a thread pool that hand their results back to the reactor in order.

A :class:`Lane` takes pieces of a body on the reactor thread and works on them, one batch
at a time and in order, in a pool thread: hashing and file writes release the GIL, so
lanes of several bodies, and the reactor itself, use every core.  The request body spool
of the S3 API (:mod:`lambgw.s3.spool`) and the node's incoming bodies
(:mod:`lambgw.lambnet.incoming`) are made of them.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from twisted.internet.interfaces import IReactorFromThreads
from twisted.python.threadpool import ThreadPool

#: A piece of a body: bytes as read, or a view into them after aws-chunked decoding.
Buffer = bytes | memoryview

#: A lane takes at most this many queued bytes at a time.
BATCH_SIZE = 1024 * 1024


class Lane:
    """A serial worker on a thread pool: ``work`` sees every queued piece, in order.

    ``put`` may be called from any thread.  After each batch ``on_batch(size)`` and, when
    the queue runs dry, ``on_idle()`` are called on the reactor thread.

    A lane stays :attr:`busy` until the reactor itself has seen it run dry: the worker's
    last act is to queue that news with ``callFromThread``, behind every call its work
    queued the same way (``callFromThread`` runs one thread's calls in order).  So when
    the reactor finds a lane idle, everything the lane handed to the reactor has already
    run there: completion cannot overtake delivery.
    """

    def __init__(
        self,
        reactor: IReactorFromThreads,
        pool: ThreadPool,
        work: Callable[[Buffer], None],
        on_batch: Callable[[int], None],
        on_idle: Callable[[], None],
    ) -> None:
        self._reactor = reactor
        self._pool = pool
        self._work = work
        self._on_batch = on_batch
        self._on_idle = on_idle
        self._lock = threading.Lock()
        self._queue: deque[Buffer] = deque()
        self._pending = 0
        self._running = False

    def put(self, data: Buffer) -> None:
        """Queue ``data`` for ``work``."""
        with self._lock:
            self._queue.append(data)
            self._pending += len(data)
            start = not self._running
            self._running = True
        if start:
            self._pool.callInThread(self._run)

    def clear(self) -> None:
        """Drop everything not yet taken by the worker."""
        with self._lock:
            self._queue.clear()
            self._pending = 0

    @property
    def pending(self) -> int:
        """Bytes queued and not yet worked on."""
        return self._pending

    @property
    def busy(self) -> bool:
        """Whether pieces are queued or being worked on."""
        with self._lock:
            return self._running or bool(self._queue)

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    break
                pieces = []
                size = 0
                while self._queue and size < BATCH_SIZE:
                    piece = self._queue.popleft()
                    pieces.append(piece)
                    size += len(piece)
                self._pending -= size
            # One large piece rather than many small ones: each hashing call releases and
            # retakes the GIL, and retaking it is what costs when other threads are busy.
            self._work(pieces[0] if len(pieces) == 1 else b"".join(pieces))
            self._reactor.callFromThread(self._on_batch, size)
        self._reactor.callFromThread(self._ran_dry)

    def _ran_dry(self) -> None:
        """On the reactor, after every call the worker queued: idle, or run again."""
        with self._lock:
            again = bool(self._queue)
            self._running = again
        if again:
            self._pool.callInThread(self._run)
        else:
            self._on_idle()
