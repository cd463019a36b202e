"""Requests in flight, counted so that a stopping gateway can let them finish."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.web.http import Request


@define
class InFlight:
    """Counts the requests of a site from their first line until they finish or are lost."""

    clock: IReactorTime
    _count: int = 0
    _draining: bool = False
    _idle: list[Deferred[int]] = field(factory=list)

    @property
    def count(self) -> int:
        """Requests begun and not yet finished."""
        return self._count

    @property
    def draining(self) -> bool:
        """Whether :meth:`drain` was called: the gateway is stopping."""
        return self._draining

    def request_factory(self, factory: Callable[..., Request]) -> Callable[..., Request]:
        """A request factory for a site that makes requests with ``factory`` and counts them."""

        def make(*args: Any) -> Request:
            request = factory(*args)
            self._count += 1
            request.notifyFinish().addBoth(self._finished)
            return request

        return make

    def _finished(self, result: object) -> None:
        self._count -= 1
        if self._count == 0:
            idle, self._idle = self._idle, []
            for d in idle:
                d.callback(0)

    def drain(self, deadline: float) -> Deferred[int]:
        """Fire once no request is in flight, or after ``deadline`` seconds at most.

        Fires with the number of requests still in flight (0 unless the deadline passed).
        """
        self._draining = True
        if self._count == 0:
            d: Deferred[int] = Deferred()
            d.callback(0)
            return d
        waiting: Deferred[int] = Deferred()
        self._idle.append(waiting)
        timer = self.clock.callLater(deadline, self._give_up, waiting)
        waiting.addBoth(self._cancel_timer, timer)
        return waiting

    def _give_up(self, waiting: Deferred[int]) -> None:
        if waiting in self._idle:
            self._idle.remove(waiting)
            waiting.callback(self._count)

    @staticmethod
    def _cancel_timer(result: int, timer: Any) -> int:
        if timer.active():
            timer.cancel()
        return result
