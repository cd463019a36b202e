"""The twistd plugins ``lambgw`` and ``s3gw``: the service tree they start.

Their options are in :mod:`lambgw.options`.

This is the only module that touches the global reactor.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import Any, TypeVar

from attrs import frozen
from OpenSSL import SSL
from service_identity.exceptions import VerificationError
from twisted.application import service, strports
from twisted.application.internet import StreamServerEndpointService, TimerService
from twisted.internet.defer import (
    Deferred,
    DeferredList,
    gatherResults,
    inlineCallbacks,
    maybeDeferred,
)
from twisted.internet.interfaces import IReactorTime, IStreamServerEndpoint
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from lambgw.allocator import fix_mmap_threshold, tune_collector
from lambgw.config import Config, ConfigError
from lambgw.dispatch import lean_dispatch
from lambgw.gateway.core import Gateway, sweep_spool
from lambgw.gateway.legacy import adopt_uploads
from lambgw.gateway.multipart import MultipartUploads
from lambgw.listening import listen_descriptions, server_endpoint
from lambgw.network.completion import DEFAULT_UPLOAD_EXPIRY
from lambgw.network.embedded import EmbeddedNetwork
from lambgw.network.errors import NetworkError, NetworkUnavailable
from lambgw.network.http import HTTPNetwork, account_key, network_address
from lambgw.network.interface import Order
from lambgw.observe.access import AccessLog
from lambgw.observe.accessfile import AccessLogFile
from lambgw.observe.admin import Monitor, admin_site, connection_probe
from lambgw.observe.inflight import InFlight
from lambgw.observe.metrics import GatewayMetrics, RateWindow
from lambgw.observe.network import TimedNetwork
from lambgw.options import (
    DEFAULT_ADMIN_LISTEN,
    DEFAULT_SHUTDOWN_GRACE,
    GatewayOptions,
    load_for_mode,
)
from lambgw.s3.api import S3API, S3Resource
from lambgw.s3.connections import Connections
from lambgw.s3.front import Front
from lambgw.s3.multipart import MultipartAPI
from lambgw.s3.request import S3Request, S3Site
from lambgw.users import Accounts
from lambgw.workers.launch import workers_service

log = Logger()
T = TypeVar("T")

#: The order a new account of the embedded network starts with.
FIRST_ORDER_CAPACITY = 10 * 1024**3
FIRST_ORDER_DAYS = 365.0
#: How often the order cache is refreshed from the network, in seconds.
ORDER_REFRESH = 60.0
#: How often the spool is swept of bodies left by a crash (and the embedded network of idle
#: multipart uploads), in seconds.
UPLOAD_SWEEP = 600.0
#: The exit status of a start-up refused for its configuration (EX_CONFIG: an order the account
#: does not hold, an account the network does not know, a certificate it refuses); the systemd
#: units do not restart on it.  Any other failed start-up exits with 1.
EXIT_CONFIG = 78
EXIT_FAILURE = 1
#: Seconds before the second attempt to reach the network at start; each wait doubles, up to
#: the most.
START_RETRY_FIRST = 1.0
START_RETRY_MOST = 30.0


def start_delays(
    first: float = START_RETRY_FIRST, most: float = START_RETRY_MOST
) -> Iterator[float]:
    """The waits between attempts to reach the network at start: doubling, capped at ``most``."""
    delay = first
    while True:
        yield delay
        delay = min(delay * 2, most)


def refused_tls(error: BaseException) -> bool:
    """Whether ``error`` came from a TLS handshake that failed (certificate, name, protocol).

    Waiting does not mend those: the address or the CA file is wrong.  The transport's
    failure is the context of the network error, possibly holding several reasons.
    """
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, SSL.Error | VerificationError):
            return True
        if any(r.check(SSL.Error, VerificationError) for r in getattr(cause, "reasons", [])):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


@inlineCallbacks
def wait_for_network(
    attempt: Callable[[], Deferred[T]],
    clock: IReactorTime,
    address: str,
    wanted: Callable[[], bool] = lambda: True,
) -> Generator[Deferred[Any], Any, T]:
    """Call ``attempt`` until the network at ``address`` answers; its result.

    While it fails with :class:`NetworkUnavailable`, each failure is one warning line and
    the next try comes after :func:`start_delays`.  Any other error, a refused TLS
    handshake, or a failure once ``wanted()`` is false, is raised at once.  Cancelling
    stops the waiting.
    """
    for delay in start_delays():
        try:
            result: T = yield attempt()
            return result
        except NetworkUnavailable as e:
            if refused_tls(e) or not wanted():
                raise
            log.warn(
                "Waiting for the network node at {address}: {why} (next try in {delay:g} s)",
                address=address,
                why=str(e),
                delay=delay,
            )
        yield deferLater(clock, delay, lambda: None)
    raise AssertionError("unreachable")


@frozen
class AccountServer:
    """What serves one account: its gateway, its multipart uploads and its S3 API."""

    gateway: Gateway
    uploads: MultipartUploads
    api: S3API


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
        upload_expiry: float = DEFAULT_UPLOAD_EXPIRY,
        access_log_format: str = "text",
        admin_listen: str = DEFAULT_ADMIN_LISTEN,
        shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE,
        reload_config: Callable[[], Config] | None = None,
        access_log_file: str = "",
        endpoint_for: Callable[[Any, str], IStreamServerEndpoint] = server_endpoint,
    ) -> None:
        super().__init__()
        self.config = config
        self._reload_config = reload_config
        self.reactor = reactor
        self.shutdown_grace = shutdown_grace
        #: The status the process exits with: not 0 once start-up has failed.
        self.exit_status = 0
        self.metrics = GatewayMetrics()
        self.rates = RateWindow(reactor.seconds)
        self.db_pool = ThreadPool(minthreads=1, maxthreads=8, name="lambgw-network")
        self.spool_pool = ThreadPool(minthreads=1, maxthreads=16, name="lambgw-spool")
        ThreadPoolService(self.db_pool).setServiceParent(self)
        ThreadPoolService(self.spool_pool).setServiceParent(self)
        self.network: EmbeddedNetwork | HTTPNetwork
        #: Where the network is, for the log: its address, or the embedded store's directory.
        self.network_address = config.network_dir
        #: Reaching the network at start (cancelled if the gateway stops first).
        self._starting: Deferred[list[Order]] | None = None
        if config.embedded:
            self.network = EmbeddedNetwork.from_directory(
                config.network_dir, reactor, self.db_pool, upload_expiry
            )
        else:
            self.network_address = network_address(config.validator_addr, config.dht_gateway_addr)
            try:
                key = account_key(config.home, config.account, config.extra_key_file)
            except ValueError as e:
                raise SystemExit(f"lambgw: the account's key for the network: {e}") from None
            self.network = HTTPNetwork.connect(
                self.network_address,
                config.account,
                key,
                reactor,
                self.db_pool,
                config.ca_file or None,
                silence=config.network_timeout,
            )
        self.single = config.extra_order_id if single_order else ""
        timed = TimedNetwork(self.network, self.metrics)
        self.gateway = Gateway.create(
            timed, config.account, os.path.join(config.db_path, "spool"), self.single
        )
        self.uploads = MultipartUploads(
            self.gateway, reactor, self.spool_pool, os.path.join(config.db_path, "uploads")
        )
        self.api = S3API(
            self.gateway, MultipartAPI(self.uploads, reactor, reactor, self.spool_pool)
        )
        access_log = AccessLog(self.api, self.metrics, self.rates, access_log_format)
        self.access_file: AccessLogFile | None = None
        if access_log_file:
            try:
                self.access_file = AccessLogFile(access_log_file, reactor)
            except OSError as e:
                raise SystemExit(f"lambgw: --access-log {access_log_file}: {e.strerror}") from None
            access_log.sink = self.access_file.write
        self.api.observer = access_log.begin
        self.in_flight = InFlight(reactor)
        self.accounts: Accounts[AccountServer] = Accounts(
            self._serve_account,
            config.users,
            {config.account: AccountServer(self.gateway, self.uploads, self.api)},
        )
        self.front = Front(
            lambda key: self.accounts.for_key(key).gateway,
            reactor,
            self.spool_pool,
            self.accounts.secret,
            domains=config.domains,
            spliced=lambda count: self.metrics.spliced_bytes.inc(amount=count),
        )
        resource = S3Resource(
            self.api, lambda key: self.accounts.for_key(key).api, lambda: self.config.cors
        )
        self.connections = Connections(config.limits, self.metrics.connections_closed.inc)
        self.site = S3Site(resource, self.front, self.connections)
        self.site.requestFactory = self.in_flight.request_factory(  # type: ignore[assignment]
            access_log.request_factory(S3Request)
        )
        self.site.displayTracebacks = False
        self.site.noisy = False
        # The access log replaces twisted.web's combined-log line.
        self.site.log = lambda request: None  # type: ignore[method-assign]
        self.listeners = []
        for description in listen_descriptions(config):
            try:
                endpoint = endpoint_for(reactor, description)
            except ValueError as e:
                raise SystemExit(f"lambgw: {e}") from None
            listener = StreamServerEndpointService(endpoint, self.site)
            # A port that cannot be opened stops start-up (as with strports.service).
            listener._raiseSynchronously = True
            listener.setServiceParent(self)
            self.listeners.append(listener)
        self.listener = self.listeners[0]
        TimerService(ORDER_REFRESH, self._refresh).setServiceParent(self)
        TimerService(UPLOAD_SWEEP, self._sweep).setServiceParent(self)
        self.mode = f"s3gw (order {self.single})" if self.single else "lambgw"
        self.admin_listen = admin_listen
        #: What runs from the start, before the network answers: the thread pools, the admin
        #: listener.  The S3 listeners and the timers start once the network answers.
        self.early: list[service.IService] = list(self)[:2]
        if admin_listen:
            monitor = Monitor(
                self.accounts.serving,
                timed,
                self.metrics,
                self.rates,
                self.in_flight,
                reactor,
                self.mode,
                listening=lambda: all(listener.running for listener in self.listeners),
                probe=None if config.embedded else connection_probe(reactor, self.network_address),
                connections=lambda: self.connections.open,
            )
            admin_service = strports.service(admin_listen, admin_site(monitor))
            admin_service.setServiceParent(self)
            self.early.append(admin_service)

    def _serve_account(self, account: str) -> AccountServer:
        """The gateway, multipart uploads and S3 API of an account other than ``--account``."""
        data = os.path.join(self.config.db_path, "accounts", account)
        gateway = Gateway.create(
            self.gateway.network, account, os.path.join(data, "spool"), self.single
        )
        uploads = MultipartUploads(
            gateway, self.reactor, self.spool_pool, os.path.join(data, "uploads")
        )
        multipart = MultipartAPI(uploads, self.reactor, self.reactor, self.spool_pool)
        return AccountServer(gateway, uploads, S3API(gateway, multipart))

    def _sweep(self) -> Deferred[Any]:
        """Sweep the spools of bodies left by a crash; the embedded network expires uploads.

        (A lambnet node expires the uploads it holds by itself.)
        """
        served = self.accounts.serving()
        work: list[Deferred[Any]] = [
            deferToThreadPool(self.reactor, self.spool_pool, sweep_spool, a.gateway.spool_dir)
            for a in served
        ]
        if isinstance(self.network, EmbeddedNetwork):
            work.append(self.network.expire_uploads())
        d: Deferred[Any] = gatherResults(work)
        d.addErrback(lambda f: log.failure("Sweeping the spool or expiring uploads failed", f))
        return d

    @inlineCallbacks
    def _adopt_legacy(self, served: AccountServer) -> Generator[Deferred[Any], Any, None]:
        """Move the multipart uploads an earlier release left on disk into the network."""
        uploads = served.uploads
        try:
            yield adopt_uploads(
                self.network, served.gateway.account, uploads.legacy_dir, self.reactor, uploads.pool
            )
        except Exception:
            log.failure("Moving the multipart uploads in {root} failed", root=uploads.legacy_dir)

    def _refresh(self) -> Deferred[Any]:
        served = self.accounts.serving()
        d: Deferred[Any] = gatherResults([a.gateway.orders.refresh() for a in served])
        d.addErrback(lambda f: log.warn("Order refresh failed: {why}", why=f.getErrorMessage()))
        return d

    @inlineCallbacks
    def _open_accounts(self, accounts: list[str]) -> Any:
        """Make sure each account exists on the network, load its orders and log them."""
        for account in accounts:
            orders = yield self.network.ensure_account(
                account, FIRST_ORDER_CAPACITY, FIRST_ORDER_DAYS
            )
            served = self.accounts.for_account(account)
            yield served.gateway.orders.refresh()
            self._log_orders(account, orders)
            yield self._adopt_legacy(served)

    def _log_orders(self, account: str, orders: Sequence[Order]) -> None:
        """One line per order of ``account``: its id, space used, capacity and status."""
        for order in orders:
            log.info(
                "Account {account}: order {order_id}, {used} used of {capacity}, {status}",
                account=account,
                order_id=order.order_id,
                used=_human(order.used),
                capacity=_human(order.capacity),
                status="expired" if order.expired(self.reactor.seconds()) else order.status,
            )

    def reload(self) -> Deferred[Any] | None:
        """Re-read the config file: keys and users, CORS and domains; listeners stay.

        A file that cannot be used is reported in one line and the running configuration
        is kept.  New accounts are opened before their keys are accepted.  The access log
        file, if any, is reopened (after a rotation).
        """
        if self.access_file is not None:
            try:
                self.access_file.reopen()
            except OSError as e:
                log.error(
                    "Cannot reopen the access log {path}: {why}",
                    path=self.access_file.path,
                    why=e.strerror,
                )
        if self._reload_config is None:
            return None
        try:
            config = self._reload_config()
        except ConfigError as e:
            log.error("Reload refused, keeping the running configuration: {why}", why=str(e))
            return None
        served = {a.gateway.account for a in self.accounts.serving()}
        d: Deferred[Any] = self._open_accounts(
            [a for a in config.users.accounts if a not in served]
        )

        def apply(_: object) -> None:
            self.config = config
            self.accounts.users = config.users
            self.front.domains = config.domains
            log.info(
                "Reloaded {file}: {keys} access keys, {origins} CORS origins",
                file=config.config_file,
                keys=len(config.users.by_key),
                origins=len(config.cors.origins),
            )

        d.addCallback(apply)
        d.addErrback(lambda f: log.error("Reload failed: {why}", why=f.getErrorMessage()))
        return d

    def _on_sighup(self, signum: int, frame: Any) -> None:
        self.reactor.callFromThread(self.reload)

    def stopService(self) -> Deferred[Any]:
        """Stop listening, let the requests in flight finish (up to the grace), then stop."""
        service.Service.stopService(self)
        if self._starting is not None:
            self._starting.cancel()
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
        d: Deferred[Any] = DeferredList([maybeDeferred(c.stopService) for c in rest])
        d.addBoth(self._close_access_file)
        d.addBoth(self._release_spools)
        d.addBoth(self._close_store)
        return d

    def _close_store(self, result: object) -> object:
        """Close the embedded network's store once its pool has stopped (off the reactor).

        Closing waits for the files the store is still unlinking and settles them, so a
        stop leaves nothing for the next start to reclaim.  Over a node, the idle
        connections to it are closed instead.
        """
        if isinstance(self.network, HTTPNetwork):
            # The node sees its idle connections end, rather than the process go.
            return self.network.close().addBoth(lambda _: result)
        closing: Deferred[None] = deferToThreadPool(
            self.reactor, self.reactor.getThreadPool(), self.network.store.close
        )
        closing.addErrback(lambda f: log.failure("Could not close the store", f))
        return closing.addCallback(lambda _: result)

    def _close_access_file(self, result: object) -> object:
        if self.access_file is not None:
            self.access_file.close()
        return result

    def _release_spools(self, result: object) -> object:
        for served in self.accounts.serving():
            served.gateway.spool.release()
        return result

    def privilegedStartService(self) -> None:
        """Take SIGHUP and open the admin listener; the S3 listeners wait for the network.

        A reload sent once the S3 port answers is safe.
        """
        if self._reload_config is not None:
            signal.signal(signal.SIGHUP, self._on_sighup)
        service.Service.privilegedStartService(self)
        for child in self.early:
            child.privilegedStartService()

    def startService(self) -> None:
        """Start the thread pools and the admin listener, then reach the network and listen."""
        service.Service.startService(self)
        for child in self.early:
            child.startService()
        self.reactor.callWhenRunning(self._start)

    @inlineCallbacks
    def _open_main_account(self) -> Generator[Deferred[Any], Any, list[Order]]:
        """Create the account on first start, load and check its orders, open the others."""
        config = self.config
        orders: list[Order] = yield self.network.ensure_account(
            config.account, FIRST_ORDER_CAPACITY, FIRST_ORDER_DAYS
        )
        yield self.gateway.orders.refresh()
        if self.single and self.gateway.orders.known(self.single) is None:
            raise ConfigError(f"order {self.single} is not an order of account {config.account}")
        yield self._adopt_legacy(self.accounts.for_account(config.account))
        yield self._open_accounts([a for a in config.users.accounts if a != config.account])
        return orders

    @inlineCallbacks
    def _start(self) -> Any:
        config = self.config
        try:
            self._starting = wait_for_network(
                self._open_main_account,
                self.reactor,
                self.network_address,
                lambda: bool(self.running),
            )
            orders: list[Order] = yield self._starting
            if not self.running:
                return
            for child in list(self):
                if not child.running:
                    child.startService()
        except BaseException as e:
            if self.running:
                log.critical("Cannot start: {why}", why=str(e))
                configured = isinstance(e, ConfigError | NetworkError)
                self.exit_status = EXIT_CONFIG if configured else EXIT_FAILURE
                self.reactor.stop()
            return
        self._log_orders(config.account, orders)
        mode = f"s3gw (order {self.single})" if self.single else "lambgw (each order is a bucket)"
        log.info(
            "S3 API on {listen} in {mode} mode; access keys {access_keys}",
            listen=", ".join(listen_descriptions(config)),
            mode=mode,
            access_keys=", ".join(config.users.by_key),
        )
        if self.admin_listen:
            log.info("Metrics, health and status pages on {admin}", admin=self.admin_listen)
        if config.default_keys:
            log.warn(
                "No [gateway] access_key/secret_key in {file}: using the default keys; set "
                "your own before listening beyond loopback",
                file=config.config_file,
            )


def exit_with_status(gateway: GatewayService) -> None:
    """End the process with the gateway's exit status, if not 0 (twistd itself exits with 0)."""
    if gateway.exit_status:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(gateway.exit_status)


def make_service(options: GatewayOptions) -> service.IService:
    """Build the gateway service from parsed options (used by the twistd plugins).

    With ``--workers`` above 1 that is a supervisor of worker gateways; in a worker (started
    by one), a gateway serving the listeners it inherited.
    """
    from twisted.internet import defer, reactor

    if options.config.debug:
        defer.setDebugging(True)
    fix_mmap_threshold()
    supervised = workers_service(options, reactor, gateway_service)
    made = supervised if supervised is not None else gateway_service(options, reactor)
    lean_dispatch(reactor)
    tune_collector()
    return made


def gateway_service(
    options: GatewayOptions,
    reactor: Any,
    endpoint_for: Callable[[Any, str], IStreamServerEndpoint] = server_endpoint,
) -> GatewayService:
    """The gateway of the parsed ``options``, listening where ``endpoint_for`` says."""
    gateway = GatewayService(
        options.config,
        options.single_order,
        reactor,
        options["multipart.expiry"],
        options["access-log-format"],
        options["admin-listen"],
        options["shutdown-grace"],
        reload_config=lambda: load_for_mode(options, options.single_order),
        access_log_file=options["access-log"],
        endpoint_for=endpoint_for,
    )
    atexit.register(exit_with_status, gateway)
    return gateway
