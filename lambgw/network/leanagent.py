"""An HTTP/1.1 agent for the node's small requests: one write out, one parse of the answer head.

Twisted's ``Agent`` builds a request object, writes its head through ``Headers``, parses
the answer line by line with a ``LineReceiver``, routes the body through a transfer decoder
and a state machine, and wraps each reused connection in a retrying proxy: some hundred
Python calls a request, as much as the rest of the gateway's work on a small GET.  The
requests the network client sends with a body held in memory (or none) are all alike: a
few headers, and an answer that gives its length (or comes in chunks).  :class:`LeanAgent`
writes such a request in one piece and parses its answer head in one pass; it hands every
other request (a streamed upload) to the agent it wraps.

Its answers are ``IResponse`` providers, so treq reads them as it reads any other.  An
answer whose body has arrived with its head (a small object, a JSON answer, an error) is
kept whole and its connection goes back to the pool at once.  A larger body waits in the
kernel until the response's reader asks for it (``deliverBody``), then streams with the
connection's backpressure; the reader finds the TCP connection under the transport it is
given (``_producer``), which the download code splices from.  Connections are kept alive
and reused most recent first; those idle for the pool's timeout are closed by one timer.
A GET, HEAD or DELETE that a reused connection loses before any byte of its answer (the
node closed it meanwhile) is sent once more on a new connection.

A request leaves when it is made, and what the gateway writes on handling an answer (the
answers to its clients that it completes) leaves once the answer is handled, both without
the poller (:mod:`lambgw.heldwrites`) and without waiting for the end of the reactor's
turn: a busy turn lasts tens of milliseconds, and over a far node a request held to its
end, or an answer held behind the rest of it, adds that to a round trip.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IDelayedCall, IProtocol, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from twisted.web.client import URI, ResponseDone, ResponseFailed
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IAgent, IBodyProducer, IResponse
from zope.interface import implementer

from lambgw.heldwrites import hold_writes, send_all, send_now
from lambgw.network.httpbody import BytesProducer

#: The largest answer head read (status line and headers).
MAX_HEAD = 64 * 1024
#: The most header lines an answer may have.
MAX_HEADER_LINES = 100
#: Body bytes read ahead of the response's reader; beyond this the connection waits.
MAX_AHEAD = 256 * 1024
#: The longest line of a chunked body's framing (a chunk's size, a trailer line).
MAX_CHUNK_LINE = 4096
#: A chunk's size: hexadecimal digits.
_HEX = re.compile(rb"[0-9A-Fa-f]{1,15}")
#: Methods whose request is sent again when a reused connection drops before any answer.
RETRIED = frozenset({b"GET", b"HEAD", b"DELETE"})
#: Answers with no body, whatever their headers say.
_NO_BODY = frozenset({204, 304})


class _StaleConnection(Exception):
    """A reused connection closed before any byte of the answer came."""


class _ProtocolError(Exception):
    """The node's answer is not HTTP/1.1 as this agent reads it."""


@implementer(IResponse)
class LeanResponse:
    """An answer of the node: its status, headers and body (kept whole, or streamed)."""

    version = (b"HTTP", 1, 1)
    request = None
    previousResponse = None

    def __init__(
        self,
        code: int,
        phrase: bytes,
        raw: list[tuple[bytes, bytes]],
        length: int | str,
        connection: LeanConnection | None,
        body: bytes | None,
    ) -> None:
        """An answer with ``raw`` headers; ``body`` if whole, else read from ``connection``."""
        self.code = code
        self.phrase = phrase
        self.length = length
        self._raw = raw
        self._headers: Headers | None = None
        self._connection = connection
        self._body = body

    @property
    def headers(self) -> Headers:
        """The answer's headers (made when first asked for)."""
        if self._headers is None:
            headers = Headers()
            for name, value in self._raw:
                headers.addRawHeader(name, value)
            self._headers = headers
        return self._headers

    def header(self, name: bytes) -> bytes | None:
        """The first value of the header ``name`` (lower case), without making ``headers``."""
        for key, value in self._raw:
            if key == name:
                return value
        return None

    def deliverBody(self, protocol: IProtocol) -> None:
        """Give the body to ``protocol``, then end it with ``ResponseDone`` (or a failure)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.deliver(protocol)
            return
        finished: Any = _Finished()
        protocol.makeConnection(finished)
        if self._body:
            protocol.dataReceived(self._body)
        self._body = None
        protocol.connectionLost(Failure(ResponseDone("the body was read whole")))

    def setPreviousResponse(self, response: IResponse) -> None:
        """Redirects are not followed: there is no previous response."""


class _Finished:
    """The transport of a body already read whole: nothing to pause or stop."""

    def pauseProducing(self) -> None:
        """Nothing is read any more."""

    def resumeProducing(self) -> None:
        """Nothing is read any more."""

    def stopProducing(self) -> None:
        """Nothing is read any more."""


class _BodyTransport:
    """What a body's reader is given as its transport: the node's connection, paused or dropped.

    ``_producer`` is the connection's own transport (as Twisted's proxy names it), where
    the download code finds the socket to splice from.
    """

    def __init__(self, connection: LeanConnection) -> None:
        self._connection = connection
        self._producer = connection.transport

    def pauseProducing(self) -> None:
        """The reader is full: stop reading the socket."""
        self._connection.reader_paused = True
        self._connection.update_reading()

    def resumeProducing(self) -> None:
        """Read again."""
        self._connection.reader_paused = False
        self._connection.update_reading()

    def stopProducing(self) -> None:
        """The reader gives up: the connection, mid-body, is dropped."""
        self._connection.drop()


class _Length:
    """A body of known length."""

    def __init__(self, left: int) -> None:
        self.left = left

    @property
    def done(self) -> bool:
        """Whether the whole body has come."""
        return self.left == 0

    def feed(self, data: bytes) -> tuple[bytes, bytes]:
        """The body's bytes in ``data``, and what came after the body."""
        piece = data[: self.left]
        self.left -= len(piece)
        return piece, data[len(piece) :]


class _Chunked:
    """A chunked body (RFC 9112, section 7.1): chunk extensions and trailers are skipped."""

    def __init__(self) -> None:
        self._buffer = b""
        self._left = 0
        self._state = "size"
        self._trailer_lines = 0
        self.done = False

    def feed(self, data: bytes) -> tuple[bytes, bytes]:
        """The body's bytes in ``data``, and what came after the body."""
        buffer, pos, out = self._buffer + data, 0, []
        while not self.done:
            if self._state == "data":
                take = min(self._left, len(buffer) - pos)
                out.append(buffer[pos : pos + take])
                pos += take
                self._left -= take
                if self._left:
                    break
                self._state = "end"
            elif self._state == "end":
                if len(buffer) - pos < 2:
                    break
                if buffer[pos : pos + 2] != b"\r\n":
                    raise _ProtocolError("a chunk does not end with CRLF")
                pos += 2
                self._state = "size"
            else:
                end = buffer.find(b"\r\n", pos)
                if end < 0:
                    if len(buffer) - pos > MAX_CHUNK_LINE:
                        raise _ProtocolError("a chunk's size line is too long")
                    break
                line, pos = buffer[pos:end], end + 2
                if self._state == "trailer":
                    self._trailer_lines += 1
                    if self._trailer_lines > MAX_HEADER_LINES:
                        raise _ProtocolError("the answer's trailer is too long")
                    self.done = not line
                    continue
                size = line.partition(b";")[0].strip()
                if _HEX.fullmatch(size) is None:
                    raise _ProtocolError(f"a malformed chunk size: {line[:40]!r}")
                self._left = int(size, 16)
                self._state = "data" if self._left else "trailer"
        self._buffer = b"" if self.done else buffer[pos:]
        return b"".join(out), buffer[pos:] if self.done else b""


class LeanConnection(Protocol):
    """One connection to the node: a request at a time, its answer parsed as it comes."""

    #: The TCP (or TLS) transport, once connected.
    transport: Any

    def __init__(self, agent: LeanAgent) -> None:
        self._agent = agent
        self._buffer = b""
        self._waiting: Deferred[LeanResponse] | None = None
        self._head_only = False
        self._got_any = False
        #: The body being read; ``None`` while reading the head, or when idle.
        self._decoder: _Length | _Chunked | None = None
        self._reader: IProtocol | None = None
        self._ahead: list[bytes] = []
        self._ahead_size = 0
        #: Whether reading waits for the body's reader to come, or for it to resume.
        self._holding = False
        self.reader_paused = False
        self._keep_alive = True
        self._lost = False
        #: Whether the connection has carried an answer (then it may have gone stale).
        self.reused = False
        #: Since when the connection is idle in the pool.
        self.idle_since = 0.0

    # -- the agent's side --------------------------------------------------------------

    def send(self, data: bytes, head_only: bool) -> Deferred[LeanResponse]:
        """Send a request (head and body, ``data``) at once; fire with its answer."""
        self._waiting = Deferred(self._cancel)
        self._head_only = head_only
        self._got_any = False
        self._buffer = b""
        self.transport.write(data)
        send_now(self.transport)
        return self._waiting

    def _cancel(self, waiting: Deferred[LeanResponse]) -> None:
        """The request is given up (the Deferred fails as cancelled): drop the connection."""
        self._waiting = None
        self.drop()

    def deliver(self, reader: IProtocol) -> None:
        """Stream the rest of the body to ``reader`` (see :meth:`LeanResponse.deliverBody`)."""
        self._reader = reader
        transport: Any = _BodyTransport(self)
        reader.makeConnection(transport)
        ahead, self._ahead, self._ahead_size = self._ahead, [], 0
        for piece in ahead:
            if self._reader is reader:
                reader.dataReceived(piece)
        if self._reader is not reader or self._decoder is None:
            return
        if self._decoder.done:
            self._body_ended()
        elif self._lost:
            self._body_cut()
        elif self._holding:
            self._holding = False
            self.update_reading()

    def update_reading(self) -> None:
        """Read the socket unless the body waits for its reader, or the reader is full."""
        if self._lost:
            return
        if self._holding or self.reader_paused:
            self.transport.pauseProducing()
        else:
            self.transport.resumeProducing()

    def drop(self) -> None:
        """Close the connection at once (a request given up, a body not wanted)."""
        self._keep_alive = False
        if self.transport is not None and not self._lost:
            self.transport.abortConnection()

    # -- the node's side ---------------------------------------------------------------

    def connectionMade(self) -> None:
        """Requests are sent without the poller (see :mod:`lambgw.heldwrites`)."""
        hold_writes(self.transport)

    def dataReceived(self, data: bytes) -> None:
        """Parse the answer head, then pass the body on."""
        self._got_any = True
        try:
            if self._decoder is not None:
                self._body(data)
                return
            if self._waiting is None:
                self.drop()  # bytes that answer no request
                return
            self._buffer += data
            response = self._parse_head()
        except _ProtocolError as e:
            self._fail(Failure(ResponseFailed([Failure(e)])))
            self._body_cut()
            self.drop()
            return
        if response is not None:
            waiting, self._waiting = self._waiting, None
            waiting.callback(response)
            send_all()  # what handling the answer wrote

    def _parse_head(self) -> LeanResponse | None:
        """The answer, once its head is in (``None`` before); its body taken as far as it came."""
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_HEAD:
                raise _ProtocolError("the answer's head is too large")
            return None
        lines = self._buffer[:end].split(b"\r\n")
        rest = self._buffer[end + 4 :]
        self._buffer = b""
        version, _, status = lines[0].partition(b" ")
        code_text, _, phrase = status.partition(b" ")
        if version not in (b"HTTP/1.1", b"HTTP/1.0") or not (
            len(code_text) == 3 and code_text.isdigit()
        ):
            raise _ProtocolError(f"not an HTTP/1.1 status line: {lines[0][:80]!r}")
        code = int(code_text)
        if code < 200:  # an interim answer: the real one follows
            self._buffer = rest
            return self._parse_head() if rest else None
        if len(lines) > MAX_HEADER_LINES:
            raise _ProtocolError("the answer has too many headers")
        raw = []
        declared: int | None = None
        chunked = False
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not name or name != name.strip():
                raise _ProtocolError(f"a malformed header line: {line[:80]!r}")
            name, value = name.lower(), value.strip()
            if name == b"content-length":
                if not value.isdigit() or declared not in (None, int(value)):
                    raise _ProtocolError("the answer's Content-Length is malformed")
                declared = int(value)
            elif name == b"transfer-encoding":
                if value.lower() != b"chunked":
                    raise _ProtocolError(f"an answer encoded as {value[:40]!r}")
                chunked = True
            elif name == b"connection" and value.lower() == b"close":
                self._keep_alive = False
            raw.append((name, value))
        if version != b"HTTP/1.1":
            self._keep_alive = False
        decoder: _Length | _Chunked
        if self._head_only or code in _NO_BODY:
            decoder = _Length(0)
        elif chunked and declared is None:
            decoder = _Chunked()
        elif declared is not None and not chunked:
            decoder = _Length(declared)
        else:
            raise _ProtocolError("the answer's length is not given, or given twice")
        self._decoder = decoder
        piece, extra = decoder.feed(rest)
        if extra:
            raise _ProtocolError("bytes after the answer")
        if decoder.done:
            self._release()
            return LeanResponse(code, phrase, raw, len(piece), None, piece)
        self._hold(piece)
        length = decoder.left + len(piece) if isinstance(decoder, _Length) else UNKNOWN_LENGTH
        return LeanResponse(code, phrase, raw, length, self, None)

    def _hold(self, piece: bytes) -> None:
        """Keep body bytes until the reader comes; stop reading when too many wait."""
        if piece:
            self._ahead.append(piece)
            self._ahead_size += len(piece)
            if self._ahead_size > MAX_AHEAD and not self._holding:
                self._holding = True
                self.update_reading()

    def _body(self, data: bytes) -> None:
        assert self._decoder is not None
        piece, extra = self._decoder.feed(data)
        if extra:
            raise _ProtocolError("bytes after the answer")
        if self._reader is None:
            self._hold(piece)
            return
        if piece:
            self._reader.dataReceived(piece)
        if self._decoder is not None and self._decoder.done and self._reader is not None:
            self._body_ended()

    def _body_ended(self) -> None:
        reader, self._reader = self._reader, None
        self._release()
        if reader is not None:
            reader.connectionLost(Failure(ResponseDone("the body is complete")))

    def _body_cut(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reason = Failure(ConnectionDone("the node closed the connection mid-body"))
            reader.connectionLost(Failure(ResponseFailed([reason])))

    def _release(self) -> None:
        """The answer is over: back to the pool, if the connection may carry another."""
        self._decoder = None
        self.reused = True
        if self._keep_alive and not self._lost:
            # A reader may have paused the connection as the body's last bytes came.
            self._holding = self.reader_paused = False
            self.update_reading()
            self._agent.release(self)
        else:
            self.drop()

    def _fail(self, reason: Failure) -> None:
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.errback(reason)

    def connectionLost(self, reason: Failure = ConnectionDone) -> None:  # type: ignore[assignment]
        """The connection is gone: fail what was waiting on it."""
        self._lost = True
        self._agent.forget(self)
        if self._waiting is not None:
            stale = (
                self.reused and not self._got_any and reason.check(ConnectionDone, ConnectionLost)
            )
            self._fail(Failure(_StaleConnection()) if stale else Failure(ResponseFailed([reason])))
        elif self._decoder is not None and self._reader is not None:
            self._body_cut()
        # A reader still to come hears of the cut in ``deliver``.


@implementer(IAgent)
class LeanAgent:
    """Sends requests with a body in memory (or none) to one node; others to ``fallback``.

    ``endpoint`` reaches the node at ``base_url``; ``host`` is the ``Host`` header sent.
    Up to ``max_idle`` idle connections are kept, each for ``idle_timeout`` seconds.
    """

    def __init__(
        self,
        clock: Any,
        base_url: str,
        endpoint: IStreamClientEndpoint,
        fallback: IAgent,
        idle_timeout: float,
        max_idle: int,
    ) -> None:
        """Reach the node through ``endpoint``; ``clock`` runs the idle timer."""
        self._clock = clock
        base = URI.fromBytes(base_url.rstrip("/").encode("ascii"))
        #: URLs starting with this are sent here; what follows the authority is the target.
        self._under = base_url.rstrip("/").encode("ascii") + b"/"
        self._netloc_end = len(base.scheme) + 3 + len(base.netloc)
        self._netloc = base.netloc
        self._endpoint = endpoint
        self._fallback = fallback
        self._idle_timeout = idle_timeout
        self._max_idle = max_idle
        self._idle: list[LeanConnection] = []
        self._sweep: IDelayedCall | None = None
        self._factory = Factory.forProtocol(lambda: LeanConnection(self))
        self._factory.noisy = False

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None = None,
        bodyProducer: IBodyProducer | None = None,
    ) -> Deferred[IResponse]:
        """Send the request; a streamed body, or a URL elsewhere, goes to the fallback agent."""
        if not uri.startswith(self._under) or not (
            bodyProducer is None or isinstance(bodyProducer, BytesProducer)
        ):
            return self._fallback.request(method, uri, headers, bodyProducer)
        body = b"" if bodyProducer is None else bodyProducer.data
        headers = headers or Headers()
        lines = [b"%s %s HTTP/1.1" % (method, uri[self._netloc_end :])]
        if not headers.hasHeader(b"host"):
            lines.append(b"host: %s" % self._netloc)
        # ``Headers`` replaces line breaks in values: no value can end the head early.
        for name, values in headers.getAllRawHeaders():
            for value in values:
                lines.append(b"%s: %s" % (name, value))
        if body or method in (b"PUT", b"POST"):
            lines.append(b"content-length: %d" % len(body))
        data = b"\r\n".join(lines) + b"\r\n\r\n" + body
        return Deferred.fromCoroutine(self._send(method, data))

    async def _send(self, method: bytes, data: bytes) -> IResponse:
        for attempt in (1, 2):
            connection = self._take() if attempt == 1 else None
            if connection is None:
                connected: Any = await self._endpoint.connect(self._factory)
                connection = connected
            try:
                return await connection.send(data, method == b"HEAD")
            except _StaleConnection:
                if attempt == 2 or method not in RETRIED:
                    raise ResponseFailed(
                        [Failure(ConnectionDone("the node closed the connection"))]
                    ) from None
        raise AssertionError("unreachable")

    def _take(self) -> LeanConnection | None:
        idle = self._idle
        return idle.pop() if idle else None

    def release(self, connection: LeanConnection) -> None:
        """Keep a connection that has answered, closing the oldest if too many are kept."""
        if len(self._idle) >= self._max_idle:
            self._idle.pop(0).drop()
        connection.idle_since = self._clock.seconds()
        self._idle.append(connection)
        if self._sweep is None:
            self._sweep = self._clock.callLater(self._idle_timeout, self._expire)

    def forget(self, connection: LeanConnection) -> None:
        """A connection is gone: it is no longer kept."""
        if connection in self._idle:
            self._idle.remove(connection)

    def _expire(self) -> None:
        """Close the connections idle for the timeout; look again when the next one will be."""
        self._sweep = None
        now = self._clock.seconds()
        idle = self._idle
        while idle and now - idle[0].idle_since >= self._idle_timeout:
            idle.pop(0).drop()
        if idle:
            wait = idle[0].idle_since + self._idle_timeout - now
            self._sweep = self._clock.callLater(wait, self._expire)

    def close(self) -> Deferred[None]:
        """Close every idle connection (the fallback agent's too) and stop the timer."""
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.drop()
        close = getattr(self._fallback, "close", None)
        return succeed(None) if close is None else close()
