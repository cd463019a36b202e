"""The twistd plugins ``lambgw`` and ``s3gw``: options, and the service tree they start.

This is the only module that touches the global reactor.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from twisted.application import service, strports
from twisted.application.internet import StreamServerEndpointService, TimerService
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks, maybeDeferred
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.threadpool import ThreadPool

from lambgw.config import Config, ConfigError, load
from lambgw.gateway.core import Gateway
from lambgw.gateway.multipart import DEFAULT_EXPIRY, MultipartUploads, UploadStore
from lambgw.network.embedded import EmbeddedNetwork
from lambgw.network.http import HTTPNetwork, account_key, network_address
from lambgw.network.interface import Order
from lambgw.observe.access import FORMATS, AccessLog
from lambgw.observe.admin import Monitor, admin_site
from lambgw.observe.inflight import InFlight
from lambgw.observe.metrics import GatewayMetrics, RateWindow
from lambgw.observe.network import TimedNetwork
from lambgw.s3.api import S3API
from lambgw.s3.front import Front
from lambgw.s3.multipart import MultipartAPI
from lambgw.s3.request import S3Request, S3Site

log = Logger()

#: The order a new account of the embedded network starts with.
FIRST_ORDER_CAPACITY = 10 * 1024**3
FIRST_ORDER_DAYS = 365.0
#: How often the order cache is refreshed from the network, in seconds.
ORDER_REFRESH = 60.0
#: How often idle multipart uploads are looked for, in seconds.
UPLOAD_SWEEP = 600.0
#: Where the admin pages (metrics, health, status) listen unless told otherwise.
DEFAULT_ADMIN_LISTEN = "tcp:9003:interface=127.0.0.1"
#: Seconds the requests in flight have to finish when the gateway is stopped.
DEFAULT_SHUTDOWN_GRACE = 30.0


class GatewayOptions(usage.Options):
    """Command-line options of both gateways, named as the storage CLI names them."""

    optParameters = [
        ["home", None, None, "Config home (default ~/.lambda_storagecli)."],
        ["config", None, None, "Config file (default HOME/config/user.toml)."],
        ["account", None, None, "The account whose orders are served."],
        ["gateway.address", None, None, "Where the S3 API listens, HOST:PORT."],
        ["gateway.access_key", None, None, "The access key S3 clients sign with."],
        ["gateway.secret_key", None, None, "The secret key S3 clients sign with."],
        ["broker.validator_addr", None, None, "The network's address (empty: embedded)."],
        ["broker.dht_gateway_addr", None, None, "The network's DHT gateway address."],
        ["broker.extra_order_id", None, None, "s3gw: the order that holds the buckets."],
        ["broker.db_path", None, None, "Gateway data (spool, state); default HOME/gateway."],
        ["broker.extra_key_file", None, None, "The account's key (default HOME/keys/ACCOUNT.key)."],
        ["broker.ca_file", None, None, "CA certificates (PEM) of an https network address."],
        [
            "multipart.expiry",
            None,
            DEFAULT_EXPIRY,
            "Seconds after which an idle multipart upload is aborted (default 7 days).",
            float,
        ],
        ["access-log-format", None, "text", "The access log's format: text or json."],
        [
            "admin-listen",
            None,
            DEFAULT_ADMIN_LISTEN,
            "Where /metrics, /healthz, /readyz and the status page listen (a Twisted "
            "endpoint description; empty: nowhere).",
        ],
        [
            "shutdown-grace",
            None,
            DEFAULT_SHUTDOWN_GRACE,
            "Seconds the requests in flight have to finish on SIGTERM.",
            float,
        ],
    ]
    optFlags = [["debug", None, "Log debugging details."]]

    #: Whether the daemon serves one order (s3gw) rather than every order (lambgw).
    single_order = False
    config: Config

    def postOptions(self) -> None:
        """Merge the config file with the flags; stop with one line if anything is wrong."""
        if self["access-log-format"] not in FORMATS:
            raise usage.UsageError(f"--access-log-format must be one of {', '.join(FORMATS)}")
        try:
            self.config = load(self)
        except ConfigError as e:
            raise SystemExit(f"{sys.argv[0] if sys.argv else 'twistd'}: {e}") from None
        if self.single_order and not self.config.extra_order_id:
            raise SystemExit(
                "s3gw needs the order that holds its buckets: --broker.extra_order_id ORDERID "
                f"or [broker] extra_order_id in {self.config.config_file}"
            )


class LambgwOptions(GatewayOptions):
    """``twistd lambgw --account A``: every order of the account is a bucket."""


class S3gwOptions(GatewayOptions):
    """``twistd s3gw --account A --broker.extra_order_id O``: one order, ordinary buckets."""

    single_order = True


class ThreadPoolService(service.Service):
    """Starts and stops a thread pool with the application."""

    def __init__(self, pool: ThreadPool) -> None:
        self.pool = pool

    def startService(self) -> None:
        """Start the pool's threads."""
        super().startService()
        self.pool.start()

    def stopService(self) -> Deferred[None] | None:
        """Stop the pool's threads."""
        super().stopService()
        self.pool.stop()
        return None


def _human(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024  # type: ignore[assignment]
    return str(size)


class GatewayService(service.MultiService):
    """The gateway: the network, the S3 API listener and the order refresher."""

    def __init__(
        self,
        config: Config,
        single_order: bool,
        reactor: Any,
        upload_expiry: float = DEFAULT_EXPIRY,
        access_log_format: str = "text",
        admin_listen: str = DEFAULT_ADMIN_LISTEN,
        shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE,
    ) -> None:
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.shutdown_grace = shutdown_grace
        self.metrics = GatewayMetrics()
        self.rates = RateWindow(reactor.seconds)
        self.db_pool = ThreadPool(minthreads=1, maxthreads=8, name="lambgw-network")
        self.spool_pool = ThreadPool(minthreads=1, maxthreads=16, name="lambgw-spool")
        ThreadPoolService(self.db_pool).setServiceParent(self)
        ThreadPoolService(self.spool_pool).setServiceParent(self)
        self.network: EmbeddedNetwork | HTTPNetwork
        if config.embedded:
            self.network = EmbeddedNetwork.from_directory(config.network_dir, reactor, self.db_pool)
        else:
            try:
                key = account_key(config.home, config.account, config.extra_key_file)
            except ValueError as e:
                raise SystemExit(f"lambgw: the account's key for the network: {e}") from None
            self.network = HTTPNetwork.connect(
                network_address(config.validator_addr, config.dht_gateway_addr),
                config.account,
                key,
                reactor,
                self.db_pool,
                config.ca_file or None,
            )
        self.single = config.extra_order_id if single_order else ""
        timed = TimedNetwork(self.network, self.metrics)
        self.gateway = Gateway.create(
            timed, config.account, os.path.join(config.db_path, "spool"), self.single
        )
        self.front = Front(self.gateway, reactor, self.spool_pool, self._secret)
        self.uploads = MultipartUploads(
            self.gateway,
            UploadStore(os.path.join(config.db_path, "uploads")),
            reactor,
            self.spool_pool,
        )
        self.gateway.reserved = self.uploads.reserved
        self.api = S3API(
            self.gateway, MultipartAPI(self.uploads, reactor, reactor, self.spool_pool)
        )
        self.api.observer = AccessLog(self.api, self.metrics, self.rates, access_log_format).begin
        self.in_flight = InFlight(reactor)
        self.site = S3Site(self.api.resource(), self.front)
        self.site.requestFactory = self.in_flight.request_factory(S3Request)  # type: ignore[assignment]
        self.site.displayTracebacks = False
        self.site.noisy = False
        # The access log replaces twisted.web's combined-log line.
        self.site.log = lambda request: None  # type: ignore[method-assign]
        host = config.host.replace(":", "\\:")
        self.listener = strports.service(f"tcp:{config.port}:interface={host}", self.site)
        self.listener.setServiceParent(self)
        TimerService(ORDER_REFRESH, self._refresh).setServiceParent(self)
        TimerService(UPLOAD_SWEEP, self._expire_uploads, upload_expiry).setServiceParent(self)
        self.mode = f"s3gw (order {self.single})" if self.single else "lambgw"
        self.admin_listen = admin_listen
        if admin_listen:
            monitor = Monitor(
                self.gateway,
                self.uploads,
                timed,
                self.metrics,
                self.rates,
                self.in_flight,
                reactor,
                self.mode,
            )
            strports.service(admin_listen, admin_site(monitor)).setServiceParent(self)

    def _secret(self, access_key: str) -> str | None:
        return self.config.secret_key if access_key == self.config.access_key else None

    def _expire_uploads(self, max_idle: float) -> Deferred[Any]:
        d: Deferred[Any] = self.uploads.expire(max_idle)
        d.addErrback(lambda f: log.failure("Expiring multipart uploads failed", f))
        return d

    def _refresh(self) -> Deferred[Any]:
        d = self.gateway.orders.refresh()
        d.addErrback(lambda f: log.warn("Order refresh failed: {why}", why=f.getErrorMessage()))
        return d

    def stopService(self) -> Deferred[Any]:
        """Stop listening, let the requests in flight finish (up to the grace), then stop."""
        service.Service.stopService(self)
        listeners = [c for c in self if isinstance(c, StreamServerEndpointService) and c.running]
        if self.in_flight.count:
            log.info(
                "Stopping: {count} requests in flight have {grace} s to finish",
                count=self.in_flight.count,
                grace=self.shutdown_grace,
            )
        d: Deferred[Any] = DeferredList([maybeDeferred(c.stopService) for c in listeners])
        d.addCallback(lambda _: self.in_flight.drain(self.shutdown_grace))
        d.addCallback(self._stop_the_rest)
        return d

    def _stop_the_rest(self, left: int) -> Deferred[Any]:
        if left:
            log.warn("Stopping with {count} requests unfinished", count=left)
        rest = [c for c in reversed(list(self)) if c.running]
        return DeferredList([maybeDeferred(c.stopService) for c in rest])

    def startService(self) -> None:
        """Create the account on first start, check the order, then listen."""
        service.Service.startService(self)
        for child in list(self)[:2]:
            child.startService()
        self.reactor.callWhenRunning(self._start)

    @inlineCallbacks
    def _start(self) -> Any:
        config = self.config
        try:
            orders: list[Order] = yield self.network.ensure_account(
                config.account, FIRST_ORDER_CAPACITY, FIRST_ORDER_DAYS
            )
            yield self.gateway.orders.refresh()
            if self.single and self.gateway.orders.known(self.single) is None:
                raise ConfigError(
                    f"order {self.single} is not an order of account {config.account}"
                )
            for child in list(self)[2:]:
                child.startService()
        except BaseException as e:
            log.critical("Cannot start: {why}", why=str(e))
            self.reactor.stop()
            return
        for order in orders:
            log.info(
                "Account {account}: order {order_id}, {used} used of {capacity}, {status}",
                account=config.account,
                order_id=order.order_id,
                used=_human(order.used),
                capacity=_human(order.capacity),
                status="expired" if order.expired(self.reactor.seconds()) else order.status,
            )
        mode = f"s3gw (order {self.single})" if self.single else "lambgw (each order is a bucket)"
        log.info(
            "S3 API on http://{address}/ in {mode} mode; access key {access_key}",
            address=config.address,
            mode=mode,
            access_key=config.access_key,
        )
        if self.admin_listen:
            log.info("Metrics, health and status pages on {admin}", admin=self.admin_listen)
        if config.default_keys:
            log.warn(
                "No [gateway] access_key/secret_key in {file}: using the default keys; set "
                "your own before listening beyond loopback",
                file=config.config_file,
            )


def make_service(options: GatewayOptions) -> service.IService:
    """Build the gateway service from parsed options (used by the twistd plugins)."""
    from twisted.internet import reactor

    return GatewayService(
        options.config,
        options.single_order,
        reactor,
        options["multipart.expiry"],
        options["access-log-format"],
        options["admin-listen"],
        options["shutdown-grace"],
    )
