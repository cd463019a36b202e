"""The twisted.web request of the S3 API: checked at its headers, its body spooled as it comes.

twisted.web reads a whole body before the resource renders.  This request decides what to do
with the body as soon as the headers are in (``gotLength``): it parses the target, checks the
signature and, for uploads, the size against the order's free space.  A refused request's body
is never stored: with ``Expect: 100-continue`` the error goes back at once and the connection
closes; otherwise the body is read and dropped, then the error is rendered.
"""

from __future__ import annotations

import os
import random
import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import unquote_to_bytes

from attrs import define, field, frozen
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server

from lambgw.httpchannel import LeanRequest, header_name
from lambgw.protocol.errors import S3Error
from lambgw.protocol.s3xml import http_date
from lambgw.s3.connections import AT_CAP, ConnectionLimits, Connections, Refusal, S3Channel
from lambgw.s3.spool import SpooledFile

log = Logger()

#: A connection that sends nothing for this long (between requests, or in the middle of
#: headers or a body) is closed.
IDLE_TIMEOUT = 120

#: The largest non-upload body accepted (XML documents such as DeleteObjects).
MAX_XML_BODY = 4 * 1024 * 1024
#: A ``%`` not followed by two hex digits.
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
#: The ``Date`` header of every response, under twisted.web's name for it.
_DATE = header_name(b"Date")


@frozen
class Target:
    """What a request addresses: a bucket and a key, both decoded, either may be empty."""

    bucket: str
    key: str
    raw_path: str
    raw_query: str
    query: Mapping[str, str]


def parse_target(raw_uri: bytes) -> Target:
    """Split a request URI into bucket, key and query, as S3 path-style addressing does.

    The key keeps every ``/`` (``//``, a trailing one) and ``..``: nothing is normalized.
    Fails with ``InvalidURI`` for bad percent-encoding or bytes that are not UTF-8.
    """
    raw_path_b, _, raw_query_b = raw_uri.partition(b"?")
    try:
        raw_path = raw_path_b.decode("ascii")
        raw_query = raw_query_b.decode("ascii")
        # Most paths have nothing percent-encoded: they are their own decoding.
        path = unquote_to_bytes(raw_path).decode("utf-8") if "%" in raw_path else raw_path
    except UnicodeDecodeError:
        raise S3Error("InvalidURI", 400, "Couldn't parse the specified URI.") from None
    if not path.startswith("/"):
        raise S3Error("InvalidURI", 400, "Couldn't parse the specified URI.")
    if _BAD_PERCENT.search(raw_path) or _BAD_PERCENT.search(raw_query):
        raise S3Error("InvalidURI", 400, "Couldn't parse the specified URI.")
    bucket, _, key = path[1:].partition("/")
    query: dict[str, str] = {}
    for item in raw_query.split("&"):
        if not item:
            continue
        name, _, value = item.partition("=")
        try:
            query[unquote_to_bytes(name).decode("utf-8")] = unquote_to_bytes(
                value.replace("+", " ")
            ).decode("utf-8")
        except UnicodeDecodeError:
            raise S3Error("InvalidURI", 400, "Couldn't parse the specified URI.") from None
    return Target(bucket, key, raw_path, raw_query, query)


class MemoryBody:
    """A small body kept in memory, refused past ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._parts: list[bytes] = []
        self._size = 0
        self._error: S3Error | None = None

    def write(self, data: bytes) -> None:
        """Keep ``data`` unless the body has grown too large."""
        self._size += len(data)
        if self._size > self._limit:
            self._parts = []
            self._error = S3Error("MaxMessageLengthExceeded", 400, "Your request was too big.")
        elif self._error is None:
            self._parts.append(data)

    def finish(self) -> Deferred[bytes]:
        """Fire with the whole body."""
        if self._error is not None:
            return fail(self._error)
        return succeed(b"".join(self._parts))

    def tell(self) -> int:
        """Bytes received so far."""
        return self._size

    def seek(self, offset: int, whence: int = 0) -> None:
        """Do nothing; the body is taken with :meth:`finish`."""

    def read(self, size: int = -1) -> bytes:
        """Nothing: the body is not parsed as a form."""
        return b""

    def close(self) -> None:
        """Forget the body."""
        self._parts = []


class DiscardBody(MemoryBody):
    """The body of a refused request: counted and dropped."""

    def __init__(self) -> None:
        super().__init__(0)

    def write(self, data: bytes) -> None:
        """Drop ``data``."""
        self._size += len(data)


class BodySink(Protocol):
    """What the request writes its body into (a SpoolBody, MemoryBody or DiscardBody)."""

    def write(self, data: bytes) -> None:
        """Take the next piece of the body."""

    def finish(self) -> Deferred[Any]:
        """Fire with the whole body once it is in."""

    def tell(self) -> int:
        """Bytes received so far."""

    def seek(self, offset: int, whence: int = 0) -> None:
        """Ignored (twisted.web rewinds its content)."""

    def read(self, size: int = -1) -> bytes:
        """Nothing (the body is not parsed as a form)."""

    def close(self) -> None:
        """Drop what is not finished."""


@define
class RequestState:
    """What the S3 layer learned of a request at its headers, and its body once read."""

    request_id: str
    started: float
    target: Target | None = None
    access_key: str | None = None
    auth: Any = None
    error: S3Error | None = None
    #: The handler of the operation the request asked for, once it is chosen.
    handler: Callable[..., Any] | None = None
    #: Set once the whole body is in: a SpooledFile, bytes, or the S3Error it earned.
    received: SpooledFile | bytes | S3Error | None = None
    responded: bool = False
    cleanups: list[Callable[[], None]] = field(factory=list)
    #: Whether the body failed on the gateway's side after the headers (that is logged).
    delivery_failed: bool = False
    #: The headers, lower-case names and text values, once read (``front.header_map``).
    headers: dict[str, list[str]] | None = None

    def spooled(self) -> SpooledFile:
        """The spooled body, or raise the error the body earned."""
        if isinstance(self.received, S3Error):
            raise self.received
        if not isinstance(self.received, SpooledFile):
            raise S3Error.of("InvalidRequest", "This request needs a body.")
        return self.received

    def xml(self) -> bytes:
        """The in-memory body, or raise the error it earned."""
        if isinstance(self.received, S3Error):
            raise self.received
        if isinstance(self.received, SpooledFile):
            raise S3Error.of("InvalidRequest", "Unexpected body.")
        return self.received or b""


#: Request ids: drawn from a generator seeded once from the system's, not one system call
#: each (an id names a request in logs; it guards nothing).
_ids = random.Random(secrets.randbits(128))
os.register_at_fork(after_in_child=lambda: _ids.seed(secrets.randbits(128)))


def new_request_id() -> str:
    """A request id as S3 prints them: 16 upper-case hex digits."""
    return f"{_ids.getrandbits(64):016X}"


class IFront(Protocol):
    """What the request asks of the S3 layer when its headers are in."""

    def begin(self, request: S3Request, method: bytes, uri: bytes, length: int | None) -> None:
        """Set ``request.s3`` and ``request.content`` from the request's headers."""


class S3Request(LeanRequest, server.Request):
    """A twisted.web request whose body is checked, spooled and hashed as it arrives."""

    _parsePOSTFormSubmission = False
    s3: RequestState
    content: BodySink  # type: ignore[assignment]
    channel: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Calls handing body bytes to the kernel still in flight, and who waits for none.
        self._kernel_sends = 0
        self._settled: list[Callable[[], object]] = []
        #: Who is told when the request is over (see :meth:`when_over`).
        self._over: list[Callable[[Failure | None], object]] = []
        #: Called with the request when it is answered at its headers, before the answer is
        #: written (given the request, an observer holds none: no cycle through this list).
        self.answered_early: list[Callable[[S3Request], None]] = []

    def gotLength(self, length: int | None) -> None:
        """Decide where the body goes, now that the headers are known."""
        self.s3 = RequestState(request_id=new_request_id(), started=time.monotonic())
        front: IFront = self.channel.site.front
        front.begin(self, self.channel._command, self.channel._path, length)

    def handleContentChunk(self, data: bytes) -> None:
        """Pass a piece of the body on."""
        self.content.write(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        """Render once the body is spooled (or at once, if the answer was already sent)."""
        if self.s3.responded:
            return
        d: Deferred[Any] = self.content.finish()

        def received(result: object) -> None:
            if isinstance(result, SpooledFile) and result.data is None:
                self.s3.cleanups.append(result.discard)
            if hasattr(result, "value") and isinstance(result.value, S3Error):
                self.s3.received = result.value
            elif isinstance(result, SpooledFile | bytes):
                self.s3.received = result
            else:
                if isinstance(result, Failure):
                    where = path.partition(b"?")[0]  # the query may hold credentials
                    log.failure("The body of {path!r} could not be stored", result, path=where)
                self.s3.received = S3Error.of("InternalError", "The body could not be stored.")
            if self.channel is not None:
                self._render(command, path, version)
            else:
                self.run_cleanups()  # the client left while its body was being finished

        d.addBoth(received)

    def _render(self, command: bytes, path: bytes, version: bytes) -> None:
        """Render the request with the site's one resource.

        What ``twisted.web`` does first is not needed: the S3 layer parses the target itself
        (no ``args``), and forms as they stream; the site has a single leaf resource.
        """
        self.method, self.uri, self.clientproto = command, path, version
        self.path = path.partition(b"?")[0]
        self.site = self.channel.site
        self.responseHeaders._rawHeaders[_DATE] = [http_date(time.time()).encode()]
        try:
            self.render(self.site.resource)
        except BaseException:
            self.processingFailed(Failure())

    def respond_early(
        self, status: int, headers: Sequence[tuple[bytes, bytes]], body: bytes
    ) -> None:
        """Answer before the body is read and close the connection (used with 100-continue).

        Those waiting for such an answer (the access log) hear of it first, so that a client
        that has the answer finds the request logged.
        """
        self.s3.responded = True
        self.requestHeaders.removeHeader(b"expect")
        observers, self.answered_early = self.answered_early, []
        for observer in observers:
            observer(self)
        lines = [b"HTTP/1.1 %d %s" % (status, _reason(status))]
        lines += [name + b": " + value for name, value in headers]
        lines += [b"Content-Length: %d" % len(body), b"Connection: close", b"", b""]
        self.channel.transport.write(b"\r\n".join(lines) + body)
        self.channel.transport.loseConnection()

    def connectionLost(self, reason: Any) -> None:
        """Run the clean-ups (spooled files) of a request whose client went away.

        Body bytes still in the transport's buffer never reached the client: they are taken
        off ``sentLength``, which then counts the bytes handed to the kernel.
        """
        if self.channel is not None:
            self.sentLength -= min(self.sentLength, unsent_bytes(self.channel.transport))
        super().connectionLost(reason)
        self.run_cleanups()

    def when_over(self, observer: Callable[[Failure | None], object]) -> None:
        """Call ``observer`` once the request is over, as ``notifyFinish`` would fire.

        It is called with None when the answer is finished, or with the failure that ended
        the request (its client gone).  Observers are called in the order given, all from
        one ``notifyFinish``; one that raises is logged, and the others are still called.
        """
        if not self._over:
            self.notifyFinish().addBoth(self._ended)
        self._over.append(observer)

    def _ended(self, result: object) -> None:
        observers, self._over = self._over, []
        reason = result if isinstance(result, Failure) else None
        for observer in observers:
            try:
                observer(reason)
            except Exception:
                log.failure("Unhandled failure after a request ended")

    def kernel_send(self, call: Deferred[Any]) -> None:
        """Note a call handing body bytes to the kernel: :meth:`when_settled` waits for it."""
        self._kernel_sends += 1

        def returned(result: object) -> object:
            self._kernel_sends -= 1
            if not self._kernel_sends:
                waiting, self._settled = self._settled, []
                for waiter in waiting:
                    try:
                        waiter()
                    except Exception:
                        log.failure("Unhandled failure once a request's sends returned")
            return result

        call.addBoth(returned)

    def when_settled(self, call: Callable[[], object]) -> None:
        """Call ``call`` once no call handing body bytes to the kernel is in flight (or now)."""
        if not self._kernel_sends:
            call()
        else:
            self._settled.append(call)

    def run_cleanups(self) -> None:
        """Delete what the request left behind (a spooled body not committed)."""
        state = getattr(self, "s3", None)  # none if the client left during the headers
        if state is None:
            return
        cleanups, state.cleanups = state.cleanups, []
        for cleanup in cleanups:
            cleanup()


def unsent_bytes(transport: Any) -> int:
    """Bytes written to a TCP transport that it has not yet handed to the kernel (0 if unknown)."""
    buffered = getattr(transport, "dataBuffer", b"")
    offset = getattr(transport, "offset", 0)
    return max(0, len(buffered) - offset) + getattr(transport, "_tempDataLen", 0)


def _reason(status: int) -> bytes:
    from twisted.web.http import RESPONSES

    return RESPONSES.get(status, b"Error")


class S3Site(server.Site):
    """The site of the S3 API: its requests consult ``front`` when their headers arrive.

    Its connections are held to the bounds of ``connections`` (see :class:`S3Channel`); over
    the cap, a new one is refused.
    """

    requestFactory = S3Request
    protocol = S3Channel  # type: ignore[assignment]

    def __init__(
        self,
        resource: Any,
        front: IFront,
        connections: Connections | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("timeout", IDLE_TIMEOUT)
        super().__init__(resource, **kwargs)
        # Forms are parsed by the S3 layer as they stream (POST Object), never by twisted.web
        # (Twisted >= 24.7 takes this from the site rather than from the request class).
        self._parsePOSTFormSubmission = False
        self.front = front
        self.connections = connections or Connections(ConnectionLimits())

    def buildProtocol(self, addr: Any) -> Any:
        """A channel bound by the site's limits, or a refusal when they are reached."""
        if self.connections.full():
            self.connections.closed_by(AT_CAP)
            return Refusal(self.reactor)
        channel = super().buildProtocol(addr)
        channel.connections = self.connections
        channel.clock = self.reactor
        return channel
