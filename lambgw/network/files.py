"""Streaming the bytes of open object files to a consumer, with backpressure.

:class:`FileRangeBody` is the :class:`~lambgw.network.interface.IObjectBody` of the
embedded network: it holds the files opened by
:meth:`~lambgw.network.store.Store.open_range` and pushes their bytes to an ``IConsumer``
one chunk at a time.  Each chunk is read in the thread pool (a cold read must not block the
reactor); the next chunk is read ahead while the consumer writes the previous one, so at
most one chunk waits in memory, and the consumer pauses the transfer whenever its buffer
is full.

:class:`SendfileBody` sends the same bytes to a web request's plain TCP socket with
sendfile(2): the kernel moves them from the page cache to the socket, with no copy through
the process.  :meth:`FileRangeBody.deliver` hands over to it whenever the consumer is such
a request, so S3 clients of the embedded network and gateways reading a lambnet node alike
get their downloads this way.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from twisted.internet import tcp
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IConsumer, IPushProducer, IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from twisted.web.server import Request
from zope.interface import implementer

from lambgw.heldwrites import watch_writable
from lambgw.network.errors import NetworkError
from lambgw.network.interface import IObjectBody
from lambgw.network.store import FileRange

#: Bytes read from a file at a time.
CHUNK_SIZE = 1024 * 1024


@runtime_checkable
class WatchesKernelSends(Protocol):
    """A web request that waits for the bytes handed to the kernel behind its transport.

    A call that sends file bytes to the request's socket from a pool thread may still be
    running when the client leaves: the request counts its bytes (``sentLength``) only once
    such calls have returned.
    """

    def kernel_send(self, call: Deferred[Any]) -> None:
        """Note ``call``, which fires once its bytes are counted."""


def end_delivery(
    consumer: IConsumer | None, done: Deferred[None] | None, reason: Failure | None
) -> None:
    """End an IObjectBody delivery: unregister from the consumer, then fire ``done`` once.

    A web request whose client has gone has no channel left to unregister from.
    """
    if consumer is not None and not getattr(consumer, "_disconnected", False):
        consumer.unregisterProducer()
    if done is not None and not done.called:
        if reason is None:
            done.callback(None)
        else:
            done.errback(reason)


class _RangesBody:
    """What the bodies of file ranges share: their state, and pausing, stopping, cancelling."""

    def __init__(
        self,
        ranges: Sequence[FileRange],
        reactor: IReactorFromThreads,
        threadpool: ThreadPool,
        chunk_size: int,
    ) -> None:
        self._ranges = list(ranges)
        self._reactor = reactor
        self._threadpool = threadpool
        self._chunk_size = chunk_size
        self._index = 0
        self._offset = 0
        self._done: Deferred[None] | None = None
        self._paused = False
        self._finished = False

    def close(self) -> None:
        """Release the files without delivering (or stop a delivery in progress)."""
        self._finish(Failure(ConnectionLost("the body was closed")))

    def _cancel(self, done: Deferred[None]) -> None:
        self._done = None
        self._finish(None)

    def pauseProducing(self) -> None:
        """Send nothing until resumed."""
        self._paused = True

    def resumeProducing(self) -> None:
        """Go on sending."""
        self._paused = False
        self._pump()

    def stopProducing(self) -> None:
        """Give up: the consumer will take no more bytes."""
        self._finish(Failure(ConnectionLost("the consumer stopped the transfer")))

    def _pump(self) -> None:
        raise NotImplementedError

    def _finish(self, reason: Failure | None) -> None:
        raise NotImplementedError


@implementer(IObjectBody, IPushProducer)
class FileRangeBody(_RangesBody):
    """The bytes of consecutive ranges of open files, pushed to one consumer."""

    def __init__(
        self,
        ranges: Sequence[FileRange],
        reactor: IReactorFromThreads,
        threadpool: ThreadPool,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        """Stream ``ranges`` in order; reads run in ``threadpool``."""
        super().__init__(ranges, reactor, threadpool, chunk_size)
        self._consumer: IConsumer | None = None
        self._reading = False
        self._pending: bytes | None = None

    def deliver(self, consumer: IConsumer) -> Deferred[None]:
        """Write every byte to ``consumer``; fire when done.  Cancel to stop.

        A web request on a plain TCP connection gets the bytes from the kernel instead
        (:class:`SendfileBody`), which then owns the files.
        """
        if self._consumer is not None or self._finished:
            raise RuntimeError("the body was already delivered or closed")
        transport = sendfile_transport(consumer)
        if transport is not None:
            ranges, self._ranges = self._ranges, []
            self._finished = True
            kernel = SendfileBody(ranges, transport, self._reactor, self._threadpool)
            return kernel.deliver(consumer)
        self._consumer = consumer
        done: Deferred[None] = Deferred(self._cancel)
        self._done = done
        consumer.registerProducer(self, True)
        self._pump()
        return done  # not self._done: a transfer that ends at once has cleared it

    def _pump(self) -> None:
        """Write the chunk read ahead unless paused, then read the next one."""
        if self._finished or self._reading:
            return
        if self._pending is not None:
            if self._paused:
                return
            data, self._pending = self._pending, None
            self._write(data)
            if self._finished:
                return
        if self._index >= len(self._ranges):
            self._finish(None)
            return
        self._reading = True
        reading = deferToThreadPool(self._reactor, self._threadpool, self._read)
        reading.addCallbacks(self._read_done, self._read_failed)

    def _read(self) -> bytes:
        """Read the next chunk of the current range (in a pool thread)."""
        current = self._ranges[self._index]
        wanted = min(self._chunk_size, current.length - self._offset)
        data = os.pread(current.file.fileno(), wanted, current.offset + self._offset)
        if len(data) < wanted:
            raise NetworkError("an object file is shorter than its index says")
        self._offset += wanted
        if self._offset >= current.length:
            self._index += 1
            self._offset = 0
        return data

    def _read_done(self, data: bytes) -> None:
        self._reading = False
        if self._finished:
            self._close_files()
        else:
            self._pending = data
            self._pump()

    def _read_failed(self, reason: Failure) -> None:
        self._reading = False
        if self._finished:
            self._close_files()
        else:
            self._finish(reason)

    def _write(self, data: bytes) -> None:
        assert self._consumer is not None
        self._consumer.write(data)

    def _finish(self, reason: Failure | None) -> None:
        """End the transfer once: unregister, release the files, fire ``deliver``."""
        if self._finished:
            return
        self._finished = True
        self._pending = None
        if not self._reading:
            self._close_files()
        consumer, self._consumer = self._consumer, None
        done, self._done = self._done, None
        end_delivery(consumer, done, reason)

    def _close_files(self) -> None:
        for current in self._ranges:
            current.file.close()
        self._ranges = []


#: Bytes handed to one sendfile(2) call at most.
SENDFILE_SIZE = 4 * 1024 * 1024


def sendfile_transport(consumer: IConsumer) -> tcp.Connection | None:
    """Return the plain TCP connection under a web request, or None (TLS, tests, others).

    Only such a connection can take file bytes with sendfile(2): anything above the socket
    (TLS, an in-memory transport) must see the bytes, and so must a response without a
    Content-Length (its body is framed in chunks) or one to a HEAD request (it has none).
    """
    if not isinstance(consumer, Request) or consumer.method == b"HEAD":
        return None
    if not consumer.responseHeaders.hasHeader(b"content-length"):
        return None
    channel = getattr(consumer, "channel", None)
    transport = getattr(channel, "transport", None)
    if isinstance(transport, tcp.Connection) and not transport.TLS:
        return transport
    return None


def wait_writable(transport: tcp.Connection) -> None:
    """Have ``transport`` resume its producer once its buffer is sent and its socket has room."""
    transport.producerPaused = True
    watch_writable(transport)


@implementer(IObjectBody, IPushProducer)
class SendfileBody(_RangesBody):
    """The bytes of consecutive ranges of open files, sent to a web request's socket by the kernel.

    The response headers go through the request as usual; once the transport has sent them,
    the files' bytes go straight from the page cache to the socket with sendfile(2), in the
    thread pool (a cold read must not block the reactor), on a duplicate of the socket's
    descriptor (so that a connection closed meanwhile cannot hand the number to another
    one).  When the socket is full the transport is asked to wait until it is writable and
    then to resume its producer, which goes on sending: nothing is held in memory.

    Bytes are counted in the request's ``sentLength`` as the kernel takes them.  A client
    that leaves while a call is in flight (often right after the last byte: curl and urllib
    close at once) is judged by that call's result: the transfer succeeded if every byte
    was taken.
    """

    def __init__(
        self,
        ranges: Sequence[FileRange],
        transport: tcp.Connection,
        reactor: IReactorFromThreads,
        threadpool: ThreadPool,
        chunk_size: int = SENDFILE_SIZE,
    ) -> None:
        """Send ``ranges`` in order to ``transport``'s socket; calls run in ``threadpool``."""
        super().__init__(ranges, reactor, threadpool, chunk_size)
        self._transport = transport
        self._socket = -1
        self._request: Any = None
        #: The request the bytes are counted for, kept once the transfer has ended.
        self._sent_to: Any = None
        self._sending = False
        #: Whether the consumer stopped the transfer while a call was in flight.
        self._stopping = False

    def deliver(self, consumer: IConsumer) -> Deferred[None]:
        """Send every byte to the request ``consumer``'s socket; fire when done.  Cancel to stop."""
        if self._request is not None or self._finished:
            raise RuntimeError("the body was already delivered or closed")
        self._request = self._sent_to = consumer
        done: Deferred[None] = Deferred(self._cancel)
        self._done = done
        try:
            self._socket = os.dup(self._transport.fileno())
        except OSError:  # the connection is already closed
            self._finish(Failure(ConnectionLost("the connection is closed")))
            return done
        consumer.registerProducer(self, True)
        consumer.write(b"")  # the headers, sent before any file byte
        wait_writable(self._transport)
        return done

    def _pump(self) -> None:
        if self._finished or self._sending or self._paused:
            return
        while self._index < len(self._ranges) and not self._ranges[self._index].length:
            self._index += 1
        if self._index >= len(self._ranges):
            self._finish(None)
            return
        current = self._ranges[self._index]
        wanted = min(self._chunk_size, current.length - self._offset)
        self._sending = True
        sending = deferToThreadPool(
            self._reactor,
            self._threadpool,
            self._send,
            current.file.fileno(),
            current.offset + self._offset,
            wanted,
        )
        sending.addCallbacks(self._sent, self._send_failed, callbackArgs=(wanted,))
        if isinstance(self._request, WatchesKernelSends):
            self._request.kernel_send(sending)

    def _send(self, fd: int, offset: int, wanted: int) -> int | None:
        """Send file bytes to the socket (in a pool thread); None if the socket is full.

        A peer that has gone (a closed or reset socket) is a lost connection, as on any
        other transport, not a failure of the body.
        """
        try:
            return os.sendfile(self._socket, fd, offset, wanted)
        except BlockingIOError:
            return None
        except (BrokenPipeError, ConnectionResetError) as e:
            raise ConnectionLost(f"the peer went away: {e}") from None

    def stopProducing(self) -> None:
        """Give up, or, while a call is in flight, let its result say how the transfer ended."""
        if self._sending and not self._finished:
            self._stopping = True
        else:
            super().stopProducing()

    def _sent(self, sent: int | None, wanted: int) -> None:
        self._sending = False
        if sent:
            self._offset += sent
            if self._offset >= self._ranges[self._index].length:
                self._index += 1
                self._offset = 0
            self._sent_to.sentLength += sent
        if self._finished:
            self._release()
            return
        if sent == 0:
            self._finish(Failure(NetworkError("an object file is shorter than its index says")))
        elif self._stopping:
            whole = not any(r.length for r in self._ranges[self._index :])
            self._finish(None if whole else Failure(ConnectionLost("the client went away")))
        elif sent == wanted:
            self._pump()
        else:
            wait_writable(self._transport)

    def _send_failed(self, reason: Failure) -> None:
        self._sending = False
        if self._finished:
            self._release()
        else:
            self._finish(reason)

    def _finish(self, reason: Failure | None) -> None:
        """End the transfer once: unregister, release the files and socket, fire ``deliver``."""
        if self._finished:
            return
        self._finished = True
        if not self._sending:
            self._release()
        consumer, self._request = self._request, None
        done, self._done = self._done, None
        end_delivery(consumer, done, reason)

    def _release(self) -> None:
        for current in self._ranges:
            current.file.close()
        self._ranges = []
        if self._socket >= 0:
            os.close(self._socket)
            self._socket = -1


#: Bodies up to this size are read whole with the lookup, in the same pool call.
SMALL_READ = 64 * 1024


def read_small(ranges: Sequence[FileRange]) -> bytes:
    """Read the bytes of ``ranges`` whole and close their files (pool thread only)."""
    try:
        pieces = []
        for piece in ranges:
            piece.file.seek(piece.offset)
            data = piece.file.read(piece.length)
            if len(data) != piece.length:
                raise OSError(f"an object file is shorter than recorded ({len(data)} bytes)")
            pieces.append(data)
        return b"".join(pieces)
    finally:
        for piece in ranges:
            piece.file.close()


@implementer(IObjectBody)
class BytesBody:
    """A small body already read: written to the consumer in one piece."""

    def __init__(self, data: bytes) -> None:
        """Deliver ``data``."""
        self._data = data

    def deliver(self, consumer: IConsumer) -> Deferred[None]:
        """Write the bytes to ``consumer``."""
        consumer.write(self._data)
        self._data = b""
        return succeed(None)

    def take(self) -> bytes:
        """The bytes themselves, for a caller that writes them at once (the body is spent)."""
        data, self._data = self._data, b""
        return data

    def close(self) -> None:
        """Drop the bytes."""
        self._data = b""
