"""What makes a gateway process a worker of a supervisor (see :mod:`lambgw.workers.supervisor`).

The worker is an ordinary gateway whose S3 listeners are the sockets it inherited, plus
:class:`WorkerDuties`: SIGTERM and SIGINT stop it once however often they come (systemd
and a terminal send them to every process of the group, and the supervisor sends SIGTERM
too), and the end of its stdin (its supervisor died) stops it as well.
"""

from __future__ import annotations

import signal
from contextlib import suppress
from typing import Any

from twisted.application import service
from twisted.internet import error
from twisted.logger import Logger

from lambgw.workers.sockets import ParentWatch
from lambgw.workers.supervisor import STARTED_KEY

log = Logger()


class WorkerDuties(service.Service):
    """A worker's own signal handling and supervisor watch."""

    def __init__(self, reactor: Any, number: int) -> None:
        """Duties of worker ``number``."""
        self.reactor = reactor
        self.number = number
        self._stopping = False

    def startService(self) -> None:
        """Watch the supervisor; take the stop signals once the reactor runs."""
        super().startService()
        ParentWatch(self.reactor, self._supervisor_gone).startReading()
        self.reactor.callWhenRunning(self._take_signals)

    def _take_signals(self) -> None:
        # The reactor installs its own handlers as it starts running: these replace them.
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        log.info("Worker {worker} started", worker=self.number, **{STARTED_KEY: True})

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.reactor.callFromThread(self.stop)

    def _supervisor_gone(self) -> None:
        if not self._stopping:
            log.warn("The supervisor is gone: worker {worker} stops", worker=self.number)
        self.stop()

    def stop(self) -> None:
        """Stop the worker gracefully, once."""
        if not self._stopping:
            self._stopping = True
            with suppress(error.ReactorNotRunning):
                self.reactor.stop()


def worker_service(gateway: service.IService, reactor: Any, number: int) -> service.IService:
    """The service tree of worker ``number``: its gateway and its duties."""
    top = service.MultiService()
    gateway.setServiceParent(top)
    WorkerDuties(reactor, number).setServiceParent(top)
    return top
