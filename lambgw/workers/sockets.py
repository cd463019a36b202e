"""The S3 listening sockets that the workers share, from both ends.

The supervisor opens every listener once, through the same endpoint descriptions a single
gateway uses (``tcp:``, ``ssl:``, ``unix:``, ``systemd:``, ...), stops accepting on them
itself, and hands the sockets to each worker it starts as inherited file descriptors.  A
worker adopts them: all workers accept from the one queue the kernel keeps per socket, so a
worker that dies leaves no queued connection behind and a restarted one takes its share at
once.  TLS is done by the worker that accepted the connection, with the context of the
``ssl:`` description; a TLS listener of any other kind cannot be shared.
"""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from attrs import frozen
from twisted.internet import abstract, fdesc, protocol, tcp, unix
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IDelayedCall,
    IListeningPort,
    IProtocolFactory,
    IStreamServerEndpoint,
)
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from lambgw.listening import server_endpoint
from lambgw.workers.balance import HOLD, Loads

#: The environment variable holding the inherited descriptors of a worker, comma-separated,
#: in the order of the listen descriptions.
FDS_ENV = "LAMBGW_WORKER_FDS"
#: The first descriptor number the sockets get in a worker (0, 1, 2 are its stdio).
FIRST_FD = 3


def endpoint_kind(description: str) -> str:
    """The endpoint type a description names: ``tcp``, ``ssl``, ``unix``, ``systemd``, ..."""
    return description.split(":", 1)[0].lower()


@frozen
class SharedListener:
    """A listening socket opened by the supervisor for its workers."""

    description: str
    port: Any

    @property
    def fileno(self) -> int:
        """The socket's descriptor in the supervisor."""
        fileno: int = self.port.fileno()
        return fileno


def open_shared(reactor: Any, descriptions: Sequence[str]) -> list[SharedListener]:
    """Listen on every description, without accepting: the workers will.

    Raises ValueError with a readable message for a description that cannot be used or
    shared; the listeners opened so far are then closed.
    """
    opened: list[SharedListener] = []
    try:
        for description in descriptions:
            endpoint = server_endpoint(reactor, description)
            idle = protocol.Factory.forProtocol(protocol.Protocol)
            idle.noisy = False
            d = endpoint.listen(idle)
            result: list[Any] = []
            d.addBoth(result.append)
            (port,) = result
            if isinstance(port, Failure):
                raise ValueError(f"cannot listen on {description!r}: {port.getErrorMessage()}")
            port.stopReading()
            opened.append(SharedListener(description, port))
            if isinstance(port.factory, TLSMemoryBIOFactory) and endpoint_kind(description) != (
                "ssl"
            ):
                raise ValueError(f"cannot share the TLS listener {description!r}: use ssl:")
    except BaseException:
        for listener in opened:
            listener.port.stopListening()
        raise
    return opened


class _SharedPort:
    """What a listener shared by the workers does differently from one of its own.

    It accepts one connection each time the socket is readable, not as many as are queued.
    Every worker is woken for a queued connection; the first to accept takes it.  A worker
    that took a burst of connections at once would serve them all while the others idle:
    taking one per reactor turn leaves the rest to whichever worker is free first.

    With ``loads`` (see :mod:`lambgw.workers.balance`), a worker that has more connections
    open than another leaves a new one to the others for :data:`~lambgw.workers.balance.HOLD`
    seconds, then takes it if it is still waiting.
    """

    loads: Loads | None = None
    _hold: IDelayedCall | None = None

    @property
    def numberAccepts(self) -> int:
        """One, whatever the port would have grown it to."""
        return 1

    @numberAccepts.setter
    def numberAccepts(self, value: int) -> None:
        pass

    def doRead(self) -> Any:
        """Accept a connection, unless a less loaded worker should have it."""
        if self.loads is not None and self.loads.others_fewer():
            self.stopReading()  # type: ignore[attr-defined]
            self._hold = self.reactor.callLater(HOLD, self._take_one)  # type: ignore[attr-defined]
            return None
        return super().doRead()  # type: ignore[misc]

    def _take_one(self) -> None:
        """The hold is over: accept a connection still waiting, whatever the loads say."""
        self._hold = None
        self.startReading()  # type: ignore[attr-defined]
        super().doRead()  # type: ignore[misc]

    def _end_hold(self) -> None:
        if self._hold is not None:
            self._hold.cancel()
            self._hold = None


class _SharedTCPPort(_SharedPort, tcp.Port):
    """A TCP listener adopted from the supervisor."""

    def connectionLost(self, reason: Failure) -> None:
        """Stop listening, and holding a connection back."""
        self._end_hold()
        super().connectionLost(reason)


class _SharedUNIXPort(_SharedPort, unix.Port):
    """A UNIX listener adopted from the supervisor: its path stays when the worker stops."""

    def connectionLost(self, reason: Failure) -> None:
        """Close this worker's copy only: the supervisor and the other workers still listen."""
        self._end_hold()
        tcp.Port.connectionLost(self, reason)


def adopt(
    reactor: Any, fd: int, factory: IProtocolFactory, loads: Loads | None = None
) -> IListeningPort:
    """Accept connections for ``factory`` on the inherited listening socket ``fd`` (a copy).

    ``loads``: the workers' loads, to leave new connections to a less loaded worker.
    """
    probe = socket.socket(fileno=fd)
    try:
        family = probe.family
        port: Any
        if family == socket.AF_UNIX:
            path = probe.getsockname()
            port = _SharedUNIXPort._fromListeningDescriptor(reactor, fd, factory)
            if isinstance(path, str) and path:
                # Adopting chmods the path: keep the mode the supervisor gave it.
                port.mode = stat.S_IMODE(os.stat(path).st_mode)
        else:
            port = _SharedTCPPort._fromListeningDescriptor(reactor, fd, family, factory)
        port.loads = loads
        port.startListening()
        if loads is not None:
            loads.arrive()
        return port
    finally:
        probe.detach()


@implementer(IStreamServerEndpoint)
@frozen
class InheritedEndpoint:
    """An endpoint serving an inherited listening socket, with TLS if ``tls`` is given."""

    reactor: Any
    fd: int
    tls: Any = None
    loads: Loads | None = None

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        """Adopt the socket for ``factory``."""
        if self.tls is not None:
            factory = TLSMemoryBIOFactory(self.tls, False, factory)
        return succeed(adopt(self.reactor, self.fd, factory, self.loads))


def inherited_endpoints(
    descriptions: Sequence[str], fds: Sequence[int], loads: Loads | None = None
) -> Callable[[Any, str], IStreamServerEndpoint]:
    """What a worker listens on instead of each description: the socket it inherited.

    ``ssl:`` descriptions are parsed for their TLS context (certificate, key, TLS 1.2 at
    least); the others are not parsed at all (a ``systemd:`` socket was the supervisor's).
    ``loads``: the workers' loads, which the listeners balance their connections by.
    """
    by_description = dict(zip(descriptions, fds, strict=True))

    def endpoint(reactor: Any, description: str) -> IStreamServerEndpoint:
        tls = None
        if endpoint_kind(description) == "ssl":
            tls = server_endpoint(reactor, description)._sslContextFactory  # type: ignore[attr-defined]
        return InheritedEndpoint(reactor, by_description[description], tls, loads)

    return endpoint


def inherited_fds(environ: Mapping[str, str]) -> list[int]:
    """The descriptors a worker inherited, from its environment."""
    return [int(fd) for fd in environ.get(FDS_ENV, "").split(",") if fd]


class ParentWatch(abstract.FileDescriptor):
    """Reads a worker's stdin, a pipe from the supervisor: its end means the supervisor died."""

    def __init__(self, reactor: Any, gone: Callable[[], None], fd: int = 0) -> None:
        """Call ``gone`` once the supervisor's end of the pipe ``fd`` is closed."""
        super().__init__(reactor)
        self._fd = fd
        self._gone = gone
        fdesc.setNonBlocking(fd)

    def fileno(self) -> int:
        """The pipe."""
        return self._fd

    def doRead(self) -> Any:
        """Discard what comes; report the end of the pipe."""
        return fdesc.readFromFD(self._fd, lambda data: None)

    def connectionLost(self, reason: Failure) -> None:
        """The supervisor is gone."""
        super().connectionLost(reason)
        self._gone()
