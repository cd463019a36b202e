"""The streaming bodies of the HTTP network: uploads from spooled segments, downloads to a consumer.

:class:`BytesProducer` writes a small body held in memory at once; :class:`SegmentsProducer`
writes spooled segments, in order, as one request body, with the transport's backpressure.
:class:`HTTPObjectBody` pushes an unbuffered response body to a consumer, pausing the
connection while the consumer is full and giving up when the node stops sending for the
silence timeout.  :class:`Silence` cancels a request that makes no progress.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import IO, Any

from twisted.internet import error, task, tcp
from twisted.internet.abstract import FileDescriptor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IConsumer,
    IDelayedCall,
    IPushProducer,
    IReactorFDSet,
    IReactorTime,
)
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import FileBodyProducer, ResponseDone
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from lambgw.network import splice
from lambgw.network.errors import NetworkUnavailable
from lambgw.network.files import end_delivery, sendfile_transport
from lambgw.network.interface import IObjectBody, Segment
from lambgw.network.splice import SpliceRelay

#: Bytes read from a spooled segment at a time.
READ_SIZE = 256 * 1024

#: Bytes read from the node's connection at a time while a large body arrives: at Twisted's
#: 64 KiB, a download would cost a trip through the reactor and every parser per 64 KiB.
LARGE_READ = 1024 * 1024
#: Twisted's read size, given back when the large body is done: a ``recv`` into a 1 MiB
#: buffer allocates (maps, then unmaps) 1 MiB even when a small answer arrives.
DEFAULT_READ = 64 * 1024

#: Bodies with at least this much left to read are spliced when they can be (the node's
#: connection, left mid-body, is then closed rather than used again).
SPLICE_MIN = 1024 * 1024


class Silence:
    """Cancels a Deferred when ``touch`` has not been called for ``timeout`` seconds."""

    def __init__(self, clock: IReactorTime, timeout: float, target: Deferred[Any]) -> None:
        self._clock = clock
        self._timeout = timeout
        self._target = target
        self._call: IDelayedCall | None = clock.callLater(timeout, self._expire)

    def _expire(self) -> None:
        self._call = None
        self._target.cancel()

    def touch(self) -> None:
        """Progress was made: start the wait again."""
        if self._call is not None and self._call.active():
            self._call.reset(self._timeout)

    def follow(self, target: Deferred[Any]) -> None:
        """Progress was made, and what is awaited next is ``target``: watch it instead.

        One watch then covers a request and the reading of its answer, with one timer.
        """
        self._target = target
        self.touch()

    def stop(self) -> None:
        """Stop watching."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None


@implementer(IBodyProducer)
class BytesProducer:
    """A small request body held in memory, written at once (with the request's headers)."""

    def __init__(self, data: bytes) -> None:
        """Produce ``data``."""
        self.length = len(data)
        #: The whole body (an agent may send it without producing it).
        self.data = data
        self._data = data

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        """Write the bytes to ``consumer``."""
        if self._data:
            consumer.write(self._data)
        self._data = b""
        return succeed(None)

    def pauseProducing(self) -> None:
        """Nothing to pause: the bytes are written already."""

    def resumeProducing(self) -> None:
        """Nothing to resume."""

    def stopProducing(self) -> None:
        """Nothing more is written anyway."""
        self._data = b""


@implementer(IBodyProducer)
class SegmentsProducer:
    """The bytes of spooled segments, in order, as one request body."""

    def __init__(
        self,
        segments: Sequence[Segment],
        cooperator: task.Cooperator,
        progress: Callable[[], None] = lambda: None,
        trailer: tuple[Callable[[str], bytes], int] | None = None,
    ) -> None:
        """Produce ``segments``; ``progress`` is called whenever bytes are written.

        With ``trailer`` (a function and the length of what it gives), the bytes are hashed
        as they go and followed by ``function(sha256_hex)``.
        """
        self.length = sum(segment.size for segment in segments)
        self._trailer = None
        if trailer is not None:
            self._trailer, room = trailer
            self.length += room
        self._sha256 = hashlib.sha256()
        self._segments = list(segments)
        self._cooperator = cooperator
        self.progress = progress
        self._current: FileBodyProducer | None = None
        self._file: IO[bytes] | None = None
        self._stopped = False

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        """Write every segment to ``consumer``, one after the other."""
        return Deferred.fromCoroutine(self._produce(consumer))

    async def _produce(self, consumer: IConsumer) -> None:
        digest = self._sha256 if self._trailer is not None else None
        counting = _CountingConsumer(consumer, lambda: self.progress(), digest)
        for segment in self._segments:
            if self._stopped:
                break
            if segment.data is not None:
                counting.write(segment.data)
                continue
            self._file = open(segment.path, "rb")  # noqa: SIM115 - closed by the producer
            self._current = FileBodyProducer(self._file, self._cooperator, READ_SIZE)
            try:
                await self._current.startProducing(counting)
            finally:
                self._current = None
                self._file.close()
        if self._trailer is not None and not self._stopped:
            consumer.write(self._trailer(self._sha256.hexdigest()))

    def pauseProducing(self) -> None:
        """Stop writing until resumed."""
        if self._current is not None:
            self._current.pauseProducing()

    def resumeProducing(self) -> None:
        """Go on writing."""
        if self._current is not None:
            self._current.resumeProducing()

    def stopProducing(self) -> None:
        """Give up: nothing more is written."""
        self._stopped = True
        if self._current is not None:
            self._current.stopProducing()


class _CountingConsumer:
    """Passes writes on to a consumer, reporting progress."""

    def __init__(
        self, consumer: IConsumer, progress: Callable[[], None], digest: Any = None
    ) -> None:
        self._consumer = consumer
        self._progress = progress
        self._digest = digest

    def write(self, data: bytes) -> None:
        if not data:
            return  # an empty chunk would end a chunked body
        self._progress()
        if self._digest is not None:
            self._digest.update(data)
        self._consumer.write(data)


@implementer(IObjectBody, IPushProducer)
class HTTPObjectBody:
    """The body of a node's answer, pushed to a consumer with backpressure."""

    def __init__(
        self,
        response: Any,
        clock: IReactorTime,
        silence: float,
        fds: IReactorFDSet | None = None,
    ) -> None:
        """Stream ``response`` (an unbuffered treq response).

        With ``fds`` (the reactor), a large body bound for a web request on a plain TCP
        connection, from a node reached over plain TCP, is spliced from socket to socket
        (:class:`~lambgw.network.splice.SpliceRelay`) instead of passing through the process.
        """
        self._response = response
        self._clock = clock
        self._fds = fds
        self._relay: SpliceRelay | None = None
        self._silence = silence
        self._expected = response.length
        self._received = 0
        self._consumer: IConsumer | None = None
        self._transport: Any = None
        self._timer: IDelayedCall | None = None
        self._progress = 0.0
        self._paused = False
        self._done: Deferred[None] | None = None
        self._finished = False
        self._socket: FileDescriptor | None = None

    def deliver(self, consumer: IConsumer) -> Deferred[None]:
        """Write the body to ``consumer``; fire when done.  Cancel to stop."""
        if self._consumer is not None or self._finished:
            raise RuntimeError("the body was already delivered or closed")
        self._consumer = consumer
        done: Deferred[None] = Deferred(self._cancel)
        self._done = done
        consumer.registerProducer(self, True)
        self._progress = self._clock.seconds()
        self._timer = self._clock.callLater(self._silence, self._check_silence)
        self._response.deliverBody(_Receiver(self))  # hands over the bytes already read
        if self._fds is not None and self._left() >= SPLICE_MIN and splice.available():
            # Not now: this may run inside the node connection's read (its headers fired the
            # response), whose remaining bytes reach the body only once that read returns.
            self._clock.callLater(0, self._splice, consumer)
        return done

    def _left(self) -> int:
        """Body bytes still to come (0 if finished or of unknown length)."""
        if self._finished or self._expected == UNKNOWN_LENGTH:
            return 0
        return int(self._expected) - self._received

    def _splice(self, consumer: IConsumer) -> None:
        """Relay the rest of a large body inside the kernel, if both ends are plain sockets."""
        left = self._left()
        if self._fds is None or left < SPLICE_MIN:
            return
        client = sendfile_transport(consumer)
        node = getattr(self._transport, "_producer", None)  # under the response's proxy
        if client is None or not isinstance(node, tcp.Connection) or node.TLS:
            return
        node.pauseProducing()
        try:
            relay = SpliceRelay(self._fds, node, client, left, self._spliced, _sent_to(consumer))
        except OSError:  # out of descriptors: read and write the bytes instead
            if not self._paused:
                node.resumeProducing()
            return
        self._relay = relay
        relay.done.addCallbacks(self._relayed, self._abort)
        consumer.write(b"")  # the response headers, if no body byte has sent them yet
        relay.start()

    def _spliced(self, count: int) -> None:
        self._received += count
        self._progress = self._clock.seconds()

    def _relayed(self, _: None) -> None:
        """Every byte is in the client's socket; the node's connection, mid-body, is dropped."""
        if self._transport is not None:
            self._transport.stopProducing()
        self._finish(None)

    def _cancel(self, done: Deferred[None]) -> None:
        """The delivery is cancelled: drop the connection (the Deferred fails as cancelled)."""
        self._done = None
        self._abort(None)

    def close(self) -> None:
        """Drop the connection without reading the body (or stop a delivery)."""
        if self._consumer is None and not self._finished:
            self._response.deliverBody(_Receiver(self))
        self._abort(Failure(NetworkUnavailable("the body was closed")))

    def _check_silence(self) -> None:
        """Give up if the node sent nothing for the timeout, else look again when it would end.

        Bytes arriving and resumptions only note the time: the one timer of a delivery is
        moved when it fires, not for every chunk.
        """
        self._timer = None
        if self._finished:
            return
        now = self._clock.seconds()
        if self._paused or (self._relay is not None and self._relay.waiting_for_target):
            self._progress = now  # a slow client is not a silent node
        left = self._progress + self._silence - now
        if left > 0:
            self._timer = self._clock.callLater(left, self._check_silence)
        else:
            self._abort(Failure(NetworkUnavailable("the network node stopped sending")))

    def _disarm(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def pauseProducing(self) -> None:
        """The consumer is full: pause the connection (silence is not counted meanwhile)."""
        self._paused = True
        if self._relay is not None:
            self._relay.pause()
        elif self._transport is not None:
            self._transport.pauseProducing()

    def resumeProducing(self) -> None:
        """Go on reading."""
        if self._finished:
            return
        self._paused = False
        self._progress = self._clock.seconds()
        if self._relay is not None:
            self._relay.resume()
        elif self._transport is not None:
            self._transport.resumeProducing()

    def stopProducing(self) -> None:
        """The consumer gives up."""
        self._abort(Failure(error.ConnectionLost("the consumer stopped the transfer")))

    def connected(self, transport: Any) -> None:
        """The body's transport is known (called by the receiver): read it in large pieces."""
        self._transport = transport
        if self._finished:
            transport.stopProducing()
            return
        self._socket = set_read_size(getattr(transport, "_producer", transport), LARGE_READ)

    def received(self, data: bytes) -> None:
        """Pass bytes on to the consumer."""
        if self._finished or self._consumer is None:
            return
        self._received += len(data)
        self._progress = self._clock.seconds()
        self._consumer.write(data)

    def ended(self, reason: Failure) -> None:
        """The body is over: complete, or cut."""
        complete = reason.check(ResponseDone) and (
            self._expected == UNKNOWN_LENGTH or self._received == self._expected
        )
        self._finish(
            None
            if complete
            else Failure(
                NetworkUnavailable(
                    f"the network node cut the transfer after {self._received} bytes"
                )
            )
        )

    def _abort(self, reason: Failure | None) -> None:
        if not self._finished and self._transport is not None:
            self._transport.stopProducing()
        self._finish(reason)

    def _finish(self, reason: Failure | None) -> None:
        if self._finished:
            return
        self._finished = True
        self._disarm()
        if self._socket is not None:
            self._socket.bufferSize = DEFAULT_READ
        if self._relay is not None:
            self._relay.close()
        consumer, self._consumer = self._consumer, None
        done, self._done = self._done, None
        end_delivery(consumer, done, reason)


def _sent_to(request: Any) -> Callable[[int], None]:
    """Count bytes the kernel took for ``request`` in its ``sentLength``, as its transport would."""

    def sent(count: int) -> None:
        request.sentLength += count

    return sent


class _Receiver(Protocol):
    """Hands a response body's events to an :class:`HTTPObjectBody`."""

    def __init__(self, body: HTTPObjectBody) -> None:
        self._body = body

    def connectionMade(self) -> None:
        self._body.connected(self.transport)

    def dataReceived(self, data: bytes) -> None:
        self._body.received(data)

    def connectionLost(self, reason: Failure = error.ConnectionDone) -> None:  # type: ignore[assignment]
        self._body.ended(reason)


def set_read_size(transport: Any, size: int) -> FileDescriptor | None:
    """Make the socket at the bottom of ``transport`` (under TLS, if any) read ``size`` at a time.

    The same attribute is the amount buffered for writing before a producer is paused, so
    writes stay bounded too.  Returns the socket's transport, if there is one.
    """
    while transport is not None:
        if isinstance(transport, FileDescriptor):
            transport.bufferSize = size
            return transport
        transport = getattr(transport, "transport", None)
    return None


def set_write_size(transport: Any, buffered: int, send: int) -> FileDescriptor | None:
    """Let the socket under ``transport`` hold ``buffered`` bytes and send ``send`` at a time.

    A producer writing to it is paused once more than ``buffered`` bytes wait (Twisted's
    ``bufferSize``, which is also the read size); each turn of the reactor hands at most
    ``send`` bytes to the kernel (Twisted's ``SEND_LIMIT``).  Returns the socket's
    transport, if there is one; :func:`reset_write_size` gives Twisted's sizes back.
    """
    socket = set_read_size(transport, buffered)
    if socket is not None:
        socket.SEND_LIMIT = send
    return socket


def reset_write_size(socket: FileDescriptor) -> None:
    """Give a socket changed by :func:`set_write_size` Twisted's read and write sizes back."""
    socket.bufferSize = DEFAULT_READ
    socket.SEND_LIMIT = FileDescriptor.SEND_LIMIT


def remove_segments(segments: Sequence[Segment]) -> None:
    """Delete the files of spooled segments (those already gone are skipped)."""
    for segment in segments:
        if segment.data is None:
            with suppress(FileNotFoundError):
                os.unlink(segment.path)
