"""Moving bytes from one socket to another inside the kernel, with splice(2).

A gateway that talks to a lambnet node over plain TCP and to an S3 client over plain TCP
has nothing to do with the bytes of a large download or upload in between (the node
computes an upload's digests): :class:`SpliceRelay` has the kernel move them from one
socket into a pipe and from the pipe into the other socket, so they never enter the
process (no ``recv`` into a Python buffer, no ``send`` out of it).  The relay runs on the
reactor with non-blocking calls: it waits for the source socket to be readable through a
reader of its own, and for the target socket to be writable through the target's
transport, as :class:`~lambgw.network.files.SendfileBody` does.  At most one pipe's worth
of bytes (:data:`PIPE_SIZE`) is in flight.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from contextlib import suppress

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
        self._relay.source_lost()

    def logPrefix(self) -> str:
        return "SpliceRelay"


def _from_node(why: str) -> Exception:
    """What a relay from the node fails with when the node's socket fails or ends early."""
    return NetworkUnavailable(f"the network node's connection failed: {why}")


def _to_client(why: str) -> Exception:
    """What a relay to a client fails with when the client's socket fails."""
    return ConnectionLost(f"the client's connection failed: {why}")


class SpliceRelay:
    """Move ``count`` bytes from a source socket to a target socket inside the kernel.

    The source connection must be paused (not reading) for the whole relay, and the
    target's transport must have a producer that forwards ``resumeProducing`` to
    :meth:`resume` (and ``pauseProducing`` to :meth:`pause`).  :attr:`done` fires once
    every byte is in the target's socket, or fails with what ``source_error`` makes of a
    source that fails or ends early (by default :class:`NetworkUnavailable`: a download
    from the node) or what ``target_error`` makes of a target that fails (by default
    :class:`ConnectionLost`: the client went away).  The relay works on duplicates of both
    descriptors, so a connection closed meanwhile cannot hand its number to another one.
    """

    def __init__(
        self,
        reactor: IReactorFDSet,
        source: tcp.Connection,
        target: tcp.Connection,
        count: int,
        received: Callable[[int], None],
        sent: Callable[[int], None],
        source_error: Callable[[str], Exception] = _from_node,
        target_error: Callable[[str], Exception] = _to_client,
    ) -> None:
        """Prepare to relay ``count`` bytes from ``source`` to ``target``.

        ``received`` is called with the number of bytes each time some come from the
        source, and ``sent`` each time some go into the target's socket.
        """
        self._reactor = reactor
        self._received = received
        self._sent = sent
        self._source_error = source_error
        self._target_error = target_error
        self._target = target
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
        #: Whether the relay waits for the target's socket (a slow reader, not a silent source).
        self.waiting_for_target = False

    def _keep(self, fd: int) -> int:
        self._fds.append(fd)
        return fd

    def start(self) -> None:
        """Begin once the target's transport has sent what it already holds."""
        self._wait_for_target()

    def pause(self) -> None:
        """Move nothing until resumed."""
        self._paused = True
        self._stop_reading()

    def resume(self) -> None:
        """The target's socket can take bytes again: go on."""
        self._paused = False
        self.waiting_for_target = False
        self._pump()

    def readable(self) -> None:
        """The source socket has bytes (called by the reactor)."""
        self._pump()

    def source_lost(self) -> None:
        """The source's connection is gone (its descriptor was closed under the relay)."""
        self.fail(Failure(self._source_error("the connection was lost")))

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
        """Empty the pipe into the target, then fill it from the source, until either blocks."""
        while not self._closed and not self._paused:
            if self._held:
                try:
                    sent = os.splice(
                        self._pipe_out, self._target_fd, self._held, flags=os.SPLICE_F_NONBLOCK
                    )
                except BlockingIOError:
                    self._stop_reading()
                    self._wait_for_target()
                    return
                except OSError as e:
                    self.fail(Failure(self._target_error(str(e))))
                    return
                self._held -= sent
                self._sent(sent)
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
                self.fail(Failure(self._source_error(str(e))))
                return
            if not got:
                self.fail(Failure(self._source_error("it ended before the last byte")))
                return
            self._left -= got
            self._held += got
            self._received(got)

    def _wait_for_target(self) -> None:
        self.waiting_for_target = True
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
