"""Moving a download from one socket to another inside the kernel, with splice(2).

A gateway that reads its objects from a lambnet node over plain TCP and answers an S3
client over plain TCP has nothing to do with the bytes in between: :class:`SpliceRelay`
has the kernel move them from the node's socket into a pipe and from the pipe into the
client's socket, so they never enter the process (no ``recv`` into a Python buffer, no
``send`` out of it).  The relay runs on the reactor with non-blocking calls: it waits for
the node's socket to be readable through a reader of its own, and for the client's socket
to be writable through the client's transport, as :class:`~lambgw.network.files.SendfileBody`
does.  At most one pipe's worth of bytes (:data:`PIPE_SIZE`) is in flight.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from twisted.internet import tcp
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IReactorFDSet, IReadDescriptor
from twisted.python.failure import Failure
from zope.interface import implementer

from lambgw.network.errors import NetworkUnavailable
from lambgw.network.files import wait_writable

#: The capacity asked for the pipe between the two sockets (the kernel may give less).
PIPE_SIZE = 1024 * 1024


def available() -> bool:
    """Whether this system has splice(2) (Linux)."""
    return hasattr(os, "splice")


@implementer(IReadDescriptor)
class _SourceReadable:
    """Tells the relay when the source socket has bytes (its own descriptor, its own reader)."""

    def __init__(self, fd: int, relay: SpliceRelay) -> None:
        self._fd = fd
        self._relay = relay

    def fileno(self) -> int:
        return self._fd

    def doRead(self) -> None:
        self._relay.readable()

    def connectionLost(self, reason: Failure) -> None:
        self._relay.fail(Failure(NetworkUnavailable("the network node's connection was lost")))

    def logPrefix(self) -> str:
        return "SpliceRelay"


class SpliceRelay:
    """Move ``count`` bytes from a source socket to a web request's socket inside the kernel.

    The source connection must be paused (not reading) for the whole relay, and the
    request must be waiting on a producer that forwards ``pauseProducing`` and
    ``resumeProducing`` to :meth:`pause` and :meth:`resume`.  :attr:`done` fires once every
    byte is in the client's socket, or fails with :class:`NetworkUnavailable` if the source
    ends early or :class:`ConnectionLost` if the client goes away.  The relay works on
    duplicates of both descriptors, so a connection closed meanwhile cannot hand its
    number to another one.
    """

    def __init__(
        self,
        reactor: IReactorFDSet,
        source: tcp.Connection,
        target: tcp.Connection,
        request: Any,
        count: int,
        received: Callable[[int], None],
    ) -> None:
        """Prepare to relay ``count`` bytes from ``source`` to ``target`` (``request``'s socket).

        ``received`` is called with the number of bytes each time some come from the source.
        """
        self._reactor = reactor
        self._received = received
        self._target = target
        self._request = request
        self._left = count
        self._held = 0
        self._paused = False
        self._closed = False
        self.done: Deferred[None] = Deferred()
        self._fds: list[int] = []
        try:
            self._source_fd = self._keep(os.dup(source.fileno()))
            self._target_fd = self._keep(os.dup(target.fileno()))
            pipe_out, pipe_in = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            self._pipe_out = self._keep(pipe_out)
            self._pipe_in = self._keep(pipe_in)
        except OSError:
            self._release()
            raise
        with suppress(OSError):  # over the user's pipe allowance: keep the default size
            fcntl.fcntl(self._pipe_in, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        self._readable = _SourceReadable(self._source_fd, self)
        self._reading = False
        #: Whether the relay waits for the client's socket (a slow client, not a silent source).
        self.waiting_for_client = False

    def _keep(self, fd: int) -> int:
        self._fds.append(fd)
        return fd

    def start(self) -> None:
        """Begin once the client's transport has sent what it already holds."""
        self._wait_for_client()

    def pause(self) -> None:
        """Move nothing until resumed."""
        self._paused = True
        self._stop_reading()

    def resume(self) -> None:
        """The client's socket can take bytes again: go on."""
        self._paused = False
        self.waiting_for_client = False
        self._pump()

    def readable(self) -> None:
        """The source socket has bytes (called by the reactor)."""
        self._pump()

    def fail(self, reason: Failure) -> None:
        """End the relay with ``reason`` (nothing happens once it has ended)."""
        if self._closed:
            return
        self.close()
        self.done.errback(reason)

    def close(self) -> None:
        """Stop and release the descriptors; :attr:`done` is left as it is."""
        if self._closed:
            return
        self._closed = True
        self._stop_reading()
        self._release()

    def _pump(self) -> None:
        """Empty the pipe into the client, then fill it from the source, until either blocks."""
        while not self._closed and not self._paused:
            if self._held:
                try:
                    sent = os.splice(
                        self._pipe_out, self._target_fd, self._held, flags=os.SPLICE_F_NONBLOCK
                    )
                except BlockingIOError:
                    self._stop_reading()
                    self._wait_for_client()
                    return
                except OSError as e:
                    self.fail(Failure(ConnectionLost(f"the client's connection failed: {e}")))
                    return
                self._held -= sent
                self._request.sentLength += sent
                continue
            if not self._left:
                self.close()
                self.done.callback(None)
                return
            try:
                got = os.splice(
                    self._source_fd,
                    self._pipe_in,
                    min(self._left, PIPE_SIZE),
                    flags=os.SPLICE_F_NONBLOCK,
                )
            except BlockingIOError:
                self._start_reading()
                return
            except OSError as e:
                self.fail(Failure(NetworkUnavailable(f"reading the network node failed: {e}")))
                return
            if not got:
                self.fail(Failure(NetworkUnavailable("the network node cut the transfer")))
                return
            self._left -= got
            self._held += got
            self._received(got)

    def _wait_for_client(self) -> None:
        self.waiting_for_client = True
        wait_writable(self._target)

    def _start_reading(self) -> None:
        if not self._reading:
            self._reading = True
            self._reactor.addReader(self._readable)

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._reactor.removeReader(self._readable)

    def _release(self) -> None:
        fds, self._fds = self._fds, []
        for fd in fds:
            os.close(fd)
