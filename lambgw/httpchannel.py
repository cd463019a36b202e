"""What the gateway's and the node's HTTP channels add to twisted.web's.

Three of twisted.web's steps cost more per request than they need to:

- a request head is parsed line by line: each line is cut from the buffer (a copy of the
  rest), handed through two methods, and each header checked, canonicalized and stored by
  two more.  A head that arrives whole, in the forms clients send, is parsed by
  :class:`LeanChannel` in one pass (:meth:`LeanChannel._head`); anything else (a head in
  pieces, folded or odd lines, a malformed or oversized head) goes to twisted.web's parser
  as it came.  The one-pass parser accepts a subset of what twisted.web accepts and
  leaves the channel and request as twisted.web would, so which parser ran changes
  nothing but the time taken;
- every request asks its channel for the connection's two addresses (``getsockname(2)``
  for its own), and its request factory whether it is queued, though neither changes on
  a connection: :class:`LeanChannel` asks once;
- the response head goes to the transport as a sequence of four pieces per header, each
  checked and queued on its own: :class:`LeanChannel` writes it as one piece of bytes;
- an answer written to a TCP transport costs two ``epoll_ctl`` calls and a poll to learn
  that the socket is writable: :class:`LeanChannel`'s transport sends it at the end of the
  reactor's turn instead (:mod:`lambgw.heldwrites`);
- each response header set is encoded and split at line breaks, and each request's
  cookies parsed: :class:`LeanRequest` stores a header of plain bytes as it is, and
  parses no cookie (neither S3 nor the network protocol has any).
"""

from __future__ import annotations

import re
from typing import Any

from twisted.protocols.basic import LineReceiver
from twisted.web.http import HTTPChannel, Request
from twisted.web.http_headers import InvalidHeaderName, _nameEncoder
from twisted.web.iweb import INonQueuedRequestFactory

from lambgw.heldwrites import hold_writes

#: A request line the one-pass parser takes: a token method, a target of printable ASCII,
#: and HTTP/1.0 or 1.1 (twisted.web's ``_parseRequestLine`` takes all of these, and more).
_REQUEST_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([!-~]+) (HTTP/1\.[01])")
#: twisted.web's own cache of canonical header names (bounded by it), read without a call
#: for each header of a request; a name not in it goes through ``_nameEncoder.encode``.
_CANONICAL_NAMES = _nameEncoder._canonicalHeaderCache
#: The headers that choose how the body is read.
_LENGTH, _CODING = b"Content-Length", b"Transfer-Encoding"


class LeanChannel(HTTPChannel):
    """twisted.web's HTTP/1.1 channel, with the per-request steps above made cheaper."""

    _peer: Any = None
    _host: Any = None
    #: Whether the site's request factory takes no queue position (asked once).
    _nonqueued: bool | None = None

    def connectionMade(self) -> None:
        """Begin as twisted.web does; answers are sent at the end of the turn that wrote them."""
        super().connectionMade()
        hold_writes(self.transport)

    def dataReceived(self, data: bytes) -> None:
        """Parse a request head that came whole in one pass; give the rest to twisted.web."""
        if (
            self.line_mode
            and not self._buffer
            and not self._busyReceiving
            and not self._handlingRequest
            and self.persistent
            and not self.paused
            and self._HTTPChannel__first_line == 1
        ):
            end = data.find(b"\r\n\r\n")
            if end > 0:
                parsed = self._parse_head(data[:end])
                if parsed is not None:
                    self.resetTimeout()
                    self._head(*parsed)
                    # Bytes handed back while the head was taken (as to twisted.web's loop)
                    # come after the rest of ``data``.
                    rest = data[end + 4 :] + self._buffer
                    self._buffer = b""
                    if rest and not self.transport.disconnecting:  # type: ignore[union-attr]
                        LineReceiver.dataReceived(self, rest)
                    return
        super().dataReceived(data)

    def _parse_head(
        self, head: bytes
    ) -> tuple[bytes, bytes, bytes, list[tuple[bytes, bytes]], int] | None:
        """The request line's parts, the headers and the size of a whole ``head``, or None.

        None for anything twisted.web's parser should see: every head taken here is one it
        takes too, with the same headers.
        """
        lines = head.split(b"\r\n")
        breaks = len(lines) - 1
        # twisted.web counts a head's size without its line ends.
        size = len(head) - 2 * breaks
        # Lone CRs and LFs, NULs, folded lines, a head over twisted.web's bounds: not here.
        if (
            head.count(b"\n") != breaks
            or head.count(b"\r") != breaks
            or b"\x00" in head
            or size > self.totalHeadersSize
            or breaks > self.maxHeaders
        ):
            return None
        request_line = _REQUEST_LINE.fullmatch(lines[0])
        if request_line is None:
            return None
        headers: list[tuple[bytes, bytes]] = []
        framing = 0
        known = _CANONICAL_NAMES
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not name or line[0] in b" \t":
                return None
            canonical = known.get(name)
            if canonical is None:
                try:
                    canonical = _nameEncoder.encode(name)
                except InvalidHeaderName:
                    return None
            name = canonical
            value = value.strip(b" \t")
            if name == _LENGTH:
                if not value.isdigit():
                    return None
                framing += 1
            elif name == _CODING:
                coding = value.lower()
                if coding == b"chunked":
                    framing += 1
                elif coding != b"identity":
                    return None
            headers.append((name, value))
        if framing > 1:
            return None
        method, target, version = request_line.groups()
        return method, target, version, headers, size

    def _head(
        self,
        method: bytes,
        target: bytes,
        version: bytes,
        headers: list[tuple[bytes, bytes]],
        size: int,
    ) -> None:
        """Take a parsed head as twisted.web's ``lineReceived`` and ``headerReceived`` do."""
        factory = self.requestFactory
        if self._nonqueued is None:
            self._nonqueued = INonQueuedRequestFactory.providedBy(factory)
        request = factory(self) if self._nonqueued else factory(self, len(self.requests))
        self.requests.append(request)
        self._HTTPChannel__first_line = 0
        self._command, self._path, self._version = method, target, version
        raw = request.requestHeaders._rawHeaders
        for name, value in headers:
            if name in (_LENGTH, _CODING):
                self._maybeChooseTransferDecoder(name, value)
            values = raw.get(name)
            if values is None:
                raw[name] = [value]
            else:
                values.append(value)
        self._receivedHeaderCount = len(headers)
        self._receivedHeaderSize = size
        self._busyReceiving = True
        try:
            self.allHeadersReceived()
            if self.length == 0:
                self.allContentReceived()
            else:
                self.setRawMode()
        finally:
            self._busyReceiving = False

    def getPeer(self) -> Any:
        """The client's address."""
        if self._peer is None:
            self._peer = super().getPeer()
        return self._peer

    def getHost(self) -> Any:
        """The address of the server's end."""
        if self._host is None:
            self._host = super().getHost()
        return self._host

    def writeHeaders(self, version: bytes, code: bytes, reason: bytes, headers: Any) -> None:
        """Write the status line and ``headers`` (a twisted.web ``Headers``) in one piece."""
        lines = [b"%s %s %s\r\n" % (version, code, reason)]
        lines += [
            b"%s: %s\r\n" % (name, value)
            for name, values in headers.getAllRawHeaders()
            for value in values
        ]
        lines.append(b"\r\n")
        self.transport.write(b"".join(lines))  # type: ignore[union-attr]


def header_name(name: bytes) -> bytes:
    """The name twisted.web's ``Headers`` keep the header ``name`` under.

    A response header of plain bytes (no line break) whose name is known may be stored
    under it directly (``responseHeaders._rawHeaders[header_name(name)] = [value]``), as
    :meth:`LeanRequest.setHeader` does, without a call per header.
    """
    return _nameEncoder.encode(name)


class LeanRequest(Request):
    """A twisted.web request with the per-request steps above made cheaper (a mixin)."""

    def setHeader(self, name: bytes | str, value: bytes | str) -> None:
        """Set a response header, as twisted.web does, with less work for plain bytes.

        A value of bytes with no line break is stored as it is under the canonical name;
        anything else goes through twisted.web, which encodes it and joins its lines.
        """
        if (
            type(name) is bytes
            and type(value) is bytes
            and b"\n" not in value
            and b"\r" not in value
        ):
            self.responseHeaders._rawHeaders[_nameEncoder.encode(name)] = [value]
        else:
            super().setHeader(name, value)

    def parseCookies(self) -> None:
        """Nothing: no cookie is parsed (``received_cookies`` stays empty)."""
