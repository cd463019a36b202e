"""The supervisor's admin listener: the pages of every worker, answered as one gateway's.

Each worker serves its own admin pages on a UNIX socket in a private directory; the
supervisor alone listens on ``--admin-listen`` and asks the workers:

- ``/metrics`` sums the workers' metrics (:class:`MetricTotals`): counters and histograms
  add up, and so do ``lambgw_requests_in_flight`` and ``lambgw_connections_open``; the gauges
  that describe what the workers share (orders, open uploads, the spool) are taken from the
  lowest-numbered worker that answered.  The counts of a worker that ended are kept as of its
  last answer, so the sums never go down.  ``lambgw_workers`` and
  ``lambgw_worker_restarts_total`` are the supervisor's own.
- ``/readyz`` is 200 when at least one worker is ready (any worker serves any request of
  the shared sockets), with each worker's answer in the body; 503 while stopping.
- ``/healthz`` answers while the supervisor runs; ``/`` is the status page of the
  lowest-numbered worker that answers (its request rates are that worker's).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import treq
from attrs import define, field, frozen
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.client import Agent, HTTPConnectionPool, _HTTP11ClientFactory
from twisted.web.iweb import IAgentEndpointFactory
from twisted.web.resource import Resource
from zope.interface import implementer

log = Logger()

#: Seconds a worker has to answer the supervisor's admin listener.
WORKER_TIMEOUT = 5.0
#: Metric families of kind gauge that are per process, so summed across workers.
SUMMED_GAUGES = frozenset({"lambgw_requests_in_flight", "lambgw_connections_open"})
#: Kinds of metric family whose samples add up across processes.
ADDITIVE_KINDS = frozenset({"counter", "histogram", "summary"})


@frozen
class Family:
    """A metric family of one text exposition: its header lines and its samples."""

    name: str
    kind: str
    header: tuple[str, ...]
    #: Each sample's name and labels (the text before the value), and its value.
    samples: Mapping[str, float]

    @property
    def summed(self) -> bool:
        """Whether the family's samples add up across workers."""
        return self.kind in ADDITIVE_KINDS or self.name in SUMMED_GAUGES


def parse_exposition(text: str) -> list[Family]:
    """The families of a Prometheus text exposition, in order (no timestamps expected)."""
    families: list[Family] = []
    name, kind = "", "untyped"
    header: list[str] = []
    samples: dict[str, float] = {}

    def close() -> None:
        if name:
            families.append(Family(name, kind, tuple(header), dict(samples)))

    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                if parts[2] != name:
                    close()
                    name, kind, header, samples = parts[2], "untyped", [], {}
                if parts[1] == "TYPE" and len(parts) == 4:
                    kind = parts[3].strip()
                header.append(line)
            continue
        key, _, value = line.rpartition(" ")
        try:
            samples[key] = samples.get(key, 0.0) + float(value)
        except ValueError:
            continue
    close()
    return families


def _number(value: float) -> str:
    if value == int(value) and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def merge(expositions: Sequence[list[Family]], retired: Mapping[str, float] = {}) -> str:
    """One exposition of several processes' families, plus the counts of ended processes.

    Summed families add up (``retired`` included); the others take the first exposition's
    value of each sample.
    """
    order: list[str] = []
    merged: dict[str, tuple[Family, dict[str, float]]] = {}
    for families in expositions:
        for family in families:
            if family.name not in merged:
                order.append(family.name)
                merged[family.name] = (family, {})
            values = merged[family.name][1]
            for key, value in family.samples.items():
                if family.summed:
                    values[key] = values.get(key, 0.0) + value
                else:
                    values.setdefault(key, value)
    lines: list[str] = []
    for name in order:
        family, values = merged[name]
        if family.summed:
            for key, value in retired.items():
                if _sample_family(key, name):
                    values[key] = values.get(key, 0.0) + value
        lines += family.header
        lines += [f"{key} {_number(value)}" for key, value in sorted(values.items())]
    return "\n".join(lines) + "\n" if lines else ""


def _sample_family(key: str, name: str) -> bool:
    """Whether the sample ``key`` (name and labels) belongs to the family ``name``."""
    sample = key.split("{", 1)[0]
    return sample == name or (
        sample.startswith(name + "_")
        and sample[len(name) + 1 :] in ("total", "bucket", "sum", "count", "created")
    )


@define
class MetricTotals:
    """The workers' metrics, summed so that counts never go down as workers come and go."""

    #: The last exposition of each running worker process, by process id.
    _last: dict[int, list[Family]] = field(factory=dict)
    #: The summed samples of the worker processes that ended.
    _retired: dict[str, float] = field(factory=dict)

    def answered(self, pid: int, text: str) -> None:
        """Worker process ``pid`` answered ``/metrics`` with ``text``."""
        self._last[pid] = parse_exposition(text)

    def ended(self, pid: int) -> None:
        """Worker process ``pid`` is gone: keep its counts."""
        for family in self._last.pop(pid, []):
            if family.kind in ADDITIVE_KINDS:
                for key, value in family.samples.items():
                    self._retired[key] = self._retired.get(key, 0.0) + value

    def render(self, pids: Sequence[int]) -> str:
        """The sum over the running processes ``pids`` (in worker order) and the ended ones."""
        return merge([self._last[pid] for pid in pids if pid in self._last], self._retired)


class _QuietClientFactory(_HTTP11ClientFactory):
    """Asking a worker is not worth two log lines."""

    noisy = False


@implementer(IAgentEndpointFactory)
@frozen
class _SocketEndpoints:
    reactor: Any
    path: str

    def endpointForURI(self, uri: Any) -> UNIXClientEndpoint:
        return UNIXClientEndpoint(self.reactor, self.path, timeout=WORKER_TIMEOUT)


@frozen
class WorkerPages:
    """A running worker's admin pages, on the UNIX socket ``path``."""

    number: int
    pid: int
    path: str

    @inlineCallbacks
    def get(self, reactor: Any, pool: HTTPConnectionPool, page: str) -> Any:
        """Fire with the status code, content type and body of ``page`` (e.g. ``/metrics``)."""
        endpoints = _SocketEndpoints(reactor, self.path)
        client = treq.client.HTTPClient(Agent.usingEndpointFactory(reactor, endpoints, pool))
        response = yield client.get(f"http://worker{page}", timeout=WORKER_TIMEOUT)
        body = yield response.content()
        kind = response.headers.getRawHeaders(b"content-type", [b"text/plain"])[0]
        return response.code, kind, body


@define
class Workers:
    """What the supervisor's admin pages ask: the running workers, in number order."""

    running: Callable[[], Sequence[WorkerPages]]
    reactor: Any
    restarts: Callable[[], int]
    stopping: Callable[[], bool]
    totals: MetricTotals = field(factory=MetricTotals)
    pool: HTTPConnectionPool = field(init=False)

    def __attrs_post_init__(self) -> None:
        self.pool = HTTPConnectionPool(self.reactor, persistent=False)
        self.pool._factory = _QuietClientFactory

    def ask(self, page: str) -> Deferred[list[tuple[WorkerPages, Any]]]:
        """Ask every running worker for ``page``; fire with each worker and its answer.

        The answer is ``(code, content type, body)``, or a Failure for a worker that did
        not answer.
        """
        workers = list(self.running())
        d = DeferredList(
            [w.get(self.reactor, self.pool, page) for w in workers], consumeErrors=True
        )
        return d.addCallback(
            lambda results: [(w, r[1]) for w, r in zip(workers, results, strict=True)]
        )


def _finish(request: server.Request, code: int, kind: bytes, body: bytes) -> None:
    if request.finished or request._disconnected:
        return
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", kind)
    request.setHeader(b"Cache-Control", b"no-store")
    request.setHeader(b"Content-Length", str(len(body)).encode())
    request.write(body)
    request.finish()


class _Page(Resource):
    """A page answered from the same page of every running worker."""

    isLeaf = True
    #: The workers' page asked.
    page = "/"

    def __init__(self, workers: Workers) -> None:
        super().__init__()
        self.workers = workers

    def answer(self, answers: list[tuple[WorkerPages, Any]]) -> tuple[int, bytes, bytes]:
        """The status, content type and body made of the workers' answers."""
        raise NotImplementedError

    def render_GET(self, request: server.Request) -> int:
        """Ask the workers, then answer."""

        def failed(failure: Failure) -> None:
            log.failure("Admin page {path} failed", failure, path=request.path)
            _finish(request, 500, b"text/plain", b"internal error\n")

        def answer(answers: list[tuple[WorkerPages, Any]]) -> None:
            _finish(request, *self.answer(answers))

        self.workers.ask(self.page).addCallback(answer).addErrback(failed)
        return server.NOT_DONE_YET


class MetricsPage(_Page):
    """``/metrics``: the workers' metrics summed, and the supervisor's own."""

    page = "/metrics"

    def answer(self, answers: list[tuple[WorkerPages, Any]]) -> tuple[int, bytes, bytes]:
        """The sums, and the supervisor's own metrics."""
        totals = self.workers.totals
        for worker, got in answers:
            if isinstance(got, tuple) and got[0] == 200:
                totals.answered(worker.pid, got[2].decode("utf-8", "replace"))
        text = totals.render([w.pid for w, _ in answers]) + "".join(self._own(len(answers)))
        return 200, b"text/plain; version=0.0.4; charset=utf-8", text.encode("utf-8")

    def _own(self, running: int) -> Iterator[str]:
        yield "# HELP lambgw_workers Gateway worker processes running.\n"
        yield "# TYPE lambgw_workers gauge\n"
        yield f"lambgw_workers {running}\n"
        yield "# HELP lambgw_worker_restarts Worker processes restarted after they ended.\n"
        yield "# TYPE lambgw_worker_restarts counter\n"
        yield f"lambgw_worker_restarts_total {self.workers.restarts()}\n"


class ReadyPage(_Page):
    """``/readyz``: 200 when a worker is ready, each worker's answer in the body."""

    page = "/readyz"

    def answer(self, answers: list[tuple[WorkerPages, Any]]) -> tuple[int, bytes, bytes]:
        """Ready if a worker is; each worker's answer."""
        lines, ready = [], False
        if self.workers.stopping():
            lines.append("shutting down")
        for worker, got in answers:
            if isinstance(got, tuple):
                said = got[2].decode("utf-8", "replace").strip().replace("\n", "; ")
                ready = ready or got[0] == 200
            else:
                said = f"no answer: {got.getErrorMessage()}"
            lines.append(f"worker {worker.number}: {said}")
        if not answers:
            lines.append("no worker running")
        code = 200 if ready and not self.workers.stopping() else 503
        return code, b"text/plain; charset=utf-8", ("\n".join(lines) + "\n").encode("utf-8")


class StatusPage(_Page):
    """``/``: the status page of the first worker that answers."""

    page = "/"

    def answer(self, answers: list[tuple[WorkerPages, Any]]) -> tuple[int, bytes, bytes]:
        """The first worker's page that came."""
        for _, got in answers:
            if isinstance(got, tuple) and got[0] == 200:
                return got
        return 503, b"text/plain; charset=utf-8", b"no worker answered\n"


class HealthPage(Resource):
    """``/healthz``: answers while the supervisor runs."""

    isLeaf = True

    def render_GET(self, request: server.Request) -> bytes:
        """Say the supervisor is alive."""
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        return b"ok\n"


class _Root(Resource):
    def __init__(self, workers: Workers) -> None:
        super().__init__()
        self.status = StatusPage(workers)
        self.putChild(b"metrics", MetricsPage(workers))
        self.putChild(b"healthz", HealthPage())
        self.putChild(b"readyz", ReadyPage(workers))

    def getChild(self, path: bytes, request: server.Request) -> Resource:
        if path == b"":
            return self.status
        return super().getChild(path, request)


def workers_admin_site(workers: Workers) -> server.Site:
    """The site of the supervisor's admin listener."""
    site = server.Site(_Root(workers))
    site.displayTracebacks = False
    site.noisy = False
    site.log = lambda request: None  # type: ignore[method-assign]
    return site
