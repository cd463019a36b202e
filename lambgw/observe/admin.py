"""The admin listener: ``/metrics``, ``/healthz``, ``/readyz`` and the status page at ``/``.

It is served apart from the S3 API (by default on loopback only): nothing on it is signed.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Generator, Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit

from attrs import define, field
from twisted.internet import protocol
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.resource import Resource

from lambgw.gateway.core import Gateway
from lambgw.gateway.multipart import MultipartUploads
from lambgw.network.interface import INetwork, Order
from lambgw.observe.inflight import InFlight
from lambgw.observe.metrics import CONTENT_TYPE, GatewayMetrics, RateWindow
from lambgw.observe.status import OpenUpload, StatusSnapshot, render_status

#: Seconds the network has to answer a readiness check.
READY_TIMEOUT = 5.0
#: The ports of URLs that name none.
DEFAULT_PORTS = {"http": 80, "https": 443}

log = Logger()


def directory_bytes(root: str) -> int:
    """The bytes of the files under ``root`` (0 if it does not exist)."""
    total = 0
    for directory, _, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(directory, name)).st_size
            except OSError:
                continue
    return total


def check_writable(directory: str) -> None:
    """Write, sync and remove a small file in ``directory``; raise OSError if that fails."""
    fd, path = tempfile.mkstemp(prefix=".ready-", dir=directory)
    try:
        os.write(fd, b"ready")
        os.fsync(fd)
    finally:
        os.close(fd)
        os.remove(path)


def connection_probe(reactor: Any, url: str) -> Callable[[], Deferred[None]]:
    """What opens (and closes at once) a TCP connection to the node at ``url``.

    A node that refuses connections is known at once this way, while a call to the network
    retries a refused connection for seconds.
    """
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = parts.port or DEFAULT_PORTS.get(parts.scheme, 80)

    def probe() -> Deferred[None]:
        endpoint = HostnameEndpoint(reactor, host, port, timeout=READY_TIMEOUT)
        d: Deferred[Any] = endpoint.connect(protocol.Factory.forProtocol(protocol.Protocol))
        return d.addCallback(lambda protocol: protocol.transport.loseConnection())

    return probe


class ServedAccount(Protocol):
    """An account the gateway serves: its gateway core and its multipart uploads."""

    @property
    def gateway(self) -> Gateway:
        """The account's buckets and objects."""

    @property
    def uploads(self) -> MultipartUploads:
        """The account's multipart uploads."""


@define
class Monitor:
    """What the admin listener reports on: the gateway's metrics, orders, uploads and health.

    ``served`` gives the accounts served so far, the one of ``--account`` first.
    """

    served: Callable[[], Sequence[ServedAccount]]
    network: INetwork
    metrics: GatewayMetrics
    rates: RateWindow
    in_flight: InFlight
    reactor: IReactorTime
    mode: str
    wall_clock: Callable[[], float] = time.time
    started: float = field(factory=time.time)
    #: Whether the S3 ports are open (they open once the network has answered at start).
    listening: Callable[[], bool] = lambda: True
    #: Connects to the network's node, if it has one (see :func:`connection_probe`).
    probe: Callable[[], Deferred[None]] | None = None
    #: How many connections are open on the S3 API.
    connections: Callable[[], int] = lambda: 0

    @property
    def _main(self) -> ServedAccount:
        return self.served()[0]

    def _in_pool(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        pool = self._main.uploads.pool
        return deferToThreadPool(self.reactor, pool, f, *args)  # type: ignore[arg-type]

    def _orders(self) -> list[Order]:
        return [o for served in self.served() for o in served.gateway.orders.all()]

    @inlineCallbacks
    def open_uploads(self) -> Generator[Deferred[Any], Any, list[OpenUpload]]:
        """The open multipart uploads of every account served, oldest first."""
        uploads = []
        for served in self.served():
            found = yield served.uploads.open_uploads()
            for u in found:
                bucket, key = served.uploads.bucket_and_key(u)
                uploads.append(OpenUpload(u.upload_id, bucket, key, u.parts, u.size, u.last_active))
        return sorted(uploads, key=lambda u: (u.last_activity, u.upload_id))

    @inlineCallbacks
    def refresh(self) -> Generator[Deferred[Any], Any, None]:
        """Set the gauges to the current orders, uploads, spool and requests in flight."""
        metrics = self.metrics
        metrics.in_flight.set(self.in_flight.count)
        metrics.connections_open.set(self.connections())
        for gauge in (metrics.order_capacity, metrics.order_used, metrics.order_expires):
            gauge.clear()
        for order in self._orders():
            metrics.order_capacity.labels(order.order_id).set(order.capacity)
            metrics.order_used.labels(order.order_id).set(order.used)
            metrics.order_expires.labels(order.order_id).set(order.expires)
        uploads = yield self.open_uploads()
        metrics.uploads_open.set(len(uploads))
        served = self.served()
        roots = [s.gateway.spool_dir for s in served]
        size = yield self._in_pool(lambda roots: sum(map(directory_bytes, roots)), roots)
        metrics.spool_bytes.labels("bodies").set(size)
        metrics.spool_free.set(self._main.gateway.spool.free())

    @inlineCallbacks
    def problems(self) -> Generator[Deferred[Any], Any, list[str]]:
        """Why the gateway is not ready to serve (nothing when it is)."""
        found = []
        if self.in_flight.draining:
            found.append("shutting down")
        elif not self.listening():
            found.append("starting: the S3 ports open once the network has answered")
        try:
            if self.probe is not None:
                yield self.probe()
            d = self.network.orders(self._main.gateway.account)
            d.addTimeout(READY_TIMEOUT, self.reactor)
            yield d
        except Exception as e:
            found.append(f"network unreachable: {type(e).__name__}: {e}")
        try:
            yield self._in_pool(check_writable, self._main.gateway.spool_dir)
        except OSError as e:
            found.append(f"spool not writable: {e}")
        for served in self.served():
            shortage = served.gateway.spool.shortage()  # a statvfs: no waiting on the disk
            if shortage:
                found.append(shortage)
        return found

    @inlineCallbacks
    def snapshot(self) -> Generator[Deferred[Any], Any, StatusSnapshot]:
        """What the status page shows, now."""
        uploads = yield self.open_uploads()
        now = self.wall_clock()
        return StatusSnapshot(
            account=self._main.gateway.account,
            mode=self.mode,
            now=now,
            uptime=now - self.started,
            orders=self._orders(),
            uploads=uploads,
            rates=self.rates.rates(),
            in_flight=self.in_flight.count,
        )


def _answer(
    request: server.Request, d: Deferred[Any], content_type: bytes, render: Callable[[Any], bytes]
) -> int:
    """Finish ``request`` with what ``render`` makes of ``d``'s result."""

    def done(result: Any) -> None:
        body = render(result)
        request.setHeader(b"Content-Type", content_type)
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"Content-Length", str(len(body)).encode())
        if not request.finished and not request._disconnected:
            request.write(body)
            request.finish()

    def failed(failure: Failure) -> None:
        log.failure("Admin page {path} failed", failure, path=request.path)
        if not request.finished and not request._disconnected:
            request.setResponseCode(500)
            request.write(b"internal error\n")
            request.finish()

    d.addCallback(done).addErrback(failed)
    return server.NOT_DONE_YET


class MetricsPage(Resource):
    """``/metrics``: every metric in the Prometheus text format."""

    isLeaf = True

    def __init__(self, monitor: Monitor) -> None:
        super().__init__()
        self._monitor = monitor

    def render_GET(self, request: server.Request) -> int:
        """Refresh the gauges, then write every metric."""
        metrics = self._monitor.metrics
        return _answer(
            request,
            self._monitor.refresh(),
            CONTENT_TYPE.encode("ascii"),
            lambda _: metrics.render().encode("utf-8"),
        )


class HealthPage(Resource):
    """``/healthz``: answers while the process serves at all."""

    isLeaf = True

    def render_GET(self, request: server.Request) -> bytes:
        """Say the gateway is alive."""
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        return b"ok\n"


class ReadyPage(Resource):
    """``/readyz``: 200 when the network answers and the spool is writable, else 503."""

    isLeaf = True

    def __init__(self, monitor: Monitor) -> None:
        super().__init__()
        self._monitor = monitor

    def render_GET(self, request: server.Request) -> int:
        """Check the network and the spool; say what is wrong, if anything."""

        def render(problems: list[str]) -> bytes:
            if problems:
                request.setResponseCode(503)
                return ("\n".join(problems) + "\n").encode("utf-8")
            return b"ready\n"

        return _answer(request, self._monitor.problems(), b"text/plain; charset=utf-8", render)


class AdminRoot(Resource):
    """The admin site's root: the status page, and the other pages below it."""

    def __init__(self, monitor: Monitor) -> None:
        super().__init__()
        self._monitor = monitor
        self.putChild(b"metrics", MetricsPage(monitor))
        self.putChild(b"healthz", HealthPage())
        self.putChild(b"readyz", ReadyPage(monitor))

    def getChild(self, path: bytes, request: server.Request) -> Resource:
        """The root itself for ``/``; nothing else is there."""
        if path == b"":
            return self
        return super().getChild(path, request)

    def render_GET(self, request: server.Request) -> int:
        """The status page."""
        return _answer(
            request, self._monitor.snapshot(), b"text/html; charset=utf-8", render_status
        )


def admin_site(monitor: Monitor) -> server.Site:
    """The site of the admin listener."""
    site = server.Site(AdminRoot(monitor))
    site.displayTracebacks = False
    site.noisy = False
    site.log = lambda request: None  # type: ignore[method-assign]
    return site
