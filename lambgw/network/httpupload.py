"""An object streamed to a ``lambnet`` node as its bytes arrive, its digest in a signed trailer.

The gateway cannot know a body's SHA-256 before the last byte, and the node must check it.
:class:`StreamedUpload` therefore sends ``x-lamb-content-sha256: STREAMING-TRAILER`` and,
after the object's bytes, a trailer holding the digest and the object's description,
signed with the account's key over the request's own signature
(:func:`lambgw.network.signing.trailer_to_sign`).  Until the trailer arrives the node
stores nothing; giving up drops the connection, and the node discards what it received.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet import tcp
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IConsumer
from twisted.python.failure import Failure
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from lambgw.network import signing, wire
from lambgw.network.errors import NetworkError, NetworkUnavailable
from lambgw.network.httpbody import LARGE_READ, reset_write_size, set_write_size
from lambgw.network.interface import IUpload, NewObject, ObjectInfo

#: Bytes of a streamed body waiting for the node's connection before the source is paused.
#: At Twisted's 64 KiB, each piece the spool hands over (up to 1 MiB) paused the client and
#: resumed it only once the piece had gone, a stop and a start of its connection per piece.
STREAM_BUFFER = 4 * 1024 * 1024
#: Bytes handed to the kernel per turn of the reactor (Twisted's 128 KiB: 8 turns per MiB).
STREAM_SEND = LARGE_READ


def _nothing() -> None:
    """Do nothing (the throttle before one is given)."""


def trailer_maker(
    key: Any,
    request_signature: bytes,
    new: NewObject,
    room: int,
    expect: Mapping[str, str] | None = None,
) -> Callable[[str], bytes]:
    """The trailer of a request signed ``request_signature``, for the object ``new``.

    Its description expects the digests ``expect`` (see :func:`wire.description_json`).
    Returns a function of the body's SHA-256 (hex, or ``UNSIGNED-PAYLOAD``) giving the
    trailer's ``room`` bytes.
    """
    description = wire.description_json(new, expect)

    def make(content_sha256: str) -> bytes:
        signature = signing.sign_trailer(key, request_signature, content_sha256, description)
        return wire.encode_trailer(wire.Trailer(content_sha256, description, signature), room)

    return make


@implementer(IBodyProducer, IUpload)
class StreamedUpload:
    """The body of a PUT to the node, written as the object's bytes come.

    The request is sent by the caller, which hands the Deferred of its answer to
    :meth:`answered`; the node's answer is turned into the stored object by ``parse``.
    """

    def __init__(
        self,
        key: Any,
        request_signature: bytes,
        size: int,
        room: int,
        expect: Mapping[str, str] | None = None,
    ) -> None:
        """Send ``size`` bytes, then a trailer of ``room`` bytes signed with ``key``.

        The trailer is bound to the request by its ``request_signature``; its description
        expects the digests ``expect``.
        """
        self.length = size + room
        self._room = room
        self._expect = expect
        self._key = key
        self._request_signature = request_signature
        self._consumer: IConsumer | None = None
        self._socket: Any = None
        self._producing: Deferred[None] | None = None
        self._early: list[bytes] = []
        self._finished = False
        self._failed = False
        self._paused = True
        self._pause: Callable[[], None] = _nothing
        self._resume: Callable[[], None] = _nothing
        self._request: Deferred[Any] | None = None
        self._outcome: ObjectInfo | Failure | None = None
        self._waiters: list[Deferred[ObjectInfo]] = []
        #: Called whenever bytes are written (the request's silence watch).
        self.progress: Callable[[], None] = _nothing
        #: While bytes are written into the socket directly: called when it can take more.
        self._direct_resume: Callable[[], None] | None = None
        self._direct_failed: Callable[[], None] | None = None
        self._direct: Deferred[tcp.Connection | None] | None = None

    def answered(self, request: Deferred[ObjectInfo]) -> None:
        """The Deferred of the request's outcome: the stored object, or why not."""
        self._request = request
        request.addBoth(self._settle)

    # -- IUpload -----------------------------------------------------------------------

    def throttle(self, pause: Callable[[], None], resume: Callable[[], None]) -> None:
        """Pause and resume the source with the connection to the node."""
        self._pause, self._resume = pause, resume
        if self._paused and not self._failed:
            pause()

    def write(self, data: bytes) -> None:
        """Send bytes of the object (kept until the connection is ready)."""
        if self._failed or self._finished or not data:
            return  # (an empty chunk would end the chunked body)
        if self._consumer is None:
            self._early.append(data)
            return
        self.progress()
        self._consumer.write(data)

    def finish(self, new: NewObject, content_sha256: str) -> Deferred[ObjectInfo]:
        """Send the signed trailer and wait for the node to store the object."""
        if not self._failed and not self._finished:
            make = trailer_maker(self._key, self._request_signature, new, self._room, self._expect)
            try:
                trailer = make(content_sha256)
            except ValueError as e:
                self.abort()
                return fail(NetworkError(f"the object cannot be described: {e}"))
            self.write(trailer)
            self._finished = True
            self._small_writes()
            if self._producing is not None:
                producing, self._producing = self._producing, None
                producing.callback(None)
        waiter: Deferred[ObjectInfo] = Deferred()
        if self._outcome is None:
            self._waiters.append(waiter)
        else:
            _fire(waiter, self._outcome)
        return waiter

    def direct(
        self, resumed: Callable[[], None], failed: Callable[[], None]
    ) -> Deferred[tcp.Connection | None]:
        """Fire, once the request is being sent, with its socket if bytes may go into it directly.

        That is when the node is reached over plain TCP.  From then on the caller writes
        the object's next bytes into the socket itself (after what this upload's transport
        still holds), reports them with :meth:`sent_directly`; ``resumed`` is called each
        time the transport is writable again, and ``failed`` if the upload fails, until
        :meth:`indirect`.  Fires with ``None`` (and nothing changes) over TLS, or once the
        upload has ended.
        """
        direct: Deferred[tcp.Connection | None] = Deferred()
        self._direct_resume = resumed
        self._direct_failed = failed
        self._direct = direct
        if self._consumer is not None:
            self._go_direct()
        return direct

    def sent_directly(self, count: int) -> None:
        """``count`` bytes of the object went into the socket without this upload."""
        # Twisted's consumer of the body counts the bytes it is to see: these it will not.
        self._consumer._length -= count  # type: ignore[union-attr]
        self.progress()

    def indirect(self) -> None:
        """Bytes come through :meth:`write` again (see :meth:`direct`)."""
        self._direct_resume = self._direct_failed = None

    def _go_direct(self) -> None:
        direct, self._direct = self._direct, None
        if direct is None:
            return
        under = getattr(self._consumer, "_consumer", None)
        if self._finished or self._failed or type(under) is not tcp.Client or under.TLS:
            self._direct_resume = self._direct_failed = None
            direct.callback(None)
        else:
            direct.callback(under)

    def abort(self) -> None:
        """Drop the request: the node stores nothing."""
        self._fail()
        if self._producing is not None:
            producing, self._producing = self._producing, None
            producing.errback(NetworkUnavailable("the upload was given up"))
        if self._request is not None and self._outcome is None:
            self._request.cancel()

    # -- IBodyProducer -----------------------------------------------------------------

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        """The connection is ready: send what came early, then go on as bytes come.

        Until the body is over, the connection buffers and sends in large pieces (the
        consumer is Twisted's length-enforcing wrapper of the connection).
        """
        self._consumer = consumer
        if not (self._finished or self._failed):
            under = getattr(consumer, "_consumer", consumer)
            self._socket = set_write_size(under, STREAM_BUFFER, STREAM_SEND)
        early, self._early = self._early, []
        for data in early:
            consumer.write(data)
        if self._finished:
            return succeed(None)
        self._producing = Deferred()
        self._set_paused(False)
        producing = self._producing
        self._go_direct()
        return producing

    def pauseProducing(self) -> None:
        """The connection is full."""
        self._set_paused(True)

    def resumeProducing(self) -> None:
        """The connection can take more."""
        self._set_paused(False)
        if self._direct_resume is not None:
            self._direct_resume()

    def stopProducing(self) -> None:
        """The connection is gone: the upload has failed."""
        self._producing = None
        self._fail()

    # -- state -------------------------------------------------------------------------

    def _set_paused(self, paused: bool) -> None:
        if paused == self._paused or self._failed:
            return
        self._paused = paused
        (self._pause if paused else self._resume)()

    def _small_writes(self) -> None:
        """The body is over: the connection goes back to Twisted's sizes (and to the pool)."""
        socket, self._socket = self._socket, None
        if socket is not None:
            reset_write_size(socket)

    def _fail(self) -> None:
        if self._failed:
            return
        self._failed = True
        failed, self._direct_failed = self._direct_failed, None
        self._direct_resume = None
        if self._direct is not None:
            self._go_direct()  # not yet sending: nothing goes direct
        elif failed is not None:
            failed()
        self._early = []
        self._small_writes()
        if self._paused:
            self._resume()

    def _settle(self, result: ObjectInfo | Failure) -> None:
        self._outcome = result
        if isinstance(result, Failure):
            self._fail()
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            _fire(waiter, result)


def _fire(waiter: Deferred[ObjectInfo], result: ObjectInfo | Failure) -> None:
    if isinstance(result, Failure):
        waiter.errback(result)
    else:
        waiter.callback(result)
