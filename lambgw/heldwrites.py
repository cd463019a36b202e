"""Sending what a turn of the reactor wrote at the turn's end, without polling for it.

A TCP transport that is written to asks the reactor to tell it when its socket is writable
(``epoll_ctl`` to watch it), the reactor's next poll says so, the transport sends, and it
asks the reactor to stop watching (``epoll_ctl`` again).  For the small answers a busy
server writes, the socket is writable all along: two system calls per answer, and a pass
through the poller's dispatch, are spent to learn what was already known.

A transport made by :func:`hold_writes` that is written to notes that it has bytes to
send instead, and at the end of the reactor's turn (a ``callLater(0)``, which runs after
all of the turn's I/O and before the next poll, when Twisted's own transport would have
learnt that its socket is writable) each such transport sends at once.  The answers of a
turn leave together, after all of the turn's requests are handled, unless code that knows
its bytes should not wait for the turn's end sends them earlier, still without the poller:
:func:`send_now` for one transport, :func:`send_all` for all that hold bytes.  What the
socket does not take, and a transport that is closing, is left to the reactor as usual; a
transport the reactor already watches is left to it too.  Code that fills the socket
around the transport (sendfile, splice) waits for room with :func:`watch_writable`.

Only Twisted's own plain TCP connections are changed (TLS goes over one, and is changed
through it); any other transport writes as it always does.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.internet import tcp
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

log = Logger()


class _Held:
    """The transports written to in this turn, waiting for its end."""

    def __init__(self) -> None:
        self.transports: list[_HeldWrites] = []


_held = _Held()


class _HeldWrites(tcp.Connection):
    """A TCP connection that sends what it is given at the turn's end instead of polling."""

    _write_held = False
    #: Whether the reactor watches the socket (bytes are left that it did not take).
    _watched = False

    def startWriting(self) -> None:
        """Send at the end of the turn, unless the reactor already watches the socket."""
        if self._watched or self._write_held:
            return
        self._write_held = True
        held = _held.transports
        if not held:
            cast(IReactorTime, self.reactor).callLater(0, send_all)
        held.append(self)

    def stopWriting(self) -> None:
        """Forget held bytes (all were sent, or the connection is being aborted)."""
        self._write_held = False
        if self._watched:
            self._watched = False
            super().stopWriting()

    def _watch(self) -> None:
        """Have the reactor watch the socket and send the rest, as Twisted's transports do."""
        self._write_held = False
        self._watched = True
        super().startWriting()

    def _send_held(self) -> None:
        """Send what the turn wrote, as the reactor does when the socket is writable."""
        if not self._write_held:
            return
        self._write_held = False
        if not self.connected:
            return  # lost meanwhile: nothing is sent on a closed connection
        if not self.disconnecting:
            try:
                why = self.doWrite()
            except Exception:
                log.failure("Sending to a connection failed")
                self.abortConnection()
                return
            if why is None and not (len(self.dataBuffer) - self.offset or self._tempDataLen):
                return
        # Bytes the socket did not take, an error, or a connection being closed: the
        # reactor goes on with them as it would have.
        self._watch()


class HeldServer(_HeldWrites, tcp.Server):
    """An accepted TCP connection whose writes are sent at the end of the reactor's turn."""


class HeldClient(_HeldWrites, tcp.Client):
    """A TCP connection made by this process whose writes are sent at the end of the turn."""


_HELD = {tcp.Server: HeldServer, tcp.Client: HeldClient}


def hold_writes(transport: Any) -> None:
    """Have the plain TCP connection under ``transport`` (under TLS, if any) send at turn ends.

    Call it when the connection is made, before anything is written.  Transports of other
    kinds, and subclasses of Twisted's connections (they may write in their own way), are
    left as they are.
    """
    while transport is not None:
        if isinstance(transport, tcp.Connection):
            held = _HELD.get(type(transport))
            if held is not None and not transport.dataBuffer and not transport._tempDataLen:
                transport.__class__ = held
            return
        transport = getattr(transport, "transport", None)


def watch_writable(transport: tcp.Connection) -> None:
    """Have the reactor call ``transport.doWrite`` once its socket is writable.

    For bytes sent to the socket around the transport (sendfile, splice), which fill it
    without the transport knowing: ``startWriting`` on a held transport would only wait for
    the turn's end, not for room in the socket.
    """
    if isinstance(transport, _HeldWrites):
        transport._watch()
    else:
        transport.startWriting()


def send_now(transport: Any) -> None:
    """Send what ``transport`` holds now instead of at the turn's end (a no-op otherwise)."""
    if isinstance(transport, _HeldWrites):
        transport._send_held()


def send_all() -> None:
    """Send what each transport written to in the turn holds."""
    held, _held.transports = _held.transports, []
    for transport in held:
        transport._send_held()
