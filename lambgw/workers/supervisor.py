"""``--workers N``: a supervisor process that starts N gateway workers and keeps them running.

The supervisor is what twistd runs (so pid file, daemonizing, ``--uid`` and the log are
twistd's as ever).  It opens the S3 listeners (:mod:`lambgw.workers.sockets`), starts each
worker as ``twistd -n lambgw|s3gw`` with the same options, the listeners inherited and its
admin pages on a UNIX socket in a private directory, relays the workers' log events
(:mod:`lambgw.workers.logs`) and answers the admin listener for all of them
(:mod:`lambgw.workers.admin`).

- A worker that ends while the supervisor runs is logged and started again, after 1 s,
  then 2, 4, ... up to 30 s while it keeps ending within 30 s of its start.
- SIGTERM (and SIGINT) stops the listeners, then sends SIGTERM to every worker: each lets
  its requests in flight finish within ``--shutdown-grace``; a worker still there
  ``STOP_MARGIN`` seconds after that is killed.
- SIGHUP is passed on to every worker, which reloads its configuration; a worker still
  starting gets it once it has started.
- A worker whose supervisor dies (``kill -9``) sees its stdin close and stops gracefully.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import suppress
from typing import Any

from twisted.application import service, strports
from twisted.internet import error
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from lambgw.listening import quote
from lambgw.workers.admin import WorkerPages, Workers, workers_admin_site
from lambgw.workers.balance import ABSENT, LOADS_ENV, Loads
from lambgw.workers.logs import LogRelay
from lambgw.workers.sockets import FDS_ENV, FIRST_FD, SharedListener, open_shared

log = Logger()

#: The environment variable that makes a gateway process a worker: its number.
WORKER_ENV = "LAMBGW_WORKER"
#: The key of the event a worker logs once it has started (its signal handlers are in place).
STARTED_KEY = "lambgw_worker_started"
#: Seconds before a worker that ended is started again; each wait doubles, up to the most.
RESTART_FIRST = 1.0
RESTART_MOST = 30.0
#: A worker that ran this long before it ended is restarted after the first wait again.
STABLE_AFTER = 30.0
#: Seconds beyond the shutdown grace a worker has to exit before it is killed.
STOP_MARGIN = 10.0

#: Builds a worker's command line from its number and where its admin pages listen.
Command = Callable[[int, str], Sequence[str]]


#: The program a worker runs: twistd, its modules found where the supervisor finds them
#: (``python -c`` alone puts the working directory first on the module path, so a worker
#: started in a directory holding a ``twisted`` or ``lambgw`` would run that code).
WORKER_MAIN = (
    "import sys\n"
    "if sys.path[:1] == ['']:\n"
    "    del sys.path[0]\n"
    "from twisted.scripts.twistd import run\n"
    "run()\n"
)


def worker_command(plugin: str, arguments: Sequence[str]) -> Command:
    """Workers run ``twistd -n PLUGIN ARGUMENTS``, logging to the supervisor.

    Their admin pages listen on their own UNIX socket, or nowhere if it is empty.
    """

    def command(number: int, admin_socket: str) -> Sequence[str]:
        return [
            sys.executable,
            "-c",
            WORKER_MAIN,
            "--nodaemon",
            "--pidfile=",
            "--logger=lambgw.workers.logs.worker_log_observer",
            plugin,
            *arguments,
            "--admin-listen",
            f"unix:{quote(admin_socket)}:mode=600" if admin_socket else "",
        ]

    return command


def restart_delays(first: float = RESTART_FIRST, most: float = RESTART_MOST) -> Iterator[float]:
    """The waits before each restart of a worker that keeps ending: doubling, capped."""
    delay = first
    while True:
        yield delay
        delay = min(delay * 2, most)


def describe_end(reason: Failure) -> str:
    """How a worker process ended, in words."""
    value = reason.value
    if isinstance(value, error.ProcessTerminated):
        if value.signal is not None:
            return f"was killed by signal {value.signal}"
        return f"exited with status {value.exitCode}"
    return "exited with status 0"


class WorkerProcess(ProcessProtocol):
    """One worker process: its log relayed, its end reported to the supervisor."""

    def __init__(self, supervisor: Supervisor, number: int, admin_socket: str) -> None:
        """Worker ``number`` of ``supervisor``, its admin pages on ``admin_socket``."""
        self.supervisor = supervisor
        self.number = number
        self.admin_socket = admin_socket
        self.pid = 0
        self.started_at = supervisor.reactor.seconds()
        #: Whether it has started (it takes SIGHUP); a reload asked before waits for this.
        self.started = False
        self.reload_pending = False
        self._relay = LogRelay(number, self._event)
        self._err = b""

    def connectionMade(self) -> None:
        """The process exists."""
        self.pid = self.transport.pid  # type: ignore[union-attr]
        log.info("Started worker {worker} (pid {pid})", worker=self.number, pid=self.pid)

    def _event(self, event: dict[str, Any]) -> None:
        if event.get(STARTED_KEY) and not self.started:
            self.started = True
            if self.reload_pending:
                self.signal("HUP")
        self.supervisor.publish(event)

    def outReceived(self, data: bytes) -> None:
        """Its log records."""
        self._relay.feed(data)

    def errReceived(self, data: bytes) -> None:
        """What it wrote outside its log, a line at a time."""
        *lines, self._err = (self._err + data).split(b"\n")
        for line in lines:
            if line.strip():
                self._relay.line(line.decode("utf-8", "replace"))

    def signal(self, name: str) -> None:
        """Send the signal ``name`` (``TERM``, ``HUP``, ``KILL``) if the process is there."""
        with suppress(error.ProcessExitedAlready):
            self.transport.signalProcess(name)  # type: ignore[union-attr]

    def reload(self) -> None:
        """Have it reload its configuration, now or once it has started."""
        if self.started:
            self.signal("HUP")
        else:
            self.reload_pending = True

    def processEnded(self, reason: Failure) -> None:
        """Report the end."""
        self._relay.close()
        if self._err.strip():
            self._relay.line(self._err.decode("utf-8", "replace"))
        self.supervisor.ended(self, reason)


class Supervisor(service.Service):
    """Starts ``count`` workers sharing the listeners of ``descriptions``, and keeps them."""

    def __init__(
        self,
        reactor: Any,
        descriptions: Sequence[str],
        count: int,
        command: Command,
        admin_listen: str,
        shutdown_grace: float,
        environ: dict[str, str] | None = None,
    ) -> None:
        """Supervise workers started with ``command``; the admin pages on ``admin_listen``."""
        self.reactor = reactor
        self.descriptions = list(descriptions)
        self.count = count
        self.command = command
        self.shutdown_grace = shutdown_grace
        self.environ = dict(os.environ if environ is None else environ)
        self.publish: Callable[[dict[str, Any]], None] = log.observer
        self.listeners: list[SharedListener] = []
        self.workers: dict[int, WorkerProcess] = {}
        self.restarts = 0
        self.stopping = False
        self._delays = {n: restart_delays() for n in range(1, count + 1)}
        self._pending: dict[int, Any] = {}
        self._all_ended: Deferred[None] | None = None
        self._runtime = ""
        #: The workers' open connections, shared with them (see :mod:`lambgw.workers.balance`).
        self.loads: Loads | None = None
        self.admin = Workers(self.running_pages, reactor, lambda: self.restarts, self._stopping)
        self.admin_service: service.Service | None = None
        if admin_listen:
            self.admin_service = strports.service(admin_listen, workers_admin_site(self.admin))

    def _stopping(self) -> bool:
        return self.stopping

    def running_pages(self) -> list[WorkerPages]:
        """The admin pages of the running workers, in number order."""
        return [
            WorkerPages(w.number, w.pid, w.admin_socket)
            for _, w in sorted(self.workers.items())
            if w.pid
        ]

    def privilegedStartService(self) -> None:
        """Open the S3 listeners and the admin listener (before twistd drops privileges)."""
        super().privilegedStartService()
        try:
            self.listeners = open_shared(self.reactor, self.descriptions)
        except ValueError as e:
            raise SystemExit(f"lambgw: {e}") from None
        if self.admin_service is not None:
            self.admin_service.privilegedStartService()

    def startService(self) -> None:
        """Start the workers."""
        super().startService()
        if self.admin_service is not None:
            self.admin_service.startService()
        self._runtime = tempfile.mkdtemp(prefix="lambgw-workers-")
        try:
            self.loads = Loads.create(self.count)
        except (AttributeError, OSError) as e:  # no memfd_create (not Linux, or forbidden)
            log.warn(
                "The workers cannot share their loads ({error}): new connections go to "
                "whichever worker the kernel wakes first",
                error=e,
            )
        signal.signal(signal.SIGHUP, self._on_sighup)
        log.info(
            "Starting {count} workers on {listen}",
            count=self.count,
            listen=", ".join(self.descriptions),
        )
        for number in range(1, self.count + 1):
            self.spawn(number)

    def spawn(self, number: int) -> None:
        """Start worker ``number``."""
        self._pending.pop(number, None)
        admin_socket = ""
        if self.admin_service is not None:
            admin_socket = os.path.join(self._runtime, f"worker-{number}.sock")
        worker = WorkerProcess(self, number, admin_socket)
        fds = {FIRST_FD + i: listener.fileno for i, listener in enumerate(self.listeners)}
        env = dict(self.environ)
        env[WORKER_ENV] = str(number)
        env[FDS_ENV] = ",".join(str(fd) for fd in fds)
        if self.loads is not None:
            loads_fd = FIRST_FD + len(self.listeners)
            fds[loads_fd] = self.loads.fileno()
            env[LOADS_ENV] = str(loads_fd)
        argv = list(self.command(number, admin_socket))
        self.workers[number] = worker
        self.reactor.spawnProcess(
            worker, argv[0], argv, env=env, childFDs={0: "w", 1: "r", 2: "r", **fds}
        )

    def ended(self, worker: WorkerProcess, reason: Failure) -> None:
        """A worker ended: restart it, unless the supervisor is stopping."""
        if self.workers.get(worker.number) is worker:
            del self.workers[worker.number]
            if self.loads is not None:
                self.loads.set(worker.number, ABSENT)  # nobody leaves a connection to it
        self.admin.totals.ended(worker.pid)
        if self.stopping or not self.running:
            log.info(
                "Worker {worker} (pid {pid}) {how}",
                worker=worker.number,
                pid=worker.pid,
                how=describe_end(reason),
            )
            if not self.workers and self._all_ended is not None:
                self._all_ended.callback(None)
            return
        if self.reactor.seconds() - worker.started_at >= STABLE_AFTER:
            self._delays[worker.number] = restart_delays()
        delay = next(self._delays[worker.number])
        log.warn(
            "Worker {worker} (pid {pid}) {how}; starting it again in {delay:g} s",
            worker=worker.number,
            pid=worker.pid,
            how=describe_end(reason),
            delay=delay,
        )
        self.restarts += 1
        self._pending[worker.number] = self.reactor.callLater(delay, self.spawn, worker.number)

    def _on_sighup(self, signum: int, frame: Any) -> None:
        self.reactor.callFromThread(self.reload)

    def reload(self) -> None:
        """Pass a reload on to every worker."""
        log.info("Reloading {count} workers", count=len(self.workers))
        for worker in self.workers.values():
            worker.reload()

    def stopService(self) -> Deferred[Any]:
        """Stop listening, stop the workers gracefully (killing the late), then the rest."""
        super().stopService()
        self.stopping = True
        for call in self._pending.values():
            call.cancel()
        self._pending.clear()
        for listener in self.listeners:
            listener.port.stopListening()
        ended: Deferred[None] = Deferred()
        if self.workers:
            self._all_ended = ended
            log.info("Stopping {count} workers", count=len(self.workers))
            for worker in self.workers.values():
                worker.signal("TERM")
            late = self.reactor.callLater(self.shutdown_grace + STOP_MARGIN, self._kill_late)
            ended.addBoth(lambda result: late.cancel() if late.active() else None)
        else:
            ended.callback(None)
        ended.addCallback(lambda _: self._stop_admin())
        ended.addBoth(self._remove_runtime)
        return ended

    def _kill_late(self) -> None:
        for worker in self.workers.values():
            log.warn(
                "Worker {worker} (pid {pid}) is late: killed", worker=worker.number, pid=worker.pid
            )
            worker.signal("KILL")

    def _stop_admin(self) -> Deferred[Any]:
        if self.admin_service is None or not self.admin_service.running:
            return succeed(None)
        return maybeDeferred(self.admin_service.stopService)

    def _remove_runtime(self, result: object) -> object:
        if self._runtime:
            shutil.rmtree(self._runtime, ignore_errors=True)
        if self.loads is not None:
            self.loads.close()
            self.loads = None
        return result
