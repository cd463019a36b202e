"""A TCP proxy in front of a network node that the tests switch between forwarding and faults.

:class:`FaultProxy` listens on a free loopback port and, per connection, does what its current
mode says: forward the bytes both ways; answer ``500 Internal Server Error`` to every request
without reaching the node; stall (relay the request and at most some bytes of the answer, then
nothing more, keeping the connection open); or cut (relay some bytes each way, then close).
Switching the mode closes every open connection, so that the client's pooled connections
cannot carry on in the old mode.  It runs in threads of the test process, plain sockets only.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from enum import Enum

from attrs import define, field

#: The answer of the ``FAIL`` mode to every request.
INTERNAL_ERROR = (
    b"HTTP/1.1 500 Internal Server Error\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Length: 22\r\n"
    b"\r\n"
    b"Internal Server Error\n"
)
#: The largest request head read in the ``FAIL`` mode.
MAX_HEAD = 64 * 1024
#: Seconds given to the clients to see their connections closed after a switch.
SETTLE = 0.1


class Mode(Enum):
    """What the proxy does with a new connection."""

    FORWARD = "forward"
    FAIL = "fail"
    STALL = "stall"
    CUT = "cut"


class _Closed(Exception):
    """The peer closed the connection."""


@define
class _Buffered:
    """A socket read in whole lines and counted bodies, for the ``FAIL`` mode."""

    sock: socket.socket
    data: bytes = b""

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise _Closed()
        self.data += chunk

    def until(self, marker: bytes, limit: int = MAX_HEAD) -> bytes:
        """Return the bytes up to and with ``marker``."""
        while marker not in self.data:
            if len(self.data) > limit:
                raise _Closed()
            self._more()
        end = self.data.index(marker) + len(marker)
        found, self.data = self.data[:end], self.data[end:]
        return found

    def skip(self, count: int) -> None:
        """Read and drop ``count`` bytes."""
        while len(self.data) < count:
            count -= len(self.data)
            self.data = b""
            self._more()
        self.data = self.data[count:]

    def skip_chunked(self) -> None:
        """Read and drop a chunked body and its trailers."""
        while True:
            size = int(self.until(b"\r\n").split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.until(b"\r\n") != b"\r\n":
                    pass
                return
            self.skip(size + 2)


def _read_request(stream: _Buffered) -> None:
    """Read one request, head and body, and drop it."""
    head = stream.until(b"\r\n\r\n").lower()
    headers = dict(
        (name.strip(), value.strip())
        for name, _, value in (line.partition(b":") for line in head.split(b"\r\n")[1:])
    )
    if b"chunked" in headers.get(b"transfer-encoding", b""):
        stream.skip_chunked()
    else:
        stream.skip(int(headers.get(b"content-length", b"0")))


@define
class FaultProxy:
    """Forwards ``127.0.0.1:port`` to ``127.0.0.1:target_port``, or fails as told."""

    target_port: int
    _listener: socket.socket = field(init=False)
    _mode: Mode = field(init=False, default=Mode.FORWARD)
    _limit: int | None = field(init=False, default=None)
    _lock: threading.Lock = field(init=False, factory=threading.Lock)
    _sockets: set[socket.socket] = field(init=False, factory=set)
    #: How many requests the ``FAIL`` mode answered.
    failed: int = field(init=False, default=0)

    def __attrs_post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        threading.Thread(target=self._accept, name="faultproxy", daemon=True).start()

    @property
    def port(self) -> int:
        """The port the proxy listens on."""
        port: int = self._listener.getsockname()[1]
        return port

    @property
    def address(self) -> str:
        """The proxy's URL, for ``--broker.validator_addr``."""
        return f"http://127.0.0.1:{self.port}"

    def forward(self) -> None:
        """Forward every byte both ways."""
        self._switch(Mode.FORWARD)

    def fail(self) -> None:
        """Answer ``500 Internal Server Error`` to every request; the node sees nothing."""
        self._switch(Mode.FAIL)

    def stall(self, after: int | None = None) -> None:
        """Relay requests and ``after`` bytes of each answer, then stop relaying.

        With ``after=None`` nothing reaches the node and nothing is answered.
        """
        self._switch(Mode.STALL, after)

    def cut(self, after: int) -> None:
        """Relay ``after`` bytes each way, then close both connections."""
        self._switch(Mode.CUT, after)

    def close(self) -> None:
        """Stop listening and close every connection."""
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._close_all()

    def _switch(self, mode: Mode, limit: int | None = None) -> None:
        with self._lock:
            self._mode, self._limit = mode, limit
        self._close_all()
        time.sleep(SETTLE)

    def _close_all(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            _close(sock)

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._track(client)
            with self._lock:
                mode, limit = self._mode, self._limit
            threading.Thread(target=self._serve, args=(client, mode, limit), daemon=True).start()

    def _serve(self, client: socket.socket, mode: Mode, limit: int | None) -> None:
        try:
            if mode is Mode.FAIL:
                self._answer_500(client)
            elif mode is Mode.STALL and limit is None:
                while client.recv(65536):
                    pass
            else:
                self._relay(client, mode, limit)
        except (OSError, _Closed):
            pass
        finally:
            _close(client)

    def _answer_500(self, client: socket.socket) -> None:
        stream = _Buffered(client)
        while True:
            _read_request(stream)
            client.sendall(INTERNAL_ERROR)
            with self._lock:
                self.failed += 1

    def _relay(self, client: socket.socket, mode: Mode, limit: int | None) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        self._track(upstream)

        def cut() -> None:
            _close(upstream)
            _close(client)

        at_limit = cut if mode is Mode.CUT else None
        request_limit = limit if mode is Mode.CUT else None
        sending = threading.Thread(
            target=_pump, args=(client, upstream, request_limit, at_limit), daemon=True
        )
        sending.start()
        try:
            _pump(upstream, client, limit, at_limit)
            sending.join()
        finally:
            _close(upstream)


def _pump(
    source: socket.socket,
    target: socket.socket,
    limit: int | None,
    at_limit: Callable[[], None] | None = None,
) -> None:
    """Copy ``source`` to ``target``, at most ``limit`` bytes; then call ``at_limit``.

    Without ``at_limit``, reaching the limit just stops the copy: the connection stalls.
    """
    left = limit
    try:
        while left is None or left > 0:
            chunk = source.recv(65536 if left is None else min(65536, left))
            if not chunk:
                break
            target.sendall(chunk)
            if left is not None:
                left -= len(chunk)
    except OSError:
        return
    if left == 0:
        if at_limit is not None:
            at_limit()
        return
    with contextlib.suppress(OSError):
        target.shutdown(socket.SHUT_WR)


def _close(sock: socket.socket) -> None:
    """Close ``sock``, waking any thread blocked on it."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
