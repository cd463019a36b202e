"""Which service a gateway process runs: a worker's, a supervisor's, or neither."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from twisted.application import service
from twisted.internet.interfaces import IStreamServerEndpoint

from lambgw.listening import listen_descriptions
from lambgw.workers.balance import Loads
from lambgw.workers.sockets import inherited_endpoints, inherited_fds
from lambgw.workers.supervisor import WORKER_ENV, Supervisor, worker_command
from lambgw.workers.worker import worker_service

#: Builds the gateway of parsed options, listening where the endpoint function says.
GatewayBuilder = Callable[[Any, Any, Callable[[Any, str], IStreamServerEndpoint]], service.IService]


def workers_service(
    options: Any, reactor: Any, gateway: GatewayBuilder, environ: Any = os.environ
) -> service.IService | None:
    """The service of a worker or of a supervisor, from the gateway's parsed ``options``.

    A process started by a supervisor is a worker; with ``--workers`` above 1 it is a
    supervisor; otherwise None: the gateway serves alone.
    """
    config = options.config
    worker = environ.get(WORKER_ENV)
    if worker:
        number = int(worker)
        loads = Loads.inherited(environ, number)
        descriptions = listen_descriptions(config)
        endpoints = inherited_endpoints(descriptions, inherited_fds(environ), loads)
        served = gateway(options, reactor, endpoints)
        if loads is not None:
            served.connections.changed = loads.publish  # type: ignore[attr-defined]
        return worker_service(served, reactor, number)
    if config.workers > 1:
        return Supervisor(
            reactor,
            listen_descriptions(config),
            config.workers,
            worker_command("s3gw" if options.single_order else "lambgw", options.arguments),
            options["admin-listen"],
            options["shutdown-grace"],
        )
    return None
