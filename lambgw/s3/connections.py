"""Bounds on the S3 API's connections: head time, body pace, and how many are open.

twisted.web's idle timeout alone lets a client hold a connection forever by sending one byte
now and then.  :class:`S3Channel` also closes a connection whose request head is not complete
``header_timeout`` seconds after its first byte (or after the connection opened), and one
whose body brings fewer than ``min_body_rate`` bytes a second over each ``header_timeout``
window; a window in which the gateway itself held the body back (its spool was behind) does
not count.  Either is answered ``400 RequestTimeout`` before the connection closes.

:class:`Connections` counts the open connections of a site.  At ``max_connections`` a new
connection is answered ``503 SlowDown`` at once and closed: S3 clients retry that answer
after a pause, and the connections being served are left alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attrs import define, frozen
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import _IdentityTransferDecoder

from lambgw.httpchannel import LeanChannel
from lambgw.protocol.s3xml import error_document

log = Logger()

#: Seconds a request's head may take, and the window over which a body's rate is measured.
DEFAULT_HEADER_TIMEOUT = 30.0
#: The least bytes a second a request body must bring (0: no minimum).
DEFAULT_MIN_BODY_RATE = 1024
#: The most connections open at once on the S3 API (0: no cap).
DEFAULT_MAX_CONNECTIONS = 1024
#: Seconds a refused connection is kept to let its client read the answer.
REFUSAL_LINGER = 2.0

#: Why a connection was closed by these bounds (the label of the metric that counts them).
HEAD_TIMEOUT = "header_timeout"
SLOW_BODY = "slow_body"
AT_CAP = "at_cap"


@frozen
class ConnectionLimits:
    """The bounds every connection to the S3 API is held to."""

    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    min_body_rate: int = DEFAULT_MIN_BODY_RATE
    max_connections: int = DEFAULT_MAX_CONNECTIONS


def _answer(status: bytes, code: str, message: str, extra: bytes = b"") -> bytes:
    """A whole HTTP response with an S3 error document, that closes the connection."""
    body = error_document(code, message, "", "-")
    head = (
        b"HTTP/1.1 " + status + b"\r\nContent-Type: application/xml\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n" % len(body)
    )
    return head + extra + b"\r\n" + body


#: The answer to a request too slow to arrive.
REQUEST_TIMEOUT = _answer(
    b"400 Bad Request",
    "RequestTimeout",
    "Your socket connection to the server was not read from or written to within the "
    "timeout period.",
)
#: The answer to a connection over the cap.
SLOW_DOWN = _answer(
    b"503 Service Unavailable",
    "SlowDown",
    "The gateway has too many connections open; reduce your request rate.",
    b"Retry-After: 1\r\n",
)


@define
class Connections:
    """The open connections of a site, held to ``limits``.

    ``closed_by`` is told each connection these bounds close, with the reason (a metric);
    ``changed`` the number open, whenever it changes.
    """

    limits: ConnectionLimits
    closed_by: Callable[[str], None] = lambda reason: None
    #: Told the number open each time it changes (a worker publishes its load with it).
    changed: Callable[[int], None] = lambda count: None
    _open: int = 0
    _at_cap: bool = False

    @property
    def open(self) -> int:
        """Connections open now."""
        return self._open

    def full(self) -> bool:
        """Whether a new connection would be over the cap (warned once each time it is reached)."""
        cap = self.limits.max_connections
        full = bool(cap) and self._open >= cap
        if full and not self._at_cap:
            log.warn(
                "{count} connections open, the most allowed: new ones are answered "
                "503 SlowDown until some close",
                count=self._open,
            )
        self._at_cap = full
        return full

    def opened(self) -> None:
        """Count a new connection."""
        self._open += 1
        self.changed(self._open)

    def closed(self) -> None:
        """Count a connection gone."""
        self._open -= 1
        self.changed(self._open)


class Refusal(Protocol):
    """A connection over the cap: answered ``503 SlowDown`` and closed.

    The write side closes at once; what the client sends is read and dropped for a moment
    (so that the answer is not lost to a reset), then the connection is cut.
    """

    def __init__(self, clock: Any) -> None:
        self._clock = clock
        self._linger: IDelayedCall | None = None

    def connectionMade(self) -> None:
        """Answer, and close soon."""
        transport: Any = self.transport
        transport.write(SLOW_DOWN)
        # TCP closes its write side and goes on reading; a transport that cannot just closes.
        getattr(transport, "loseWriteConnection", transport.loseConnection)()
        self._linger = self._clock.callLater(REFUSAL_LINGER, transport.abortConnection)

    def dataReceived(self, data: bytes) -> None:
        """Drop the request."""

    def connectionLost(self, reason: Any = None) -> None:
        """Stop waiting to cut the connection."""
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        self._linger = None


class S3Channel(LeanChannel):
    """An HTTP channel that bounds the time of request heads and the pace of request bodies.

    The site sets ``connections`` and ``clock`` (its reactor) when it builds the channel.  A
    request costs no timer of its own: one timer per connection looks at the head in
    progress whenever it could be late, and stops between requests.
    """

    connections: Connections | None = None
    clock: Any = None
    #: When the request head being received began; None between requests.
    _head_since: float | None = None
    _head_timer: IDelayedCall | None = None
    _body_call: IDelayedCall | None = None
    _in_body = False
    _body_bytes = 0
    _body_held = False

    @property
    def _limits(self) -> ConnectionLimits:
        return self.connections.limits if self.connections is not None else ConnectionLimits()

    def connectionMade(self) -> None:
        """Count the connection and start the wait for a request head."""
        super().connectionMade()
        if self.connections is not None:
            self.connections.opened()
        self._head_begins()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Stop the timers and count the connection gone."""
        self._head_since = None
        if self._head_timer is not None and self._head_timer.active():
            self._head_timer.cancel()
        self._head_timer = None
        self._cancel_body()
        if self.connections is not None:
            self.connections.closed()
        super().connectionLost(reason)

    def dataReceived(self, data: bytes) -> None:
        """The first byte of a new request starts the wait for its head.

        A body still coming in when ``data`` is taken is watched from then on: one that
        came whole with its head (most small uploads) costs no timer.
        """
        if self._in_body:
            self._body_bytes += len(data)
        elif self._head_since is None and not self._handlingRequest:
            self._head_begins()
        super().dataReceived(data)
        if self._in_body and self._body_call is None:
            self._body_call = self.clock.callLater(self._limits.header_timeout, self._check_body)

    def allHeadersReceived(self) -> None:
        """The head is in: watch the body's pace, if there is a body."""
        self._head_since = None
        super().allHeadersReceived()
        if self.length != 0 and self._limits.min_body_rate and not self._handlingRequest:
            self._in_body = True
            self._body_bytes = 0

    def allContentReceived(self) -> None:
        """The body is in: stop watching it."""
        self._cancel_body()
        super().allContentReceived()

    def hold_body(self) -> None:
        """Read no more of the body until :meth:`release_body` (the spool is behind)."""
        self._body_held = True
        self.transport.pauseProducing()  # type: ignore[union-attr]

    def release_body(self) -> None:
        """Read the body again."""
        self._body_held = False
        # The window in which the gateway held the body back is not counted: a new one begins.
        self._body_bytes = 0
        if self._body_call is not None and self._body_call.active():
            self._body_call.reset(self._limits.header_timeout)
        self.transport.resumeProducing()  # type: ignore[union-attr]

    def body_moved(self, count: int) -> None:
        """``count`` bytes of the body went by without being read here (spliced on)."""
        self.resetTimeout()
        if self._in_body:
            self._body_bytes += count
            if self._body_call is None:
                self._body_call = self.clock.callLater(
                    self._limits.header_timeout, self._check_body
                )

    def body_ended(self) -> None:
        """The body, the rest of which went by (:meth:`body_moved`), is in: handle the request.

        Only for a body of known length, whose remaining bytes were all moved.
        """
        decoder = self._transferDecoder
        assert isinstance(decoder, _IdentityTransferDecoder)
        finish = decoder.finishCallback
        decoder.dataCallback = decoder.finishCallback = None
        decoder.contentLength = 0
        finish(b"")

    def _head_begins(self) -> None:
        self._head_since = self.clock.seconds()
        if self._head_timer is None:
            self._head_timer = self.clock.callLater(self._limits.header_timeout, self._check_head)

    def _check_head(self) -> None:
        """Close the connection if its head in progress is late; else look again later."""
        self._head_timer = None
        if self._head_since is None:
            return  # between requests: the next one's first byte sets the timer again
        left = self._head_since + self._limits.header_timeout - self.clock.seconds()
        if left > 0:
            self._head_timer = self.clock.callLater(left, self._check_head)
        else:
            self._close(HEAD_TIMEOUT)

    def _cancel_body(self) -> None:
        self._in_body = False
        if self._body_call is not None and self._body_call.active():
            self._body_call.cancel()
        self._body_call = None

    def _check_body(self) -> None:
        limits = self._limits
        self._body_call = None
        if not self._body_held and self._body_bytes < limits.min_body_rate * limits.header_timeout:
            self._close(SLOW_BODY)
            return
        self._body_bytes = 0
        self._body_call = self.clock.callLater(limits.header_timeout, self._check_body)

    def _close(self, reason: str) -> None:
        """Answer RequestTimeout (unless an answer has begun) and close the connection."""
        self._cancel_body()
        if self.connections is not None:
            self.connections.closed_by(reason)
        transport: Any = self.transport
        if not any(getattr(r, "startedWriting", False) for r in self.requests):
            transport.write(REQUEST_TIMEOUT)
        transport.loseConnection()
        self._abortingCall = self.clock.callLater(self.abortTimeout, self.forceAbortClient)
