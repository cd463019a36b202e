"""The reactor's dispatch of socket events, without a logging context around each one.

Twisted's epoll reactor hands each ready socket to its handler through
``log.callWithLogger``: a context naming the handler's ``logPrefix`` is pushed and popped
around every event (four Python calls and a dictionary), so that what is logged meanwhile
through the legacy ``twisted.python.log`` API carries it as its ``system``.  The gateway
and the node log through ``twisted.logger``, whose events are named by their namespace;
at two or three events a small request, the context was 8% of the gateway's CPU.
:func:`lean_dispatch` has the reactor call the handler directly.  The handler is the
reactor's own (``_doReadOrWrite``): an exception is still logged there and its connection
dropped.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.epollreactor import EPollReactor


def lean_dispatch(reactor: Any) -> bool:
    """Dispatch ``reactor``'s events without a logging context; whether it could be done.

    Only Twisted's epoll reactor (the default on Linux) is changed.
    """
    if not isinstance(reactor, EPollReactor):
        return False
    selectables: dict[int, Any] = reactor._selectables
    handle = reactor._doReadOrWrite

    def poll(timeout: float | None) -> None:
        try:
            # At most as many events as there are sockets, as Twisted asks for.
            events = reactor._poller.poll(-1 if timeout is None else timeout, len(selectables))
        except InterruptedError:
            return
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is not None:
                handle(selectable, fd, event)

    reactor.doPoll = reactor.doIteration = poll  # type: ignore[method-assign]
    return True
