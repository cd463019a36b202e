"""Spreading the connections of the shared listeners evenly over the workers.

Every worker waits on the same listening sockets, and the kernel wakes all of them for a
new connection: whichever calls ``accept`` first takes it.  Which one that is has nothing
to do with how busy each is, and S3 clients keep their connections open for many requests,
so an uneven share lasts: sixteen connections opened at once were measured split 16/0,
12/4, 16/0 and 13/3 between two workers, one worker serving nearly everything while the
other core idled.

So each worker publishes how many S3 connections it has open in :class:`Loads`, a table of
one 64-bit slot per worker in memory the supervisor shares with them all (a ``memfd``
each inherits).  A worker woken for a new connection while another running worker has
fewer open stops accepting for :data:`HOLD` seconds, leaving the connection to the less
loaded one, and then takes one connection if any is still waiting: a worker that is stuck,
or a slot that is stale, delays a connection by that much at most, never loses one.  A
worker's slot reads :data:`ABSENT` until it listens, and again once it has ended, so that
nobody waits for a worker that does not accept.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Mapping

#: The environment variable giving a worker the descriptor of the table.
LOADS_ENV = "LAMBGW_WORKER_LOADS"
#: The value of the slot of a worker that is not running: never the least loaded.
ABSENT = 2**62
#: Seconds a worker with more connections than another leaves a new one to the others.
HOLD = 0.02
_SLOT = 8


class Loads:
    """The open S3 connections of each worker, shared by the supervisor and the workers.

    Slots are whole 64-bit words, each written by one process only (its worker, or the
    supervisor once the worker has ended) and read whole by the others.
    """

    def __init__(self, fd: int, index: int | None = None) -> None:
        """Map the table held by ``fd``; ``index`` is this worker's slot (None: the supervisor)."""
        size = os.fstat(fd).st_size
        if size < _SLOT or size % _SLOT:
            raise ValueError(f"a table of worker loads has {size} bytes")
        self._fd = fd
        self._map = mmap.mmap(fd, size)
        self._slots = memoryview(self._map).cast("q")
        if index is not None and not 0 <= index < len(self._slots):
            raise ValueError(f"worker slot {index} of {len(self._slots)}")
        self._index = index

    @classmethod
    def create(cls, count: int) -> Loads:
        """A new table for ``count`` workers, every slot :data:`ABSENT` (the supervisor's)."""
        fd = os.memfd_create("lambgw-worker-loads", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, count * _SLOT)
            loads = cls(fd)
        except BaseException:
            os.close(fd)
            raise
        for number in range(1, count + 1):
            loads.set(number, ABSENT)
        return loads

    @classmethod
    def inherited(cls, environ: Mapping[str, str], number: int) -> Loads | None:
        """Worker ``number``'s view of the table its supervisor gave it, if any."""
        fd = environ.get(LOADS_ENV)
        return None if not fd else cls(int(fd), number - 1)

    def fileno(self) -> int:
        """The descriptor of the table, for the workers to inherit."""
        return self._fd

    def __len__(self) -> int:
        return len(self._slots)

    def get(self, number: int) -> int:
        """The open connections of worker ``number`` (counted from 1)."""
        value: int = self._slots[number - 1]
        return value

    def set(self, number: int, value: int) -> None:
        """Write worker ``number``'s slot (the supervisor: :data:`ABSENT` once it has ended)."""
        self._slots[number - 1] = value

    def publish(self, count: int) -> None:
        """Publish that this worker has ``count`` connections open (once closed: nowhere)."""
        assert self._index is not None, "only a worker publishes its load"
        if not self._map.closed:
            self._slots[self._index] = count

    def arrive(self) -> None:
        """Mark this worker as accepting connections: its slot stops reading :data:`ABSENT`."""
        assert self._index is not None, "only a worker arrives"
        if self._slots[self._index] == ABSENT:
            self._slots[self._index] = 0

    def others_fewer(self) -> bool:
        """Whether another running worker has fewer connections open than this one."""
        index = self._index
        assert index is not None, "only a worker compares its load"
        if self._map.closed:
            return False
        slots = self._slots
        mine = slots[index]
        return any(slots[i] < mine for i in range(len(slots)) if i != index)

    def close(self) -> None:
        """Unmap the table and close its descriptor (connections still open publish nothing)."""
        if self._map.closed:
            return
        self._slots.release()
        self._map.close()
        os.close(self._fd)
