"""Requests in flight, counted so that a stopping gateway can let them finish.

While draining, the connection of each request that finishes is closed once its response
is written (a keep-alive client opens a new one elsewhere), and the drain waits for those
connections too: the reactor drops unsent bytes when it shuts down.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from lambgw.s3.request import S3Request

#: Seconds between two looks at the connections being closed while draining.
CLOSE_POLL = 0.05


@define
class InFlight:
    """Counts the requests of a site from their first line until they finish or are lost."""

    clock: IReactorTime
    _count: int = 0
    _draining: bool = False
    _closing: list[Any] = field(factory=list)
    _idle: list[Deferred[int]] = field(factory=list)
    _poll: IDelayedCall | None = None

    @property
    def count(self) -> int:
        """Requests begun and not yet finished."""
        return self._count

    @property
    def draining(self) -> bool:
        """Whether :meth:`drain` was called: the gateway is stopping."""
        return self._draining

    def request_factory(self, factory: Callable[..., S3Request]) -> Callable[..., S3Request]:
        """A request factory for a site that makes requests with ``factory`` and counts them."""

        def make(*args: Any) -> S3Request:
            request = factory(*args)
            transport = getattr(getattr(request, "channel", None), "transport", None)
            self._count += 1
            request.when_over(lambda _: self._finished(transport))
            return request

        return make

    def _finished(self, transport: Any) -> None:
        self._count -= 1
        if self._draining and transport is not None and transport.connected:
            transport.loseConnection()
            self._closing.append(transport)
        self._check()

    def _check(self) -> None:
        self._poll = None
        self._closing = [t for t in self._closing if t.connected]
        if self._count or not self._idle:
            return
        if self._closing:
            self._poll = self.clock.callLater(CLOSE_POLL, self._check)
            return
        idle, self._idle = self._idle, []
        for d in idle:
            d.callback(0)

    def drain(self, deadline: float) -> Deferred[int]:
        """Fire once no request is in flight, or after ``deadline`` seconds at most.

        Fires with the number of requests still in flight (0 unless the deadline passed).
        """
        self._draining = True
        waiting: Deferred[int] = Deferred()
        self._idle.append(waiting)
        timer = self.clock.callLater(deadline, self._give_up, waiting)
        waiting.addBoth(self._cancel_timer, timer)
        self._check()
        return waiting

    def _give_up(self, waiting: Deferred[int]) -> None:
        if waiting in self._idle:
            self._idle.remove(waiting)
            if self._poll is not None and not self._idle:
                self._poll.cancel()
                self._poll = None
            waiting.callback(self._count)

    @staticmethod
    def _cancel_timer(result: int, timer: IDelayedCall) -> int:
        if timer.active():
            timer.cancel()
        return result
